"""CVMFS configuration files: the libcvmfs syntax, templates, overrides, $VAR."""

from __future__ import annotations

from pathlib import Path

import pytest

from shrinkwrap_async.config.parser import parse_config_files
from shrinkwrap_async.exitcodes import ConfigError, ExitCode

FQRN = "sft.cern.ch"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_syntax_quotes_comments_prefixes(tmp_path: Path) -> None:
    conf = write(
        tmp_path,
        "a.conf",
        "# a comment line\n"
        "\n"
        'CVMFS_SERVER_URL="http://s0.example.org/cvmfs/@fqrn@"   # trailing comment\n'
        "export CVMFS_HTTP_PROXY='DIRECT'\n"
        "readonly CVMFS_TIMEOUT = 10 \n"
        "eval CVMFS_MAX_RETRIES=3\n"
        'QUOTED_HASH="a#b"\n'
        'SHORT=""\n'
        "MISMATCHED=\"abc'\n"
        "EQUALS=a=b=c\n"
        "WITH SPACE=ignored\n"
        "no assignment here\n"
        "SITE_SPECIFIC_KEY=kept\n",
    )
    values = parse_config_files([conf], FQRN)
    assert values["CVMFS_SERVER_URL"] == "http://s0.example.org/cvmfs/sft.cern.ch"
    assert values["CVMFS_HTTP_PROXY"] == "DIRECT"
    assert values["CVMFS_TIMEOUT"] == "10"
    assert values["CVMFS_MAX_RETRIES"] == "3"
    # '#' starts a comment even inside quotes; the half-quoted value keeps its quote.
    assert values["QUOTED_HASH"] == '"a'
    assert values["SHORT"] == '""'  # quotes only stripped from values longer than 2
    assert values["MISMATCHED"] == "\"abc'"
    assert values["EQUALS"] == "a=b=c"
    assert "WITH SPACE" not in values and "WITH" not in values
    assert values["SITE_SPECIFIC_KEY"] == "kept"
    assert values.origin("CVMFS_TIMEOUT") == (conf, 5)
    assert values.origin("MISSING") is None


def test_later_files_win_and_origin_follows(tmp_path: Path) -> None:
    first = write(tmp_path, "default.conf", "CVMFS_TIMEOUT=5\nCVMFS_TIMEOUT_DIRECT=10\n")
    second = write(tmp_path, "site.local", "\n\nCVMFS_TIMEOUT=60\n")
    values = parse_config_files([first, second], FQRN)
    assert values["CVMFS_TIMEOUT"] == "60"
    assert values["CVMFS_TIMEOUT_DIRECT"] == "10"
    assert values.origin("CVMFS_TIMEOUT") == (second, 3)
    assert values.origin("CVMFS_TIMEOUT_DIRECT") == (first, 2)


def test_templates_fqrn_and_org(tmp_path: Path) -> None:
    conf = write(tmp_path, "t.conf", "A=/x/@fqrn@/@org@/@other@\n")
    assert parse_config_files([conf], "software.eessi.io")["A"] == (
        "/x/software.eessi.io/software/@other@"
    )


def test_variable_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SITE_SQUID", "squid.example.org:3128")
    monkeypatch.delenv("UNSET_VARIABLE_XYZ", raising=False)
    first = write(tmp_path, "a.conf", "CVMFS_SERVER_URL=http://a/cvmfs/@fqrn@\n")
    second = write(
        tmp_path,
        "b.conf",
        'CVMFS_SERVER_URL="$CVMFS_SERVER_URL;http://b/cvmfs/@fqrn@"\n'
        "CVMFS_HTTP_PROXY=${SITE_SQUID}\n"
        "EMPTY=x${UNSET_VARIABLE_XYZ}y\n"
        "LITERAL='$SITE_SQUID'\n"
        "ESCAPED=\\$SITE_SQUID\n",
    )
    values = parse_config_files([first, second], "cms.cern.ch")
    assert values["CVMFS_SERVER_URL"] == "http://a/cvmfs/cms.cern.ch;http://b/cvmfs/cms.cern.ch"
    assert values["CVMFS_HTTP_PROXY"] == "squid.example.org:3128"
    assert values["EMPTY"] == "xy"
    assert values["LITERAL"] == "$SITE_SQUID"
    assert values["ESCAPED"] == "$SITE_SQUID"


def test_missing_file_names_it(tmp_path: Path) -> None:
    present = write(tmp_path, "a.conf", "A=1\n")
    missing = tmp_path / "nope.local"
    with pytest.raises(ConfigError) as caught:
        parse_config_files([present, missing], FQRN)
    message = str(caught.value)
    assert str(missing) in message and "--src-config" in message
    assert "\n" not in message
    assert caught.value.exit_code == ExitCode.USAGE


def test_unreadable_file(tmp_path: Path) -> None:
    directory = tmp_path / "a_directory.conf"
    directory.mkdir()
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        parse_config_files([directory], FQRN)
