"""``verify``: a corrupt object and a deleted tree file are reported; ``--repair`` fixes both."""

from __future__ import annotations

import os
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
