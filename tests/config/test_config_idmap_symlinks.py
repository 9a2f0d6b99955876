"""uid/gid maps and variant symlink expansion (the fixture README's table)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shrinkwrap_async.config.idmap import IdMap
from shrinkwrap_async.config.settings import ClientSettings
from shrinkwrap_async.config.variant_symlinks import expand_variant_symlink
from shrinkwrap_async.exitcodes import ConfigError


def test_id_map_rules_default_and_passthrough() -> None:
    with_default = IdMap.parse("# owners\n\n1000 500\n  0   0 \n* 65534\n", "m")
    assert with_default.map(1000) == 500
    assert with_default.map(0) == 0
    assert with_default.map(42) == 65534
    without_default = IdMap.parse("1000 500\n")
    assert without_default.map(42) == 42
    assert IdMap().map(7) == 7 and not IdMap()


MALFORMED = ["1000", "a 1", "1 b", "1 2 3", "* x", "-1 0", "1 99999999999"]
MALFORMED += ["1 \u00b2", "1 " + "9" * 5000]  # str.isdigit says yes, int says no


@pytest.mark.parametrize("line", MALFORMED, ids=lambda line: line[:16])
def test_id_map_malformed_line_invalidates(line: str) -> None:
    with pytest.raises(ConfigError, match=r"^m:2: bad id map line"):
        IdMap.parse(f"* 0\n{line}\n", "m")


def test_id_map_load(tmp_path: Path) -> None:
    path = tmp_path / "uid.map"
    path.write_text("* 0\n")
    assert IdMap.load(path).map(1234) == 0
    with pytest.raises(ConfigError, match="cannot read id map"):
        IdMap.load(tmp_path / "absent.map")
    path.write_text("\ufeff1000 7\r\n* 0\r\n")  # a Windows editor's file
    assert IdMap.load(path).map(1000) == 7


# The fixture README's table: what the real cvmfs_shrinkwrap made of each variant symlink,
# with a clean environment and the config exported into it.
FIXTURE_CASES = [
    ("/opt/$(SOME_VAR)/lib", "/opt//lib"),
    ("$(CVMFS_ARCH:-x86_64)/lib", "x86_64/lib"),
    ("$(CVMFS_REPOSITORY_NAME:-unset)/lib", "fix1.test.local/lib"),
    ("/cvmfs/@fqrn@/bin", "/cvmfs/@fqrn@/bin"),
    ("../README.txt", "../README.txt"),
]


@pytest.mark.parametrize(("raw", "expected"), FIXTURE_CASES)
def test_fixture_variant_symlinks(raw: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SOME_VAR", "CVMFS_ARCH", "CVMFS_REPOSITORY_NAME"):
        monkeypatch.delenv(name, raising=False)
    settings = ClientSettings.for_repository("fix1.test.local", "http://127.0.0.1:1/cvmfs/x", [])
    assert expand_variant_symlink(raw, settings.symlink_environment()) == expected


@pytest.mark.parametrize(
    ("raw", "env", "expected"),
    [
        ("$(A)", {"A": "x"}, "x"),
        ("$(A:-d)", {"A": ""}, ""),  # set but empty wins over the default
        ("$(A:-d)", {}, "d"),
        ("$(A:-)", {}, ""),
        ("$(A:-a:-b)", {}, "a:-b"),
        ("pre$(A)mid$(B:-y)post", {"A": "1"}, "pre1midypost"),
        ("/a/$(abc", {}, "/a/$(abc"),  # unterminated: kept literally
        ("$($(X)", {"X": "v"}, ""),  # the name runs to the first ")": "$(X" is unset
        ("$(a$(b", {}, "$(a$(b"),  # unterminated twice
        ("x$(", {}, "x$("),  # too close to the end
        ("x$(a", {"a": "v"}, "x$(a"),
        ("$()", {}, ""),
        ("$A/$", {"A": "v"}, "$A/$"),  # only $( ... ) forms
    ],
)
def test_expansion_rules(raw: str, env: dict[str, str], expected: str) -> None:
    assert expand_variant_symlink(raw, env) == expected
