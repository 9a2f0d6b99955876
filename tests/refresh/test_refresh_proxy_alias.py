"""An export through a proxy alias with three addresses, one of them failing, in shards."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from shrinkwrap_async.testing.command_line import run_cli_process
from shrinkwrap_async.testing.faultproxy import Fault, FaultProxy
from shrinkwrap_async.testing.servers import StaticServer

from .test_refresh_incremental import FQRN, Repo, tree_problems


async def test_an_export_through_an_alias_skips_its_failing_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Repo(tmp_path)
    repo.publish()
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.2 squids.test\n127.0.0.3 squids.test\n127.0.0.4 squids.test\n")
    async with StaticServer(repo.base / "server") as server, AsyncExitStack() as stack:
        proxies: list[FaultProxy] = []
        for address in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            faults = {Fault.RESET: 1.0} if address == "127.0.0.3" else None
            port = proxies[0].port if proxies else 0
            proxy = FaultProxy(host=address, port=port, faults=faults)
            proxies.append(await stack.enter_async_context(proxy))
        config = tmp_path / "client.conf"
        config.write_text(
            f"CVMFS_SERVER_URL={server.url}/cvmfs/@fqrn@\n"
            f"CVMFS_HTTP_PROXY=http://squids.test:{proxies[0].port}\n"
            f"CVMFS_KEYS_DIR={repo.publisher.keys_dir}\n"
            f"CVMFS_CACHE_BASE={tmp_path / 'cache'}\n"
            "CVMFS_MAX_RETRIES=0\nCVMFS_BACKOFF_INIT=0\nCVMFS_PROXY_RESET_AFTER=600\n"
        )
        spec = tmp_path / "all.spec"
        spec.write_text("/*\n")
        monkeypatch.setenv("HOST_ALIASES", str(hosts))
        result = await run_cli_process(
            "export", "-r", FQRN, "-f", str(config), "-t", str(spec),
            "-x", str(tmp_path / "dest"), "--workers", "2", "-q",
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        await repo.export(server, "fresh", "fresh-cache")
    good, failing, other = proxies
    assert good.applied[Fault.OK] > 20 and other.applied[Fault.OK] > 20
    assert failing.applied[Fault.OK] == 0
    # Only requests sent before it was burned (each process has up to -j in flight) went
    # to the failing machine.
    assert failing.requests < (good.requests + other.requests) // 5, failing.requests
    assert tree_problems(tmp_path / "fresh", tmp_path / "dest") == []
