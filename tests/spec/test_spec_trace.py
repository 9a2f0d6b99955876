"""Specs from traces: tracer CSV, Parrot name lists, path lists, policies, the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from spec_testlib import walk

from shrinkwrap_async.cli import main
from shrinkwrap_async.exitcodes import ExitCode, SpecError, UsageError
from shrinkwrap_async.spec.merge import format_rules, minimize
from shrinkwrap_async.spec.trace import (
    Access,
    Policy,
    load_listing,
    read_traces,
    rules_from_events,
)
from shrinkwrap_async.spec.tree import Spec

FIX1_LISTING = "expected/fix1.test.local/all_A.json"
FQRN = "fix1.test.local"


def tracer_line(stamp: str, code: int, path: str, event: str) -> str:
    quoted = [f'"{field.replace(chr(34), chr(34) * 2)}"' for field in (stamp, str(code), path)]
    return ",".join([*quoted, f'"{event}"']) + "\r\n"


TRACER_LOG = "".join(
    [
        tracer_line("1700000000123.456", -1, "Tracer", "Trace buffer created"),
        tracer_line("1700000000124.001", 4, "/bin", "lookup()"),
        tracer_line("1700000000124.500", 6, "", "getattr()"),
        tracer_line("1700000000125.000", 1, "/bin/run.sh", "open()"),
        tracer_line("1700000000125.100", 3, "/links/rel", "readlink()"),
        tracer_line("1700000000126.000", 2, "/sw/v1", "opendir()"),
        tracer_line("1700000000127.000", 6, "@UNKNOWN", "getattr()"),
        tracer_line("1700000000127.500", 4, "/no/such/file", "lookup()"),
        tracer_line("1700000000128.000", 1, "/weird/semi;colon&amp'quote\".txt", "open()"),
        tracer_line("1700000000128.200", 1, "/deep/d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/f", "open()"),
        tracer_line("1700000000128.300", 8, "/xattr/file_with_xattr", "getxattr()"),
        tracer_line("1700000000129.000", 1, "/.Trash/x", "open()"),
        tracer_line("1700000000130.000", -3, "Tracer", "flushed ring buffer"),
        tracer_line("1700000000131.000", -2, "Tracer", "Destroying trace buffer..."),
    ]
)

PARROT_LIST = "\n".join(
    [
        "/lib64/ld-linux-x86-64.so.2",
        "/bin/sh",
        f"/cvmfs/{FQRN}/README.txt|fullcopy",
        f"/cvmfs/{FQRN}/etc|metadatacopy",
        f"/cvmfs/{FQRN}/etc/conf.ini|fullcopy",
        f"/cvmfs/{FQRN}|metadatacopy",
        "/etc/passwd|fullcopy",
        f"/cvmfs/{FQRN}/hard/a|metadatacopy",
        "",
    ]
)


@pytest.fixture
def listing(fixtures_dir: Path) -> dict[str, bool]:
    return load_listing(fixtures_dir / FIX1_LISTING)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def test_tracer_log_is_read_with_codes_quotes_and_skips(tmp_path: Path) -> None:
    read = read_traces([write(tmp_path, "job.trace", TRACER_LOG)])
    paths = {(e.path, e.access) for e in read.events}
    assert ("/bin/run.sh", Access.OPEN) in paths
    assert ("/sw/v1", Access.OPENDIR) in paths
    assert ("", Access.META) in paths
    assert ("/weird/semi;colon&amp'quote\".txt", Access.OPEN) in paths
    assert read.skipped == {
        "internal events": 3,
        "unknown paths (@UNKNOWN)": 1,
        "trash directories": 1,
    }


def test_tracer_log_errors_name_the_line(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.trace", TRACER_LOG + '"1","1","/x"\r\n')
    with pytest.raises(SpecError, match=r"bad\.trace:15: not a tracer record"):
        read_traces([bad])


def test_parrot_name_list(tmp_path: Path) -> None:
    read = read_traces([write(tmp_path, "names.txt", PARROT_LIST)])
    assert read.repository == FQRN
    assert {(e.path, e.access) for e in read.events} == {
        ("/README.txt", Access.OPEN),
        ("/etc", Access.META),
        ("/etc/conf.ini", Access.OPEN),
        ("", Access.META),
        ("/hard/a", Access.META),
    }
    assert read.skipped == {"paths outside /cvmfs": 3}


def test_plain_lists_and_repository_prefixes(tmp_path: Path) -> None:
    one = write(tmp_path, "a.txt", f"# files\n/cvmfs/{FQRN}/bin/tool\n/cvmfs/other.org/x\n")
    with pytest.raises(UsageError, match="several repositories"):
        read_traces([one])
    read = read_traces([one], repository=FQRN)
    assert [e.path for e in read.events] == ["/bin/tool"]
    assert read.skipped == {"paths of other repositories": 1}
    relative = write(tmp_path, "b.txt", "/bin/tool\r\n/README.txt\r\n")
    assert [e.path for e in read_traces([relative]).events] == ["/bin/tool", "/README.txt"]
    marked = write(tmp_path, "c.txt", "\ufeff/bin/tool\n")  # a byte order mark first
    assert [e.path for e in read_traces([marked]).events] == ["/bin/tool"]


def test_policies(tmp_path: Path, listing: dict[str, bool]) -> None:
    events = read_traces([write(tmp_path, "job.trace", TRACER_LOG)]).events
    pdir, notes = rules_from_events(events, Policy.PDIR)
    assert notes == []
    pdir_text = format_rules(minimize(pdir))
    assert "^/bin/*\n" in pdir_text and "^/sw/v1/*\n" in pdir_text
    assert "/links/rel\n" in pdir_text and "^/deep/d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/*\n" in pdir_text
    exact_text = format_rules(minimize(rules_from_events(events, Policy.EXACT)[0]))
    assert "/bin/run.sh\n" in exact_text and "^/bin/*" not in exact_text
    assert "^/sw/v1/*\n" in exact_text
    # widen without a listing: pdir, said so
    widened, notes = rules_from_events(events, Policy.WIDEN)
    assert minimize(widened) == minimize(pdir)
    assert notes and "using 'pdir'" in notes[0]
    # with a listing: paths not in the repository dropped, busy directories widened
    widened, notes = rules_from_events(events, Policy.WIDEN, listing=listing, widen_share=0.2)
    text = format_rules(minimize(widened))
    assert "/no/such/file" not in text
    assert any("not in the listing" in n for n in notes)
    assert "/bin/*\n" in text  # 1 of 4 entries of /bin touched: 0.25 > 0.2
    assert "/sw/v1/*" not in text or "/sw/*" in text


@pytest.mark.parametrize("policy", list(Policy))
def test_spec_from_trace_selects_every_traced_file(
    tmp_path: Path, listing: dict[str, bool], policy: Policy
) -> None:
    events = read_traces(
        [write(tmp_path, "job.trace", TRACER_LOG), write(tmp_path, "n.txt", PARROT_LIST)]
    ).events
    rules, _ = rules_from_events(events, policy, listing=listing)
    spec = Spec.parse(format_rules(minimize(rules)))
    selected = walk(spec, listing)
    traced = {e.path for e in events if e.path in listing}
    assert traced and traced <= selected
    if policy is not Policy.EXACT:
        # pdir and widen take the siblings of an opened file
        assert "/bin/tool" in selected


def test_cli_from_trace_and_merge(tmp_path: Path, fixtures_dir: Path, capsys) -> None:
    trace = write(tmp_path, "job.trace", TRACER_LOG)
    names = write(tmp_path, "names.txt", PARROT_LIST)
    out = tmp_path / "job.spec"
    code = main(["spec", "from-trace", str(trace), str(names), "-o", str(out)])
    assert code == ExitCode.OK
    text = out.read_text()
    lines = text.splitlines()
    assert lines == sorted(lines, key=lambda line: line.startswith("!"))
    assert format_rules(minimize(Spec.parse(text).rules)) == text
    err = capsys.readouterr().err
    assert "3 internal events" in err and "1 unknown paths" in err

    assert main(["spec", "from-trace", str(trace)]) == ExitCode.OK
    pdir_out = capsys.readouterr().out
    code = main(["spec", "from-trace", str(trace), "--policy", "widen"])
    captured = capsys.readouterr()
    assert code == ExitCode.OK and "using 'pdir'" in captured.err
    assert captured.out == pdir_out

    code = main(["spec", "from-trace", str(trace), "--policy", "widen", "--listing",
                 str(fixtures_dir / FIX1_LISTING), "--widen-share", "0.2"])  # fmt: skip
    assert code == ExitCode.OK and "/bin/*\n" in capsys.readouterr().out

    other = write(tmp_path, "other.spec", "/*\n!/sw\n")
    merged = tmp_path / "merged.spec"
    assert main(["spec", "merge", str(out), str(other), "-o", str(merged)]) == ExitCode.OK
    merged_spec = Spec.load(merged)
    tree = load_listing(fixtures_dir / FIX1_LISTING)
    assert walk(Spec.load(out), tree) | walk(Spec.load(other), tree) <= walk(merged_spec, tree)
    assert "dropped" in capsys.readouterr().err  # /sw is opened by the trace


def test_cli_errors(tmp_path: Path, capsys) -> None:
    empty = write(tmp_path, "empty.trace", tracer_line("1.0", -1, "Tracer", "x"))
    assert main(["spec", "from-trace", str(empty)]) == ExitCode.USAGE
    bad = write(tmp_path, "bad.spec", "/a\noops\n")
    assert main(["spec", "merge", str(bad)]) == ExitCode.USAGE
    assert "bad.spec:2:" in capsys.readouterr().err
    assert main(["spec", "from-trace", str(tmp_path / "missing")]) == ExitCode.USAGE


def test_cli_check_without_pipeline_or_with_it(tmp_path: Path, capsys) -> None:
    import importlib.util

    spec = write(tmp_path, "s.spec", "/*\n")
    code = main(["spec", "check", str(spec), "-r", FQRN])
    if importlib.util.find_spec("shrinkwrap_async.pipeline.plan") is None:
        assert code == ExitCode.USAGE
        assert "spec check needs the export pipeline" in capsys.readouterr().err
    else:
        assert isinstance(code, int)


def test_listing_is_read(fixtures_dir: Path) -> None:
    tree = load_listing(fixtures_dir / FIX1_LISTING)
    assert tree[""] is True and tree["/bin"] is True and tree["/bin/run.sh"] is False
    assert "/DO_NOT_MODIFY_THIS_IS_AN_AUTOGENERATED_DIRECTORY" not in tree
    with pytest.raises(UsageError):
        load_listing(fixtures_dir / "README.md")
    json.dumps(tree)
