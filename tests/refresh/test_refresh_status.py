"""``status``: the revision of each exported repository and how its last run ended."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from shrinkwrap_async.state.db import StateDB
from shrinkwrap_async.testing.command_line import run_cli_process
from shrinkwrap_async.testing.servers import StaticServer

from .test_refresh_incremental import FQRN, Repo, object_of


async def status(dest: Path, *more: str) -> tuple[int, str, str]:
    result = await run_cli_process("status", "-x", str(dest), *more)
    return result.exit_code, result.stdout.decode(), result.stderr


async def test_status_through_a_good_run_a_partial_one_and_a_killed_one(tmp_path: Path) -> None:
    repo = Repo(tmp_path)
    published = repo.publish()
    dest = tmp_path / "dest"

    code, out, err = await status(dest)
    assert code == 2 and "nothing was exported" in err and len(err.splitlines()) == 1

    async with StaticServer(repo.base / "server") as server:
        await repo.export(server, "dest", "cache", spec="/*\n!/data\n")
    code, out, _ = await status(dest, "--json")
    assert code == 0, out
    (found,) = map(json.loads, out.splitlines())
    assert found["fqrn"] == FQRN and found["state"] == "ok"
    assert found["revision"] == published.revision
    assert found["root_hash"] == published.root_hash.hex
    assert found["spec"] == ["/*", "!/data"]
    run = found["last_run"]
    assert run["status"] == "succeeded" and run["exit_code"] == 0 and run["failures"] == 0
    tree = dest / FQRN
    regular = [p for p in tree.rglob("*") if p.is_file() and not p.is_symlink()]
    assert run["files"] == len(regular) - 1  # not the marker file
    assert run["pid"] > 0 and run["bytes"] > 0
    code, text, _ = await status(dest)
    assert text.startswith(f"{FQRN}: revision {published.revision} ")
    assert "last run: succeeded" in text and "spec: /*, !/data (2 lines)" in text

    # One object the server no longer has: the next run is partial.
    content = object_of(dest, "README.txt")
    stored = repo.base / "server" / "cvmfs" / FQRN / "data" / content[:2] / content[2:]
    stored.rename(stored.with_name(stored.name + ".away"))
    (dest / FQRN / "README.txt").unlink()
    for path in (dest / ".data").rglob(content[4:] + ".*"):
        path.unlink()
    async with StaticServer(repo.base / "server") as server:
        partial = await repo.export(server, "dest", "cache")  # the spec widened: a new run
    assert len(partial.failures) == 1
    code, text, _ = await status(dest, "-r", FQRN)
    assert code == 1, text
    assert "last run: partial" in text and "1 object(s) failed" in text
    assert "    failed: " in text
    assert f"revision {published.revision} " in text  # the tree is still the last good one

    # A run whose process is gone (killed) and one going now, as the state records them.
    gone = subprocess.Popen(["true"])
    gone.wait()
    db = await StateDB.for_destination(dest)
    try:
        await db.begin_export(FQRN, root_hash="ab" * 20, revision=99, spec_digest="x")
        await db._db.execute("UPDATE runs SET pid = ? WHERE status = 'running'", (gone.pid,))
        await db.flush()
        code, text, _ = await status(dest)
        assert code == 1 and "interrupted" in text and "the next run resumes it" in text
        await db._db.execute("UPDATE runs SET pid = ? WHERE status = 'running'", (os.getpid(),))
        await db.flush()
        code, text, _ = await status(dest)
        assert code == 0 and "running since" in text and "towards revision 99" in text
        await db._db.execute("UPDATE runs SET host = 'elsewhere' WHERE status = 'running'")
        await db.flush()
        code, text, _ = await status(dest, "--json")
        assert code == 0 and json.loads(text)["state"] == "running-elsewhere"
    finally:
        await db.close()

    code, _, err = await status(dest, "-r", "other.test.local")
    assert code == 2 and "other.test.local was never exported" in err


async def test_status_of_an_export_made_by_cvmfs_shrinkwrap(tmp_path: Path) -> None:
    """Its provenance, no state database: known to be there, nothing known of its runs."""
    dest = tmp_path / "dest"
    for name in ("a.test.local", "b.test.local"):
        (dest / ".provenance" / name).mkdir(parents=True)
        (dest / ".provenance" / name / "src.info").write_text(f"repo={name}\n")
    code, text, _ = await status(dest)
    assert code == 0, text
    assert [line.split(":")[0] for line in text.splitlines()] == ["a.test.local", "b.test.local"]
    assert "exported without run records" in text
    code, out, _ = await status(dest, "-r", "b.test.local", "--json")
    assert code == 0 and json.loads(out)["state"] == "unrecorded"
    code, _, err = await status(dest, "-r", "c.test.local")
    assert code == 2 and "nothing was exported" in err
