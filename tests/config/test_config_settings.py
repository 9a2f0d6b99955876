"""ClientSettings: defaults, keys, proxies, owners, and every configuration error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shrinkwrap_async.config.idmap import IdMap
from shrinkwrap_async.config.settings import ClientSettings
from shrinkwrap_async.exitcodes import ConfigError

FQRN = "fix1.test.local"
PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def keys_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "keys"


def load(tmp_path: Path, text: str, fqrn: str = FQRN) -> ClientSettings:
    path = tmp_path / "client.conf"
    path.write_text(text)
    return ClientSettings.load([path], fqrn)


def base_config(keys_dir: Path) -> str:
    return f"CVMFS_SERVER_URL=http://127.0.0.1:8000/cvmfs/@fqrn@/\nCVMFS_KEYS_DIR={keys_dir}\n"


def config_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_fixture_style_config(tmp_path: Path, keys_dir: Path) -> None:
    uid_map = tmp_path / "uid.map"
    uid_map.write_text("# comment\n* 0\n")
    gid_map = tmp_path / "gid.map"
    gid_map.write_text("1000 100\n")
    settings = load(
        tmp_path,
        base_config(keys_dir) + "CVMFS_HTTP_PROXY=DIRECT\nCVMFS_CACHE_BASE=/var/cache/x\n"
        "CVMFS_CLAIM_OWNERSHIP=no\nCVMFS_USER=root\n"
        f"CVMFS_UID_MAP={uid_map}\nCVMFS_GID_MAP={gid_map}\n",
    )
    assert settings.server_urls == ("http://127.0.0.1:8000/cvmfs/fix1.test.local",)
    assert settings.proxy_groups == (("DIRECT",),)
    assert settings.public_keys == tuple(sorted(keys_dir.glob("*.pub")))
    assert settings.cache_base == Path("/var/cache/x")
    assert settings.catalog_cache_dir() == Path("/var/cache/x/shrinkwrap-async")
    assert settings.map_owner(1234, 5678) == (0, 5678)
    assert settings.map_owner(1000, 1000) == (0, 100)
    assert settings.values["CVMFS_USER"] == "root"
    # Built-ins of the client, not default.conf, as cvmfs_shrinkwrap gets them.
    assert (settings.timeout, settings.timeout_direct) == (5.0, 5.0)
    assert settings.max_retries == 1
    assert (settings.backoff_init, settings.backoff_max) == (2.0, 10.0)
    assert (settings.proxy_reset_after, settings.host_reset_after) == (0.0, 0.0)
    assert settings.claim_ownership is False and settings.use_geoapi is False


def test_claim_ownership(tmp_path: Path, keys_dir: Path) -> None:
    settings = load(tmp_path, base_config(keys_dir) + "CVMFS_CLAIM_OWNERSHIP=yes\n")
    assert settings.map_owner(1234, 5678) == (os.geteuid(), os.getegid())


def test_numbers_and_booleans(tmp_path: Path, keys_dir: Path) -> None:
    settings = load(
        tmp_path,
        base_config(keys_dir) + "CVMFS_TIMEOUT=60\nCVMFS_TIMEOUT_DIRECT=2.5\nCVMFS_MAX_RETRIES=3\n"
        "CVMFS_USE_GEOAPI=On\nCVMFS_HOST_RESET_AFTER=1800\nCVMFS_REPOSITORY_TAG=prod\n",
    )
    assert settings.timeout == 60.0 and settings.timeout_direct == 2.5
    assert settings.max_retries == 3 and settings.use_geoapi is True
    assert settings.host_reset_after == 1800.0
    assert settings.repository_tag == "prod" and settings.repository_date is None


def test_several_servers_and_proxy_groups(tmp_path: Path, keys_dir: Path) -> None:
    settings = load(
        tmp_path,
        "CVMFS_SERVER_URL='http://a.example/cvmfs/@fqrn@;https://b.example:8443/cvmfs/@fqrn@/'\n"
        f"CVMFS_KEYS_DIR={keys_dir}\n"
        'CVMFS_HTTP_PROXY="squid1:3128|http://squid2.example:3128; [::1]:3128 ;DIRECT"\n',
    )
    assert settings.server_urls == (
        "http://a.example/cvmfs/fix1.test.local",
        "https://b.example:8443/cvmfs/fix1.test.local",
    )
    assert settings.proxy_groups == (
        ("http://squid1:3128", "http://squid2.example:3128"),
        ("http://[::1]:3128",),
        ("DIRECT",),
    )


def test_fallback_proxy_drops_direct(tmp_path: Path, keys_dir: Path) -> None:
    settings = load(
        tmp_path,
        base_config(keys_dir) + "CVMFS_HTTP_PROXY='p1:3128;DIRECT'\nCVMFS_FALLBACK_PROXY=f1:80\n",
    )
    assert settings.proxy_groups == (("http://p1:3128",), ("http://f1:80",))
    assert settings.fallback_proxy_groups == 1  # the last group (geo-sorted as a fallback)


def test_fallback_groups_are_counted_after_direct_is_dropped(
    tmp_path: Path, keys_dir: Path
) -> None:
    settings = load(
        tmp_path,
        base_config(keys_dir)
        + "CVMFS_HTTP_PROXY=DIRECT\nCVMFS_FALLBACK_PROXY='f1:80|f1b:80;DIRECT;f2:80'\n",
    )
    assert settings.proxy_groups == (("http://f1:80", "http://f1b:80"), ("http://f2:80",))
    assert settings.fallback_proxy_groups == 2
    only_direct = load(tmp_path, base_config(keys_dir) + "CVMFS_FALLBACK_PROXY=DIRECT\n")
    assert only_direct.proxy_groups == (("DIRECT",),)
    assert only_direct.fallback_proxy_groups == 0


def test_no_proxy_means_direct(tmp_path: Path, keys_dir: Path) -> None:
    assert load(tmp_path, base_config(keys_dir)).proxy_groups == (("DIRECT",),)


def test_public_key_list_wins_over_keys_dir(tmp_path: Path, keys_dir: Path) -> None:
    one = keys_dir / "fix2.test.local.pub"
    settings = load(tmp_path, base_config(keys_dir) + f"CVMFS_PUBLIC_KEY={one}:{one}\n")
    assert settings.public_keys == (one, one)


def test_symlink_environment(
    tmp_path: Path, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FROM_PROCESS", "p")
    settings = load(tmp_path, base_config(keys_dir) + "SOME_VAR=fromconfig\n")
    environment = settings.symlink_environment()
    assert environment["SOME_VAR"] == "fromconfig"
    assert environment["FROM_PROCESS"] == "p"
    assert environment["CVMFS_REPOSITORY_NAME"] == FQRN
    assert environment["CVMFS_SERVER_URL"] == "http://127.0.0.1:8000/cvmfs/fix1.test.local/"


def test_catalog_cache_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    settings = ClientSettings.for_repository(FQRN, "http://127.0.0.1:1/cvmfs/x", [])
    assert settings.catalog_cache_dir() == tmp_path / "xdg" / "shrinkwrap-async"


def test_for_repository(keys_dir: Path) -> None:
    key = keys_dir / "fix1.test.local.pub"
    settings = ClientSettings.for_repository(
        FQRN,
        ["http://127.0.0.1:9/cvmfs/fix1.test.local/"],
        [key],
        proxy_groups="127.0.0.1:3128;DIRECT",
        timeout=1,
        uid_map=IdMap.parse("* 7"),
        values={"SOME_VAR": "v"},
    )
    assert settings.server_urls == ("http://127.0.0.1:9/cvmfs/fix1.test.local",)
    assert settings.proxy_groups == (("http://127.0.0.1:3128",), ("DIRECT",))
    assert settings.public_keys == (key,)
    assert settings.map_owner(1, 2) == (7, 2)
    assert settings.symlink_environment()["SOME_VAR"] == "v"
    with pytest.raises(TypeError):
        ClientSettings.for_repository(FQRN, "http://x/", [key], no_such_field=1)


# -- every error path: one line, names the file (and line), the key and the fix -----------


def test_missing_server_url(tmp_path: Path, keys_dir: Path) -> None:
    message = config_error(tmp_path, f"CVMFS_KEYS_DIR={keys_dir}\n")
    assert "CVMFS_SERVER_URL is not set" in message and "e.g." in message


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "is empty"),
        ('";"', "is empty"),
        ("ftp://x/cvmfs/@fqrn@", "not an http(s) URL"),
        ("s0.example.org/cvmfs/@fqrn@", "not an http(s) URL"),
        ("http://x:port/cvmfs/@fqrn@", "bad port"),
        ("http://x/cvmfs/@repo@", "unknown @template@"),
        ("http://[::1/cvmfs/@fqrn@", "not an http(s) URL"),  # urlsplit: "Invalid IPv6 URL"
    ],
)
def test_bad_server_url(tmp_path: Path, keys_dir: Path, value: str, problem: str) -> None:
    message = config_error(tmp_path, f"CVMFS_KEYS_DIR={keys_dir}\nCVMFS_SERVER_URL={value}\n")
    assert f"{tmp_path / 'client.conf'}:2: CVMFS_SERVER_URL" in message
    assert problem in message and "CVMFS_SERVER_URL=http://" in message


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("squid.example.org", "no port"),
        ("squid:abc", "port is not a number"),
        ("socks5://squid:1080", "not supported"),
        ("http://squid:3128/path", "not host:port"),
        ("http://[::1:3128", "Invalid IPv6 URL"),
    ],
)
def test_bad_proxy(tmp_path: Path, keys_dir: Path, value: str, problem: str) -> None:
    message = config_error(tmp_path, base_config(keys_dir) + f"CVMFS_HTTP_PROXY={value}\n")
    assert f"client.conf:3: CVMFS_HTTP_PROXY member {value!r} does not parse" in message
    assert problem in message and "DIRECT" in message


def test_auto_proxy_without_environment(
    tmp_path: Path, keys_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("http_proxy", raising=False)
    message = config_error(tmp_path, base_config(keys_dir) + "CVMFS_HTTP_PROXY=auto\n")
    assert "CVMFS_HTTP_PROXY=auto" in message and "not supported" in message


def test_no_public_key_in_dir(tmp_path: Path) -> None:
    empty = tmp_path / "keys"
    empty.mkdir()
    message = config_error(
        tmp_path, f"CVMFS_SERVER_URL=http://x/cvmfs/@fqrn@\nCVMFS_KEYS_DIR={empty}\n"
    )
    assert "client.conf:2" in message and "no public key (*.pub) found" in message
    assert "CVMFS_PUBLIC_KEY=" in message


def test_public_key_file_missing(tmp_path: Path, keys_dir: Path) -> None:
    message = config_error(
        tmp_path, base_config(keys_dir) + f"CVMFS_PUBLIC_KEY={tmp_path}/gone.pub\n"
    )
    assert "client.conf:3: CVMFS_PUBLIC_KEY file" in message and "gone.pub" in message


@pytest.mark.parametrize(
    "key",
    ["CVMFS_PUBLIC_KEY", "CVMFS_KEYS_DIR", "CVMFS_UID_MAP", "CVMFS_CACHE_BASE", "CVMFS_BLACKLIST"],
)
def test_a_path_with_a_nul_byte(tmp_path: Path, keys_dir: Path, key: str) -> None:
    """A one-line configuration error; the OS calls would raise ValueError."""
    message = config_error(tmp_path, base_config(keys_dir) + f"{key}={tmp_path}/a\0b\n")
    assert f"client.conf:3: {key}=" in message and "NUL byte" in message


@pytest.mark.parametrize(
    ("key", "problem"),
    [("CVMFS_PUBLIC_KEY", "is not readable"), ("CVMFS_TRUSTED_CERTS", "does not exist")],
)
def test_a_path_name_too_long(tmp_path: Path, keys_dir: Path, key: str, problem: str) -> None:
    """ENAMETOOLONG from stat: Path.is_file and Path.exists raise it rather than say no."""
    message = config_error(tmp_path, base_config(keys_dir) + f"{key}={tmp_path}/{'k' * 300}\n")
    assert f"client.conf:3: {key}" in message and problem in message


def test_blacklist_setting(tmp_path: Path, keys_dir: Path) -> None:
    """The client's /etc/cvmfs/blacklist unless CVMFS_BLACKLIST names another file (relative
    to the configuration file, as the other paths)."""
    assert load(tmp_path, base_config(keys_dir)).blacklist == Path("/etc/cvmfs/blacklist")
    chosen = load(tmp_path, base_config(keys_dir) + "CVMFS_BLACKLIST=site/blacklist\n")
    assert chosen.blacklist == tmp_path / "site" / "blacklist"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("CVMFS_REPOSITORY_DATE=2024-06-01 00:00", "is not a UTC time; use YYYY-MM-DDThh:mm:ssZ"),
        ("CVMFS_ROOT_HASH=abc", "is not a catalog hash"),
    ],
)
def test_bad_pins(tmp_path: Path, keys_dir: Path, line: str, problem: str) -> None:
    message = config_error(tmp_path, base_config(keys_dir) + line + "\n")
    assert "client.conf:3:" in message and problem in message


def test_pins_are_read(tmp_path: Path, keys_dir: Path) -> None:
    pins = "CVMFS_ROOT_HASH=" + "ab" * 20 + "-rmd160\nCVMFS_REPOSITORY_DATE=2024-06-01T00:00:00Z\n"
    settings = load(tmp_path, base_config(keys_dir) + pins)
    assert settings.root_hash is not None and settings.root_hash.hex == "ab" * 20 + "-rmd160"
    assert settings.repository_date == "2024-06-01T00:00:00Z"


def test_windows_line_ends_and_a_byte_order_mark(tmp_path: Path, keys_dir: Path) -> None:
    text = "\ufeff" + base_config(keys_dir).replace("\n", "\r\n") + "CVMFS_TIMEOUT=7\r\n"
    settings = load(tmp_path, text)
    assert settings.server_urls == ("http://127.0.0.1:8000/cvmfs/fix1.test.local",)
    assert settings.timeout == 7.0


def test_unreadable_id_map(tmp_path: Path, keys_dir: Path) -> None:
    message = config_error(tmp_path, base_config(keys_dir) + f"CVMFS_UID_MAP={tmp_path}/none\n")
    assert "client.conf:3: CVMFS_UID_MAP" in message and "cannot read id map" in message


def test_malformed_id_map(tmp_path: Path, keys_dir: Path) -> None:
    bad = tmp_path / "gid.map"
    bad.write_text("* 0\nroot 0\n")
    message = config_error(tmp_path, base_config(keys_dir) + f"CVMFS_GID_MAP={bad}\n")
    assert f"{bad}:2: bad id map line" in message and "CVMFS_GID_MAP" in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("CVMFS_TIMEOUT", "ten"),
        ("CVMFS_TIMEOUT_DIRECT", "-1"),
        ("CVMFS_MAX_RETRIES", "2.5"),
        ("CVMFS_BACKOFF_MAX", "nan"),
    ],
)
def test_non_numeric(tmp_path: Path, keys_dir: Path, key: str, value: str) -> None:
    message = config_error(tmp_path, base_config(keys_dir) + f"{key}={value}\n")
    assert f"client.conf:3: {key}='{value}' is not" in message and f"write e.g. {key}=" in message


def test_bad_boolean(tmp_path: Path, keys_dir: Path) -> None:
    message = config_error(tmp_path, base_config(keys_dir) + "CVMFS_CLAIM_OWNERSHIP=maybe\n")
    assert "CVMFS_CLAIM_OWNERSHIP='maybe' is not a yes/no value" in message


def test_no_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--src-config"):
        ClientSettings.load([], FQRN)


@pytest.mark.parametrize(
    "name", ["sft.cern.ch", "software.eessi.io", "cms.cern.ch", "atlas.cern.ch"]
)
def test_shipped_configurations_load(name: str) -> None:
    conf = PROJECT / "conf" / f"{name}.conf"
    if not conf.exists():
        pytest.fail(f"{conf} is missing")
    settings = ClientSettings.load([conf], name)
    assert settings.server_urls and all(url.endswith(name) for url in settings.server_urls)
    assert settings.public_keys and all(key.is_file() for key in settings.public_keys)
