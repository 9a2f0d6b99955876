import sys

from shrinkwrap_async.cli import main

sys.exit(main())
