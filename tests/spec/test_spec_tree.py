"""Spec syntax and selection: each form, errors, CRLF, globs, order, warnings, digest."""

from __future__ import annotations

import io
import sys

import pytest
from spec_testlib import selected_by, tree_from, walk

from shrinkwrap_async.exitcodes import ExitCode, SpecError
from shrinkwrap_async.spec.tree import RuleKind, Selection, Spec

TREE = tree_from(
    {
        "/a/b/c/f": False,
        "/a/b/c/g": False,
        "/a/b/d": False,
        "/a/b/e/h": False,
        "/a/x/y": False,
        "/a/top": False,
        "/z/file": False,
        "/empty": True,
        "/readme": False,
    }
)


def test_recursive_rule_takes_the_subtree_and_ancestors() -> None:
    assert selected_by("/a/b/*\n", TREE) == {
        "",
        "/a",
        "/a/b",
        "/a/b/c",
        "/a/b/c/f",
        "/a/b/c/g",
        "/a/b/d",
        "/a/b/e",
        "/a/b/e/h",
    }


def test_trailing_star_without_slash_is_recursive_not_a_prefix_glob() -> None:
    assert selected_by("/a/b*\n", TREE) == selected_by("/a/b/*\n", TREE)
    # /a/b* does not take /a/bz
    tree = tree_from({"/a/b/f": False, "/a/bz/f": False})
    assert "/a/bz" not in selected_by("/a/b*", tree)


def test_exact_rule_takes_the_entry_alone() -> None:
    assert selected_by("/a/b/d\n", TREE) == {"", "/a", "/a/b", "/a/b/d"}
    # a directory named without /* is created empty
    assert selected_by("/a/b\n", TREE) == {"", "/a", "/a/b"}
    assert Spec.parse("/a/b").select("/a/b", is_directory=True) == Selection(True, False)


def test_flat_rule_takes_direct_children_and_leaves_child_dirs_empty() -> None:
    assert selected_by("^/a/b/*\n", TREE) == {"", "/a", "/a/b", "/a/b/c", "/a/b/d", "/a/b/e"}
    spec = Spec.parse("^/a/b/*")
    assert spec.select("/a/b/c", is_directory=True) == Selection(True, False)
    assert spec.select("/a/b/c/f", is_directory=False) == Selection(False, False)


def test_caret_without_star_is_exact() -> None:
    assert selected_by("^/a/b\n", TREE) == selected_by("/a/b\n", TREE)
    assert Spec.parse("^/a/b").rules[0].kind is RuleKind.EXACT


def test_whole_repository() -> None:
    assert selected_by("/*\n", TREE) == set(TREE)
    assert selected_by("", TREE) == {""}
    everything = Spec.everything()
    assert everything.is_everything
    assert everything.digest() == Spec.parse("/*").digest()
    assert selected_by("^/*", TREE) == {"", "/a", "/z", "/empty", "/readme"}


def test_exclusion_removes_the_subtree() -> None:
    assert selected_by("/a/*\n!/a/b\n", TREE) == {"", "/a", "/a/x", "/a/x/y", "/a/top"}
    assert selected_by("/*\n!/a/b/c/*\n", TREE) == set(TREE) - {"/a/b/c", "/a/b/c/f", "/a/b/c/g"}
    assert selected_by("!/a\n", TREE) == {""}


def test_exclusion_wins_over_deeper_positive_rules_in_any_order() -> None:
    # as the real parser: an exclusion is never reopened below
    expected = {"", "/a", "/a/x", "/a/x/y", "/a/top"}
    assert selected_by("/a/*\n!/a/b\n/a/b/c/*\n", TREE) == expected
    assert selected_by("/a/b/c/*\n/a/*\n!/a/b\n", TREE) == expected
    spec = Spec.parse("/a/*\n!/a/b\n/a/b/c\n")
    assert any("has no effect" in w and "'!/a/b'" in w for w in spec.warnings())


def test_exclusion_before_inclusion_does_not_hang_or_lose_it() -> None:
    # upstream loops forever on the first and drops /a/b/c on the second
    assert selected_by("!/a/x\n/a/b\n", TREE) == {"", "/a", "/a/b"}
    assert selected_by("!/a/x\n/a/b/c\n", TREE) == {"", "/a", "/a/b", "/a/b/c"}
    assert selected_by("!/a/x\n/a/b/*\n", TREE) == selected_by("/a/b/*\n!/a/x\n", TREE)


def test_widest_rule_wins_whatever_the_order() -> None:
    assert selected_by("/a/b/*\n/a/b\n", TREE) == selected_by("/a/b/*\n", TREE)
    assert selected_by("/a/b\n^/a/b/*\n", TREE) == selected_by("^/a/b/*\n", TREE)


def test_exclusion_ancestors_do_not_hide_flat_children() -> None:
    assert selected_by("^/a/*\n!/a/b/c\n", TREE) == {"", "/a", "/a/b", "/a/x", "/a/top"}


def test_pass_through_and_flat_combined() -> None:
    # a flat directory whose child is descended because a rule names something below it
    assert selected_by("^/a/*\n/a/b/c/f\n", TREE) == {
        "",
        "/a",
        "/a/b",
        "/a/x",
        "/a/top",
        "/a/b/c",
        "/a/b/c/f",
    }


