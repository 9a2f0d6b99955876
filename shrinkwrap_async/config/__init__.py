"""Client configuration: CVMFS KEY=VALUE files, server and proxy lists, id maps."""
