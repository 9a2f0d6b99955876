import subprocess
import sys

import pytest

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


def test_storage_failure_escaping_a_command_is_one_line(monkeypatch, capsys):
    import errno

    from shrinkwrap_async import cli

    def failing_command(args):
        raise BaseExceptionGroup("run", [OSError(errno.ENOSPC, "No space left on device")])

    parser = cli.build_parser()
    real_parse = parser.parse_args

    def parse_args(argv=None):
        args = real_parse(["gc", "-x", "/nonexistent"])
        args.run = failing_command
        return args

    monkeypatch.setattr(parser, "parse_args", parse_args)
    monkeypatch.setattr(cli, "build_parser", lambda argv=None: parser)
    assert cli.main(["gc"]) == 5
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left" in err[0]


def test_only_the_chosen_command_is_imported():
    code = (
        "import sys\n"
        "from shrinkwrap_async import cli\n"
        "parser = cli.build_parser(['gc', '-x', '/nonexistent'])\n"
        "print(sorted(m for m in sys.modules if m.startswith('shrinkwrap_async.commands.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['shrinkwrap_async.commands.gc']"


def test_chosen_command():
    from shrinkwrap_async.cli import COMMANDS, build_parser, chosen_command

    assert chosen_command(["export", "-r", "x"]) == "export"
    assert chosen_command(["--version"]) is None
    assert chosen_command(["nonsense", "export"]) is None
    assert chosen_command(None) is None
    subparsers = build_parser([])._subparsers._group_actions[0]  # type: ignore[union-attr]
    assert set(subparsers.choices) == set(COMMANDS)


@pytest.mark.parametrize("command", ["export", "pack"])
@pytest.mark.parametrize("jobs", ["-3", "many"])
def test_requests_in_flight_must_be_a_count(command, jobs, capsys):
    argv = [command, "-r", "x", "-f", "c.conf", "-t", "s.spec", "-j", jobs]
    with pytest.raises(SystemExit) as stopped:
        main([*argv, *(["-x", "d"] if command == "export" else ["-o", "o.tar"])])
    assert stopped.value.code == 2
    assert "expected a number of requests, 0 or more" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "-f", "c.conf", "-t", "s.spec", "-x", "d"],
        ["pack", "-x", "d", "-o", "o.tar"],
        ["verify", "-x", "d"],
        ["spec", "check", "s.spec", "-f", "c.conf"],
    ],
)
@pytest.mark.parametrize("name", ["../../etc", "..", "a/b", ""])
def test_repository_names_that_could_leave_the_destination_are_refused(argv, name, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "-r", name])
    assert stopped.value.code == 2
    assert "is not a repository name" in capsys.readouterr().err


def test_real_repository_names_are_accepted():
    from shrinkwrap_async.cli import repository_name

    for name in ("sft.cern.ch", "software.eessi.io", "fix1.test.local", "my_repo-2.example.org"):
        assert repository_name(name) == name
