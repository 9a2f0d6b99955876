"""A proxy host name with several addresses: one proxy per address, as the client does.

The name is resolved through a hosts file named by ``HOST_ALIASES`` (the client's resolver
reads it too), mapping it to 127.0.0.2-4, where fault proxies listen on one port.
"""

from __future__ import annotations

import random
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from shrinkwrap_async.config.settings import ClientSettings, ConfigError
from shrinkwrap_async.network.fetcher import Fetcher
from shrinkwrap_async.network.proxy_addresses import (
    AddressPolicy,
    ProxyResolver,
    choose_addresses,
    expand_proxy_groups,
    read_hosts_file,
    with_address,
)
from shrinkwrap_async.testing.faultproxy import Fault, FaultProxy
from shrinkwrap_async.testing.servers import StaticServer

from .conftest import FIX1, StoredObject, fetch_all, make_settings

ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


async def proxies_on_one_port(
    stack: AsyncExitStack, faults: dict[str, dict[Fault, float]] | None = None
) -> list[FaultProxy]:
    """A fault proxy on each of ADDRESSES, all on the port the first one got."""
    faults = faults or {}
    proxies: list[FaultProxy] = []
    for address in ADDRESSES:
        port = proxies[0].port if proxies else 0
        proxy = FaultProxy(host=address, port=port, name=address, faults=faults.get(address))
        proxies.append(await stack.enter_async_context(proxy))
    return proxies


