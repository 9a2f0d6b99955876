"""``verify``: a corrupt object and a deleted tree file are reported; ``--repair`` fixes both."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from shrinkwrap_async.state.verify import verify_destination
from shrinkwrap_async.testing.command_line import run_cli_process
from shrinkwrap_async.testing.servers import StaticServer

from .test_refresh_incremental import FQRN, Repo, object_of, tree_problems
from .test_refresh_signals import write_config


async def cli_output(*argv: str) -> tuple[int, str]:
    """Exit code and output (stdout, then stderr) of the command in a child process."""
    result = await run_cli_process(*argv)
    return result.exit_code, result.stdout.decode() + result.stderr


async def test_verify_reports_and_repairs(tmp_path: Path) -> None:
    repo = Repo(tmp_path)
    repo.publish()
    dest = tmp_path / "dest"
    async with StaticServer(repo.base / "server") as server:
        config = write_config(repo, server)
        await repo.export(server, "dest", "cache")
        await repo.export(server, "fresh", "fresh-cache")
        clean = await verify_destination(repo.settings(server, "cache"), dest)
        assert clean.ok, [p.line() for p in clean.problems]
        assert clean.objects_checked > 50
        in_tree = sum(len(dirs) + len(files) for _, dirs, files in os.walk(dest / FQRN))
        assert clean.entries_checked == in_tree - 1  # every entry but the marker file

        # Corrupt one object (same size, other bytes) and one chunked file; delete a file.
        readme = object_of(dest, "README.txt")
        victim = next((dest / ".data" / readme[:2] / readme[2:4]).glob(readme[4:] + ".*"))
        data = bytearray(victim.read_bytes())
        data[0] ^= 0xFF
        os.chmod(victim, 0o644)
        victim.write_bytes(bytes(data))
        (dest / FQRN / "bin" / "tool").unlink()

        code, out = await cli_output("verify", "-x", str(dest), "-r", FQRN, "-f", str(config))
        assert code == 1, out
        assert "object-corrupt" in out and victim.name in out
        assert "missing: /bin/tool" in out

        server.requests.clear()
        code, out = await cli_output(
            "verify", "-x", str(dest), "-r", FQRN, "-f", str(config), "--repair"
        )
        assert code == 0, out
        data_requests = [p for p in server.requests if "/data/" in p and not p.endswith("C")]
        assert len(data_requests) <= 2  # the corrupt object (and the compare download)
    assert tree_problems(tmp_path / "fresh", dest) == []
    assert (dest / FQRN / "README.txt").read_text() == "A test repository.\n"


def store_path(dest: Path, relative: str) -> Path:
    """The ``.data`` object a tree file is linked to (one tree path uses it)."""
    name = object_of(dest, relative)
    (found,) = (dest / ".data" / name[:2] / name[2:4]).glob(name[4:] + ".*")
    assert found.stat().st_nlink == 2, relative
    return found


async def test_verify_names_each_kind_of_damage_and_repair_undoes_it(tmp_path: Path) -> None:
    repo = Repo(tmp_path)
    repo.publish()
    dest = tmp_path / "dest"
    tree = dest / FQRN
    async with StaticServer(repo.base / "server") as server:
        config = write_config(repo, server)
        await repo.export(server, "dest", "cache")
        await repo.export(server, "fresh", "fresh-cache")

        os.chmod(tree / "etc", 0o700)
        shutil.rmtree(tree / "xdir" / "two")
        (tree / "xdir" / "two").write_text("a file where a directory was\n")
        (tree / "links" / "rel").unlink()
        (tree / "links" / "rel").symlink_to("elsewhere")
        (tree / "links" / "abs").unlink()
        (tree / "links" / "abs").write_text("a file where a symlink was\n")
        (tree / "special" / "fifo").unlink()
        (tree / "special" / "fifo").write_text("a file where a FIFO was\n")
        (tree / "etc" / "conf.ini").unlink()
        (tree / "etc" / "conf.ini").mkdir()
        copied = tree / "data" / "set1" / "file0006.txt"
        content = copied.read_bytes()
        copied.unlink()
        copied.write_bytes(content)  # same bytes, not the object's inode
        truncated = store_path(dest, "data/set1/file0011.txt")
        os.truncate(truncated, 3)
        unlinked = store_path(dest, "data/set1/file0016.txt")
        unlinked.unlink()
        (tree / "data" / "set1" / "file0021.txt").unlink()
        (tree / "data" / "stray.txt").write_text("not in the repository\n")

        code, out = await cli_output(
            "verify", "-x", str(dest), "-r", FQRN, "-f", str(config), "--json"
        )
        assert code == 1, out
        found = {
            (p["kind"], p["path"] or p["object"].split("/")[-1])
            for p in map(json.loads, out.splitlines())
            if p
        }
        assert found == {
            ("wrong-mode", "/etc"),
            ("wrong-type", "/xdir/two"),
            ("wrong-target", "/links/rel"),
            ("wrong-type", "/links/abs"),
            ("wrong-type", "/special/fifo"),
            ("wrong-type", "/etc/conf.ini"),
            ("wrong-link", "/data/set1/file0006.txt"),
            ("object-corrupt", truncated.name),
            ("object-missing", "/data/set1/file0016.txt"),
            ("missing", "/data/set1/file0021.txt"),
            ("extraneous", "/data/stray.txt"),
        }, out

        code, out = await cli_output(
            "verify", "-x", str(dest), "-r", FQRN, "-f", str(config), "--repair"
        )
        assert code == 0, out
    assert tree_problems(tmp_path / "fresh", dest) == []
    assert (tree / "data" / "set1" / "file0011.txt").read_bytes() == (
        tmp_path / "fresh" / FQRN / "data" / "set1" / "file0011.txt"
    ).read_bytes()