def test_comments_blank_lines_whitespace_and_crlf() -> None:
    text = "# a comment\r\n\r\n  /a/b/d  \r\n\t^/z/*\t\r\n"
    assert selected_by(text, TREE) == {"", "/a", "/a/b", "/a/b/d", "/z", "/z/file"}
    assert Spec.parse(text).digest() == Spec.parse("^/z/*\n/a/b/d").digest()


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("/a\nrelative/path\n", 2),
        ("# c\n\n/a\n!relative\n", 4),
        ("^a/b\n", 1),
        ("/a/../b\n", 1),
        ("/a\n/b\n*\n", 3),
    ],
)
def test_errors_name_file_and_line(text: str, line: int) -> None:
    with pytest.raises(SpecError) as caught:
        Spec.parse(text, source="job.spec")
    assert str(caught.value).startswith(f"job.spec:{line}: ")
    assert caught.value.exit_code == ExitCode.USAGE


def test_load_file_stdin_and_missing(tmp_path, monkeypatch) -> None:
    path = tmp_path / "x.spec"
    path.write_bytes(b"/a/b/*\r\nbad\r\n")
    with pytest.raises(SpecError, match=r"x\.spec:2: "):
        Spec.load(path)
    with pytest.raises(SpecError, match="not found"):
        Spec.load(tmp_path / "missing.spec")
    monkeypatch.setattr(sys, "stdin", io.StringIO("/z/*\n"))
    assert Spec.load("-").rules[0].text == "/z/*"


def test_glob_components() -> None:
    tree = tree_from(
        {
            "/lcg/releases/gcc-7/x86_64/bin/gcc": False,
            "/lcg/releases/gcc-8/x86_64/bin/gcc": False,
            "/lcg/releases/gcc-8/aarch64/bin/gcc": False,
            "/lcg/releases/clang-9/x86_64/bin/clang": False,
            "/lcg/releases/file[1].txt": False,
        }
    )
    selected = selected_by("/lcg/releases/gcc-*/x86_64/*\n", tree)
    assert "/lcg/releases/gcc-7/x86_64/bin/gcc" in selected
    assert "/lcg/releases/gcc-8/x86_64/bin/gcc" in selected
    assert "/lcg/releases/gcc-8/aarch64" not in selected
    assert not any(p.startswith("/lcg/releases/clang") for p in selected)
    # a glob exclusion, and a literal name with brackets still matches itself
    selected = selected_by("/lcg/*\n!/lcg/releases/gcc-?\n", tree)
    assert not any("gcc" in p for p in selected)
    assert "/lcg/releases/file[1].txt" in selected_by("/lcg/releases/file[1].txt", tree)


def test_warnings_for_unmatched_lines_and_directories_without_star() -> None:
    spec = Spec.parse("/a/b\n/nothing/here\n/readme\n!/a/zzz\n", source="s.spec")
    walk(spec, TREE)
    warnings = spec.warnings()
    assert any(w.startswith("s.spec:2: '/nothing/here' matched nothing") for w in warnings)
    assert any(w.startswith("s.spec:1: '/a/b' names a directory") for w in warnings)
    assert any(w.startswith("s.spec:4: '!/a/zzz' matched nothing") for w in warnings)
    assert not any(w.startswith("s.spec:3:") for w in warnings)
    assert len(warnings) == 3


def test_no_directory_warning_when_rules_name_children() -> None:
    spec = Spec.parse("/a/b\n/a/b/d\n")
    walk(spec, TREE)
    assert spec.warnings() == []


def test_digest_ignores_order_comments_and_spelling() -> None:
    a = Spec.parse("/a/b*\n^/z\n!/a/b/c/*\n")
    b = Spec.parse("# x\n!/a/b/c\n/z\n/a/b/*\n")
    assert a.digest() == b.digest()
    assert a.digest() != Spec.parse("/a/b/*\n").digest()


def test_select_accepts_unvisited_paths_and_caches_correctly() -> None:
    spec = Spec.parse("/a/b/*\n!/a/b/c\n^/z/*\n")
    # called out of walk order, and repeatedly
    for _ in range(2):
        assert spec.select("/a/b/e/h", is_directory=False).include
        assert not spec.select("/a/b/c/f", is_directory=False).include
        assert not spec.select("/a/x/y", is_directory=False).include
        assert spec.select("/z/file", is_directory=False).include
        assert spec.select("/a", is_directory=True) == Selection(True, True)
        assert spec.select("/a/b/c", is_directory=True) == Selection(False, False)


@pytest.mark.parametrize("text", ["", "# only a comment\n\n", "!/a\n!/b/*\n"])
def test_a_spec_that_selects_nothing_is_refused(text: str) -> None:
    with pytest.raises(SpecError, match="selects nothing"):
        Spec.parse(text, source="job.spec").require_selection()


def test_a_spec_with_an_inclusion_is_accepted() -> None:
    spec = Spec.parse("!/a/b\n/a/*\n")
    assert spec.require_selection() is spec


def test_windows_line_ends_blanks_and_a_byte_order_mark_are_not_part_of_rules() -> None:
    plain = Spec.parse("/sw/*\n/lib\n")
    for text in ("/sw/*\r\n/lib\r\n", "\ufeff/sw/*\n/lib\n", "  /sw/* \t\n/lib \n"):
        spec = Spec.parse(text)
        assert spec.to_text() == plain.to_text()
        assert spec.select("/sw/a", is_directory=False) == Selection(True, False)