@pytest.fixture
def squids_alias(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``squids.test`` names ADDRESSES in the hosts file that ``HOST_ALIASES`` names."""
    path = tmp_path / "hosts"
    path.write_text(
        "# squids behind one alias\n"
        "127.0.0.2 squids.test\n"
        "127.0.0.3 squids.test  # second machine\n"
        "127.0.0.4 other.test SQUIDS.test\n"
    )
    monkeypatch.setenv("HOST_ALIASES", str(path))


@dataclass
class AliasRun:
    proxies: list[FaultProxy]  # on ADDRESSES, in that order
    got: dict[Path, bytes]
    groups: tuple[tuple[str, ...], ...]  # the proxy groups once the fetcher started
    burned: set[str]  # proxies burned at the end


async def fetch_through_alias(
    server: StaticServer,
    objects: list[StoredObject],
    *,
    chain: str = "{alias}",
    faults: dict[str, dict[Fault, float]] | None = None,
    **settings: object,
) -> AliasRun:
    """Fetch ``objects`` with ``CVMFS_HTTP_PROXY=chain``, ``{alias}`` the proxies' name."""
    async with AsyncExitStack() as stack:
        proxies = await proxies_on_one_port(stack, faults)
        alias = f"http://squids.test:{proxies[0].port}"
        configured = make_settings(
            server.repository_url(FIX1), proxy_groups=chain.format(alias=alias), **settings
        )
        async with Fetcher(configured) as fetcher:
            groups = fetcher.state.proxy_groups
            got = await fetch_all(fetcher, objects)
            burned = {p.url for p in proxies if fetcher.state.is_proxy_burned(p.url)}
    return AliasRun(proxies, got, groups, burned)


@pytest.mark.usefixtures("squids_alias")
async def test_every_address_of_the_name_serves_requests(
    fixture_server: StaticServer, fix1_objects: list[StoredObject]
) -> None:
    run = await fetch_through_alias(fixture_server, fix1_objects, chain="{alias};DIRECT")
    assert run.groups == (tuple(p.url for p in run.proxies), ("DIRECT",))
    assert all(run.got[o.path] == o.data for o in fix1_objects)
    counts = [p.requests for p in run.proxies]
    assert sum(counts) == len(fix1_objects)
    assert min(counts) > 0, counts


@pytest.mark.usefixtures("squids_alias")
async def test_a_failing_address_is_burned_and_the_others_serve(
    fixture_server: StaticServer, fix1_objects: list[StoredObject]
) -> None:
    run = await fetch_through_alias(
        fixture_server,
        fix1_objects,
        faults={"127.0.0.3": {Fault.ERROR: 1.0}},
        proxy_reset_after=600,
    )
    first, failing, third = run.proxies
    assert run.burned == {failing.url}
    assert all(run.got[o.path] == o.data for o in fix1_objects)
    assert failing.applied[Fault.OK] == 0
    assert first.requests + third.requests >= len(fix1_objects)
    assert failing.requests < len(fix1_objects) // 2


@pytest.mark.usefixtures("squids_alias")
async def test_max_ipaddr_per_proxy_keeps_that_many(
    fixture_server: StaticServer, fix1_objects: list[StoredObject]
) -> None:
    run = await fetch_through_alias(fixture_server, fix1_objects, max_ipaddr_per_proxy=2)
    (group,) = run.groups
    assert len(group) == 2 and set(group) < {p.url for p in run.proxies}
    assert {p.url for p in run.proxies if p.requests} == set(group)


async def test_localhost_is_resolved_by_the_system(
    fixture_server: StaticServer, fix1_objects: list[StoredObject]
) -> None:
    async with FaultProxy() as proxy:
        settings = make_settings(
            fixture_server.repository_url(FIX1), proxy_groups=f"localhost:{proxy.port}"
        )
        async with Fetcher(settings) as fetcher:
            assert fetcher.state.proxy_groups == ((proxy.url,),)
            await fetch_all(fetcher, fix1_objects[:3])
    assert proxy.requests == 3


async def test_a_name_that_does_not_resolve_stays_a_member() -> None:
    async def resolve(name: str) -> list[str]:
        if name == "gone.test":
            raise OSError("Name or service not known")
        return ["127.0.0.9", "127.0.0.8"]

    groups = await expand_proxy_groups(
        (("http://gone.test:3128", "http://up.test:80"), ("http://127.0.0.5:3128", "DIRECT")),
        AddressPolicy(),
        random.Random(1),
        resolve,
    )
    assert groups == (
        ("http://gone.test:3128", "http://127.0.0.8:80", "http://127.0.0.9:80"),
        ("http://127.0.0.5:3128", "DIRECT"),
    )


def test_address_choice() -> None:
    rng = random.Random(7)
    both = ["127.0.0.3", "::1", "127.0.0.2", "fd00::2"]
    assert choose_addresses(both, AddressPolicy(), rng) == ["127.0.0.2", "127.0.0.3"]
    assert choose_addresses(both, AddressPolicy(prefer_ipv6=True), rng) == ["::1", "fd00::2"]
    assert choose_addresses(["127.0.0.2"], AddressPolicy(prefer_ipv6=True), rng) == ["127.0.0.2"]
    assert choose_addresses(["fd00::2"], AddressPolicy(), rng) == ["fd00::2"]
    many = [f"127.0.1.{n}" for n in range(10)]
    picked = {tuple(choose_addresses(many, AddressPolicy(max_per_proxy=3), rng)) for _ in range(20)}
    assert all(len(p) == 3 and set(p) <= set(many) for p in picked)
    assert len(picked) > 1  # chosen at random, not the first three
    assert with_address("http://squid.test:3128", "fd00::2") == "http://[fd00::2]:3128"


def test_hosts_file(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("127.0.0.2 a.test b.test\n# 127.0.0.9 a.test\nnot-an-address c.test\n")
    path.write_text(path.read_text() + "127.0.0.3 A.test.\n\n127.0.0.2 a.test\n")
    assert read_hosts_file(path) == {"a.test": ["127.0.0.2", "127.0.0.3"], "b.test": ["127.0.0.2"]}


async def test_hosts_file_wins_and_a_missing_one_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "hosts"
    path.write_text("127.0.0.7 localhost\n")
    assert await ProxyResolver(AddressPolicy(), path).resolve("localhost") == ["127.0.0.7"]
    resolver = ProxyResolver(AddressPolicy(), tmp_path / "absent")
    assert "cannot read hosts file" in caplog.text
    assert "127.0.0.1" in await resolver.resolve("localhost")


def write_config(config: Path, line: str) -> None:
    """A client configuration with ``line`` on line 2."""
    key = config.parent / "repo.pub"
    key.write_text("a key file (read only when the trust chain is checked)\n")
    config.write_text(
        f"CVMFS_SERVER_URL=http://127.0.0.1/cvmfs/@fqrn@\n{line}\nCVMFS_PUBLIC_KEY={key}\n"
    )


@pytest.mark.parametrize(
    ("line", "field", "value"),
    [
        ("CVMFS_IPFAMILY_PREFER=6", "prefer_ipv6", True),
        ("CVMFS_IPFAMILY_PREFER=4", "prefer_ipv6", False),
        ("CVMFS_MAX_IPADDR_PER_PROXY=2", "max_ipaddr_per_proxy", 2),
        ("CVMFS_DNS_TIMEOUT=1.5", "dns_timeout", 1.5),
        ("CVMFS_DNS_RETRIES=0", "dns_retries", 0),
    ],
)
def test_settings(tmp_path: Path, line: str, field: str, value: object) -> None:
    config = tmp_path / "client.conf"
    write_config(config, line)
    assert getattr(ClientSettings.load([config], FIX1), field) == value


@pytest.mark.parametrize(
    "line", ["CVMFS_IPFAMILY_PREFER=5", "CVMFS_MAX_IPADDR_PER_PROXY=-1", "CVMFS_DNS_RETRIES=x"]
)
def test_bad_settings_are_one_line_errors(tmp_path: Path, line: str) -> None:
    config = tmp_path / "client.conf"
    write_config(config, line)
    with pytest.raises(ConfigError) as caught:
        ClientSettings.load([config], FIX1)
    message = str(caught.value)
    assert "\n" not in message and line.split("=")[0] in message and "client.conf:2" in message
