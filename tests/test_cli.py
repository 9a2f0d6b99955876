import subprocess
import sys

from shrinkwrap_async import __version__
from shrinkwrap_async.cli import main


def test_version_flag(capsys):
    try:
        main(["--version"])
    except SystemExit as exit:
        assert exit.code == 0
    assert __version__ in capsys.readouterr().out


def test_no_command_is_usage_error():
    assert main([]) == 2


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "shrinkwrap_async", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "shrinkwrap-async" in result.stdout
