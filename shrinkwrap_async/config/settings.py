"""Client settings of one repository, from CVMFS configuration files or from code.

Defaults are what cvmfs_shrinkwrap gets: it initialises libcvmfs from its ``-f`` files only
and never reads ``/etc/cvmfs/default.conf``, so unset parameters take the client's built-in
values (timeouts 5 s via proxy and 5 s direct, 1 retry, backoff 2 s doubling up to 10 s,
proxy and host reset disabled, ownership not claimed), not those of ``default.conf``.
Without ``CVMFS_HTTP_PROXY`` requests go DIRECT.

Master keys: ``CVMFS_PUBLIC_KEY`` (colon-separated files) wins over ``CVMFS_KEYS_DIR``
(every ``*.pub`` there), else every ``*.pub`` in ``/etc/cvmfs/keys`` (the client's order,
which is the opposite of what the parameter appendix says).

External files (catalog flag 128) are fetched by path from ``CVMFS_EXTERNAL_URL`` (a
``;``-separated host list) through ``CVMFS_EXTERNAL_HTTP_PROXY`` (default DIRECT, not the
regular proxies) and ``CVMFS_EXTERNAL_FALLBACK_PROXY``, with ``CVMFS_EXTERNAL_TIMEOUT`` and
``CVMFS_EXTERNAL_TIMEOUT_DIRECT`` defaulting to the regular timeouts, and
``CVMFS_EXTERNAL_MAX_SERVERS`` (> 0) keeping only the first hosts, as the client does. Unset
``CVMFS_EXTERNAL_URL`` means external files cannot be exported.

The blacklist (``CVMFS_BLACKLIST``, else ``/etc/cvmfs/blacklist`` when it exists) refuses
listed certificate fingerprints and, in ``<fqrn N`` lines, revisions below ``N``.

Trusted CAs (``CVMFS_TRUSTED_CERTS``, ``:``-separated directories or files of PEM CA
certificates and CRLs) are only used by repositories whose whitelist asks for them
(``Vpkcs7``, ``Wcachain``); unset, ``/etc/grid-security/certificates`` when it exists.
"""

from __future__ import annotations

import calendar
import dataclasses
import math
import os
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from shrinkwrap_async.config.idmap import IdMap
from shrinkwrap_async.config.parser import ConfigValues, parse_config_files
from shrinkwrap_async.exitcodes import ConfigError
from shrinkwrap_async.hashing import Digest

DEFAULT_KEYS_DIR = Path("/etc/cvmfs/keys")
DEFAULT_BLACKLIST = Path("/etc/cvmfs/blacklist")  # the client's, read when it exists
DEFAULT_TRUSTED_CERTS = Path("/etc/grid-security/certificates")
DIRECT = "DIRECT"
ISO_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # CVMFS_REPOSITORY_DATE

_TRUE = {"yes", "on", "1", "true"}
_FALSE = {"no", "off", "0", "false"}

# Built-in fallbacks of the client (mountpoint.h), which is what cvmfs_shrinkwrap runs with.
BUILTIN_TIMEOUT = 5.0
BUILTIN_TIMEOUT_DIRECT = 5.0
BUILTIN_MAX_RETRIES = 1
BUILTIN_BACKOFF_INIT = 2.0
BUILTIN_BACKOFF_MAX = 10.0
BUILTIN_LOW_SPEED_LIMIT = 1024
BUILTIN_PROXY_RESET_AFTER = 0.0  # disabled
BUILTIN_HOST_RESET_AFTER = 0.0  # disabled
BUILTIN_DNS_TIMEOUT = 3.0
BUILTIN_DNS_RETRIES = 1

_PROGRAMMATIC = Path("<settings>")


@dataclass(frozen=True)
class ClientSettings:
    fqrn: str
    server_urls: tuple[str, ...]
    proxy_groups: tuple[tuple[str, ...], ...] = ((DIRECT,),)
    fallback_proxy_groups: int = 0  # the last groups of proxy_groups: CVMFS_FALLBACK_PROXY
    public_keys: tuple[Path, ...] = ()
    cache_base: Path | None = None
    uid_map: IdMap = field(default_factory=IdMap)
    gid_map: IdMap = field(default_factory=IdMap)
    claim_ownership: bool = False
    timeout: float = BUILTIN_TIMEOUT
    timeout_direct: float = BUILTIN_TIMEOUT_DIRECT
    max_retries: int = BUILTIN_MAX_RETRIES
    backoff_init: float = BUILTIN_BACKOFF_INIT
    backoff_max: float = BUILTIN_BACKOFF_MAX
    low_speed_limit: int = BUILTIN_LOW_SPEED_LIMIT
    proxy_reset_after: float = BUILTIN_PROXY_RESET_AFTER
    host_reset_after: float = BUILTIN_HOST_RESET_AFTER
    use_geoapi: bool = False
    max_servers: int = 0  # CVMFS_MAX_SERVERS: > 0 keeps the first hosts (after the geo order)
    follow_redirects: bool = False  # CVMFS_FOLLOW_REDIRECTS: else a redirect is a host error
    send_info_header: bool = False  # CVMFS_SEND_INFO_HEADER: cvmfs-info names what is fetched
    repository_tag: str | None = None
    repository_date: str | None = None
    root_hash: Digest | None = None  # CVMFS_ROOT_HASH
    trusted_certs: tuple[Path, ...] = field(default_factory=lambda: default_trusted_certs())
    blacklist: Path = DEFAULT_BLACKLIST
    max_ipaddr_per_proxy: int = 0  # CVMFS_MAX_IPADDR_PER_PROXY: > 0 caps a proxy name's addresses
    prefer_ipv6: bool = False  # CVMFS_IPFAMILY_PREFER=6
    dns_timeout: float = BUILTIN_DNS_TIMEOUT
    dns_retries: int = BUILTIN_DNS_RETRIES
    external_urls: tuple[str, ...] = ()
    external_proxy_groups: tuple[tuple[str, ...], ...] = ((DIRECT,),)
    external_timeout: float | None = None  # None: as ``timeout``
    external_timeout_direct: float | None = None  # None: as ``timeout_direct``
    values: ConfigValues = field(default_factory=ConfigValues)
    config_files: tuple[Path, ...] = ()

    # -- constructors -------------------------------------------------------------------

    @classmethod
    def load(cls, paths: Sequence[Path | str], fqrn: str) -> ClientSettings:
        """Read ``paths`` (later files win) and validate every setting used.

        Raises :class:`ConfigError` with a one-line message naming file, key and fix.
        """
        files = tuple(Path(p) for p in paths)
        if not files:
            raise ConfigError("no configuration file given; pass -f/--src-config FILE[:FILE...]")
        values = parse_config_files(files, fqrn)
        return cls.from_values(values, fqrn, files)

    @classmethod
    def from_values(
        cls, values: ConfigValues, fqrn: str, config_files: tuple[Path, ...] = ()
    ) -> ClientSettings:
        """Settings from already parsed values (used by :meth:`load`)."""
        reader = _Reader(values)
        cache_key = "CVMFS_CACHE_DIR" if values.get("CVMFS_CACHE_DIR") else "CVMFS_CACHE_BASE"
        cache = values.get(cache_key)
        if cache:
            _check_path_text(values, cache_key, cache)
        proxy_groups, fallback_proxy_groups = _proxy_groups_from(values)
        return cls(
            fqrn=fqrn,
            server_urls=parse_server_urls(
                values.get("CVMFS_SERVER_URL"), values.where("CVMFS_SERVER_URL")
            ),
            proxy_groups=proxy_groups,
            fallback_proxy_groups=fallback_proxy_groups,
            public_keys=_public_keys_from(values),
            cache_base=Path(cache) if cache else None,
            uid_map=reader.id_map("CVMFS_UID_MAP"),
            gid_map=reader.id_map("CVMFS_GID_MAP"),
            claim_ownership=reader.boolean("CVMFS_CLAIM_OWNERSHIP", False),
            timeout=reader.seconds("CVMFS_TIMEOUT", BUILTIN_TIMEOUT),
            timeout_direct=reader.seconds("CVMFS_TIMEOUT_DIRECT", BUILTIN_TIMEOUT_DIRECT),
            max_retries=int(reader.number("CVMFS_MAX_RETRIES", BUILTIN_MAX_RETRIES, whole=True)),
            backoff_init=reader.seconds("CVMFS_BACKOFF_INIT", BUILTIN_BACKOFF_INIT),
            backoff_max=reader.seconds("CVMFS_BACKOFF_MAX", BUILTIN_BACKOFF_MAX),
            low_speed_limit=int(
                reader.number("CVMFS_LOW_SPEED_LIMIT", BUILTIN_LOW_SPEED_LIMIT, whole=True)
            ),
            proxy_reset_after=reader.seconds("CVMFS_PROXY_RESET_AFTER", BUILTIN_PROXY_RESET_AFTER),
            host_reset_after=reader.seconds("CVMFS_HOST_RESET_AFTER", BUILTIN_HOST_RESET_AFTER),
            use_geoapi=reader.boolean("CVMFS_USE_GEOAPI", False),
            max_servers=int(reader.number("CVMFS_MAX_SERVERS", 0, whole=True)),
            follow_redirects=reader.boolean("CVMFS_FOLLOW_REDIRECTS", False),
            send_info_header=reader.boolean("CVMFS_SEND_INFO_HEADER", False),
            repository_tag=values.get("CVMFS_REPOSITORY_TAG") or None,
            repository_date=_repository_date_from(values),
            root_hash=_root_hash_from(values),
            trusted_certs=_trusted_certs_from(values),
            blacklist=_blacklist_from(values),
            max_ipaddr_per_proxy=int(reader.number("CVMFS_MAX_IPADDR_PER_PROXY", 0, whole=True)),
            prefer_ipv6=_ip_family_from(values) == 6,
            dns_timeout=reader.seconds("CVMFS_DNS_TIMEOUT", BUILTIN_DNS_TIMEOUT),
            dns_retries=int(reader.number("CVMFS_DNS_RETRIES", BUILTIN_DNS_RETRIES, whole=True)),
            external_urls=_external_urls_from(values, reader),
            external_proxy_groups=_proxy_groups_from(
                values, "CVMFS_EXTERNAL_HTTP_PROXY", "CVMFS_EXTERNAL_FALLBACK_PROXY"
            )[0],
            external_timeout=reader.optional_seconds("CVMFS_EXTERNAL_TIMEOUT"),
            external_timeout_direct=reader.optional_seconds("CVMFS_EXTERNAL_TIMEOUT_DIRECT"),
            values=values,
            config_files=config_files,
        )

    @classmethod
    def for_repository(
        cls,
        fqrn: str,
        server_urls: Sequence[str] | str,
        public_keys: Sequence[Path | str] | Path | str = (),
        **overrides: Any,
    ) -> ClientSettings:
        """Settings built in code (tests, the demo). ``overrides`` are field names.

        ``proxy_groups`` (``external_proxy_groups``) may also be given as a
        ``CVMFS_HTTP_PROXY`` (``CVMFS_EXTERNAL_HTTP_PROXY``) string, ``external_urls`` as a
        ``CVMFS_EXTERNAL_URL`` string; ``values`` as a plain mapping of extra configuration
        keys (e.g. for variant symlinks).
        """

        def joined(hosts: Sequence[str] | str) -> str:
            return hosts if isinstance(hosts, str) else ";".join(hosts)

        def proxy_groups(key: str, field_name: str) -> tuple[tuple[str, ...], ...]:
            given = overrides.pop(field_name, ((DIRECT,),))
            if isinstance(given, str):
                given = parse_proxy_groups(given, "<settings>", key)
            return tuple(tuple(group) for group in given)

        urls = parse_server_urls(joined(server_urls), "<settings>")
        if isinstance(public_keys, str | Path):
            public_keys = [public_keys]
        proxies = proxy_groups("CVMFS_HTTP_PROXY", "proxy_groups")
        overrides["external_proxy_groups"] = proxy_groups(
            "CVMFS_EXTERNAL_HTTP_PROXY", "external_proxy_groups"
        )
        overrides["external_urls"] = parse_host_list(
            joined(overrides.pop("external_urls", ())),
            "<settings>",
            "CVMFS_EXTERNAL_URL",
            EXTERNAL_URL_EXAMPLE,
        )
        raw_values = overrides.pop("values", None)
        values = ConfigValues().with_values({"CVMFS_SERVER_URL": ";".join(urls)}, _PROGRAMMATIC)
        if raw_values:
            values = values.with_values(dict(raw_values), _PROGRAMMATIC)
        for name in ("cache_base",):
            if overrides.get(name) is not None:
                overrides[name] = Path(overrides[name])
        trusted = overrides.get("trusted_certs")
        if isinstance(trusted, str | Path):
            overrides["trusted_certs"] = (Path(trusted),)
        elif trusted is not None:
            overrides["trusted_certs"] = tuple(Path(p) for p in trusted)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown ClientSettings fields: {', '.join(sorted(unknown))}")
        return cls(
            fqrn=fqrn,
            server_urls=urls,
            proxy_groups=proxies,
            public_keys=tuple(Path(p) for p in public_keys),
            values=values,
            **overrides,
        )

    # -- behaviour ----------------------------------------------------------------------

    def map_owner(self, uid: int, gid: int) -> tuple[int, int]:
        """Owner to give an exported entry: the running user when claiming ownership."""
        if self.claim_ownership:
            return os.geteuid(), os.getegid()
        return self.uid_map.map(uid), self.gid_map.map(gid)

    def symlink_environment(self) -> dict[str, str]:
        """Variables visible to variant symlinks, as in cvmfs_shrinkwrap.

        libcvmfs exports every configuration key into the process environment and forces
        ``CVMFS_REPOSITORY_NAME`` (and pre-sets ``CVMFS_MOUNT_DIR=/cvmfs``).
        """
        environment = dict(os.environ)
        environment.setdefault("CVMFS_MOUNT_DIR", "/cvmfs")
        environment.update(self.values)
        environment["CVMFS_REPOSITORY_NAME"] = self.fqrn
        return environment

    def external_timeout_for(self, *, proxied: bool) -> float:
        """Timeout of a request to an external host (through a proxy, or DIRECT)."""
        if proxied:
            return self.timeout if self.external_timeout is None else self.external_timeout
        if self.external_timeout_direct is None:
            return self.timeout_direct
        return self.external_timeout_direct

    def catalog_cache_dir(self) -> Path:
        """Where verified catalogs are kept between runs (shared by repositories: by hash)."""
        if self.cache_base is not None:
            return self.cache_base / "shrinkwrap-async"
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg) if xdg else Path.home() / ".cache"
        return base / "shrinkwrap-async"

    def catalog_cache_origin(self) -> str:
        """What chose :meth:`catalog_cache_dir`, for an error message."""
        if self.cache_base is not None:
            return "CVMFS_CACHE_BASE or -c"
        return "$XDG_CACHE_HOME" if os.environ.get("XDG_CACHE_HOME") else "the home directory"


# -- value parsing ----------------------------------------------------------------------


SERVER_URL_EXAMPLE = "e.g. CVMFS_SERVER_URL=http://cvmfs-stratum-zero-hpc.cern.ch/cvmfs/@fqrn@"
EXTERNAL_URL_EXAMPLE = (
    "e.g. CVMFS_EXTERNAL_URL='http://data1.example.org/store;http://data2.example.org/store'"
)


def parse_server_urls(raw: str | None, where: str) -> tuple[str, ...]:
    """``CVMFS_SERVER_URL``: ``;``-separated http(s) base URLs, trailing ``/`` removed."""
    if raw is None:
        raise ConfigError(
            f"CVMFS_SERVER_URL is not set in the configuration; add it, {SERVER_URL_EXAMPLE}"
        )
    urls = parse_host_list(raw, where, "CVMFS_SERVER_URL", SERVER_URL_EXAMPLE)
    if not urls:
        raise ConfigError(f"{where}: CVMFS_SERVER_URL is empty; {SERVER_URL_EXAMPLE}")
    return urls


def parse_host_list(raw: str, where: str, key: str, example: str) -> tuple[str, ...]:
    """A ``;``-separated list of http(s) base URLs (``key`` names it in errors)."""
    urls = []
    for item in raw.split(";"):
        item = item.strip()
        if not item:
            continue
        try:
            parts = urlsplit(item)
        except ValueError:  # "Invalid IPv6 URL": an unbalanced "[" or "]"
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{where}: {key} entry {item!r} is not an http(s) URL; {example}")
        try:
            parts.port  # noqa: B018  (validates the port)
        except ValueError:
            raise ConfigError(f"{where}: {key} entry {item!r} has a bad port; {example}") from None
        if "@" in parts.path:
            raise ConfigError(
                f"{where}: {key} entry {item!r} holds an unknown @template@; "
                f"only @fqrn@ and @org@ exist, {example}"
            )
        urls.append(item.rstrip("/"))
    return tuple(urls)


def _external_urls_from(values: ConfigValues, reader: _Reader) -> tuple[str, ...]:
    """``CVMFS_EXTERNAL_URL``, cut to ``CVMFS_EXTERNAL_MAX_SERVERS`` hosts when that is > 0."""
    urls = parse_host_list(
        values.get("CVMFS_EXTERNAL_URL", ""),
        values.where("CVMFS_EXTERNAL_URL"),
        "CVMFS_EXTERNAL_URL",
        EXTERNAL_URL_EXAMPLE,
    )
    limit = int(reader.number("CVMFS_EXTERNAL_MAX_SERVERS", 0, whole=True))
    if 0 < limit < len(urls):
        urls = urls[:limit]
    return urls


def _normalise_proxy(member: str, where: str, key: str) -> str:
    if member.upper() == DIRECT:
        return DIRECT
    text = member if "://" in member else f"http://{member}"
    parts, problem = _proxy_url(text)
    if problem:
        raise ConfigError(
            f"{where}: {key} member {member!r} does not parse ({problem}); write groups "
            f"separated by ';' of proxies separated by '|', each host:port or DIRECT, "
            f"e.g. {key}='http://squid1:3128|http://squid2:3128;DIRECT'"
        )
    host = parts.hostname
    assert host is not None
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{parts.port}"


def _proxy_url(text: str) -> tuple[SplitResult, str | None]:
    """``text`` split as a proxy URL, and what is wrong with it as one (None: nothing)."""
    try:
        parts = urlsplit(text)
    except ValueError as error:  # "Invalid IPv6 URL": an unbalanced "[" or "]"
        return urlsplit(""), str(error)
    if parts.scheme not in ("http", "https"):
        return parts, f"scheme {parts.scheme!r} is not supported (only http proxies)"
    if not parts.hostname or parts.path not in ("", "/") or parts.query:
        return parts, "it is not host:port"
    try:
        port = parts.port
    except ValueError:
        return parts, "its port is not a number"
    return parts, None if port is not None else "it has no port"


def parse_proxy_groups(
    raw: str, where: str, key: str = "CVMFS_HTTP_PROXY"
) -> tuple[tuple[str, ...], ...]:
    """``;``-separated failover groups of ``|``-separated load-balanced proxies."""
    groups = []
    for group_text in raw.split(";"):
        members = [m.strip() for m in group_text.split("|") if m.strip()]
        if not members:
            continue
        if len(members) == 1 and members[0].lower() == "auto":
            environment_proxy = os.environ.get("http_proxy", "").strip()
            if not environment_proxy:
                raise ConfigError(
                    f"{where}: {key}=auto needs proxy auto-discovery (WPAD/PAC), which is not "
                    "supported; list the proxies (host:port) or DIRECT, or set http_proxy"
                )
            members = [environment_proxy]
        groups.append(tuple(_normalise_proxy(m, where, key) for m in members))
    return tuple(groups)


def _proxy_groups_from(
    values: ConfigValues,
    key: str = "CVMFS_HTTP_PROXY",
    fallback_key: str = "CVMFS_FALLBACK_PROXY",
) -> tuple[tuple[tuple[str, ...], ...], int]:
    """The proxy groups, the fallback ones last, and how many of them are fallback groups."""
    raw = values.get(key, "")
    groups = parse_proxy_groups(raw, values.where(key), key)
    fallback_raw = values.get(fallback_key, "")
    fallback = parse_proxy_groups(fallback_raw, values.where(fallback_key), fallback_key)
    if fallback:
        # As the client: with a fallback proxy, DIRECT is dropped from both lists.
        fallback = _without_direct(fallback)
        groups = (*_without_direct(groups), *fallback)
    if not groups:
        return ((DIRECT,),), 0
    return groups, len(fallback)


def _ip_family_from(values: ConfigValues) -> int:
    """``CVMFS_IPFAMILY_PREFER``: 4 (the default) or 6."""
    text = (values.get("CVMFS_IPFAMILY_PREFER") or "4").strip()
    if text not in ("4", "6"):
        raise ConfigError(
            f"{values.where('CVMFS_IPFAMILY_PREFER')}: CVMFS_IPFAMILY_PREFER={text!r} is not "
            "4 or 6; write CVMFS_IPFAMILY_PREFER=6 to prefer IPv6 addresses of proxies"
        )
    return int(text)


def _without_direct(groups: Sequence[tuple[str, ...]]) -> tuple[tuple[str, ...], ...]:
    return tuple(kept for group in groups if (kept := tuple(m for m in group if m != DIRECT)))


def _config_path(values: ConfigValues, key: str, text: str) -> Path:
    """A path from the configuration; a relative one is taken from its file's directory.

    (An extension: the client would resolve it against its working directory. This lets
    the files in ``conf/`` name their keys relative to themselves.)
    """
    _check_path_text(values, key, text)
    path = Path(text).expanduser()
    origin = values.origin(key)
    if not path.is_absolute() and origin is not None and origin[1] > 0:
        return origin[0].parent / path
    return path


def _check_path_text(values: ConfigValues, key: str, text: str) -> None:
    """A path with a NUL byte is no path (the OS calls would raise ValueError)."""
    if "\0" in text:
        raise ConfigError(f"{values.where(key)}: {key}={text!r} holds a NUL byte; write a path")


def _file_type(path: Path) -> int | None:
    """``path``'s file type (``stat.S_IFMT``, symlinks followed); None when it cannot be
    looked at: missing, or any other OS error (a name too long, a loop, no permission),
    where ``Path.is_file`` would raise for some of them."""
    try:
        return stat.S_IFMT(path.stat().st_mode)
    except OSError:
        return None


def _config_paths(values: ConfigValues, key: str, text: str) -> tuple[Path, ...]:
    """A ``:``-separated list of paths from ``key`` (empty items skipped)."""
    items = (item.strip() for item in text.split(":"))
    return tuple(_config_path(values, key, item) for item in items if item)


def _public_keys_from(values: ConfigValues) -> tuple[Path, ...]:
    fix = (
        "set CVMFS_PUBLIC_KEY=/path/<key>.pub (':'-separated) or CVMFS_KEYS_DIR=<dir with *.pub>"
        " (ready keys are in conf/keys/)"
    )
    listed = values.get("CVMFS_PUBLIC_KEY", "").strip()
    if listed:
        where = values.where("CVMFS_PUBLIC_KEY")
        keys = _config_paths(values, "CVMFS_PUBLIC_KEY", listed)
        for key in keys:
            if _file_type(key) != stat.S_IFREG or not os.access(key, os.R_OK):
                raise ConfigError(f"{where}: CVMFS_PUBLIC_KEY file {key} is not readable; {fix}")
        return keys
    directory_text = values.get("CVMFS_KEYS_DIR", "").strip()
    if directory_text:
        where = values.where("CVMFS_KEYS_DIR")
        directory = _config_path(values, "CVMFS_KEYS_DIR", directory_text)
        key_name = "CVMFS_KEYS_DIR"
    else:
        where, directory, key_name = "<built-in>", DEFAULT_KEYS_DIR, "CVMFS_KEYS_DIR"
    try:
        keys = tuple(sorted(p for p in directory.iterdir() if p.name.endswith(".pub")))
    except OSError:
        keys = ()
    if not keys:
        shown = f"{key_name}={directory}" if directory_text else f"default {directory}"
        raise ConfigError(f"{where}: no public key (*.pub) found in {shown}; {fix}")
    return keys


def parse_repository_date(text: str, where: str) -> int:
    """``CVMFS_REPOSITORY_DATE``'s only format, as seconds since the epoch (UTC)."""
    try:
        parsed = time.strptime(text, ISO_DATE_FORMAT)
    except ValueError:
        raise ConfigError(
            f"{where}: CVMFS_REPOSITORY_DATE={text!r} is not a UTC time; use "
            "YYYY-MM-DDThh:mm:ssZ, e.g. 2024-06-01T00:00:00Z"
        ) from None
    return calendar.timegm(parsed)


def _parse_root_hash(text: str, where: str) -> Digest:
    try:
        return Digest.from_hex(text)
    except ValueError:
        raise ConfigError(
            f"{where}: CVMFS_ROOT_HASH={text[:80]!r} is not a catalog hash (40 hex digits, "
            "with -rmd160 or -shake128 for those algorithms)"
        ) from None


def _repository_date_from(values: ConfigValues) -> str | None:
    text = values.get("CVMFS_REPOSITORY_DATE", "").strip()
    if text:
        parse_repository_date(text, values.where("CVMFS_REPOSITORY_DATE"))
    return text or None


def _root_hash_from(values: ConfigValues) -> Digest | None:
    text = values.get("CVMFS_ROOT_HASH", "").strip()
    return _parse_root_hash(text, values.where("CVMFS_ROOT_HASH")) if text else None


def _blacklist_from(values: ConfigValues) -> Path:
    """``CVMFS_BLACKLIST``: one file (fingerprints, ``<fqrn N`` revision floors)."""
    text = values.get("CVMFS_BLACKLIST", "").strip()
    return _config_path(values, "CVMFS_BLACKLIST", text) if text else DEFAULT_BLACKLIST


def default_trusted_certs() -> tuple[Path, ...]:
    """``/etc/grid-security/certificates`` when it exists, else none."""
    return (DEFAULT_TRUSTED_CERTS,) if DEFAULT_TRUSTED_CERTS.is_dir() else ()


def _trusted_certs_from(values: ConfigValues) -> tuple[Path, ...]:
    """``CVMFS_TRUSTED_CERTS``: every listed directory or file must exist; empty = none."""
    text = values.get("CVMFS_TRUSTED_CERTS")
    if text is None:
        return default_trusted_certs()
    where = values.where("CVMFS_TRUSTED_CERTS")
    paths = _config_paths(values, "CVMFS_TRUSTED_CERTS", text)
    for path in paths:
        kind = _file_type(path)
        if kind is None:
            raise ConfigError(
                f"{where}: CVMFS_TRUSTED_CERTS entry {path} does not exist; list ':'-separated "
                f"directories or files of PEM CA certificates, e.g. "
                f"CVMFS_TRUSTED_CERTS={DEFAULT_TRUSTED_CERTS}"
            )
        if not os.access(path, os.R_OK | (os.X_OK if kind == stat.S_IFDIR else 0)):
            raise ConfigError(
                f"{where}: CVMFS_TRUSTED_CERTS entry {path} is not readable; "
                "make it readable or list another CA directory"
            )
    return paths


@dataclass(frozen=True)
class _Reader:
    values: ConfigValues

    def _get(self, key: str) -> str | None:
        value = self.values.get(key)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def number(self, key: str, default: float, *, whole: bool = False) -> float:
        text = self._get(key)
        if text is None:
            return default
        try:
            number = int(text) if whole else float(text)
        except ValueError:
            number = None
        if number is None or not math.isfinite(number) or number < 0:
            kind = "a whole number" if whole else "a number of seconds"
            raise ConfigError(
                f"{self.values.where(key)}: {key}={text!r} is not {kind} >= 0; "
                f"write e.g. {key}={int(default) if default else 10}"
            )
        return number

    def seconds(self, key: str, default: float) -> float:
        return float(self.number(key, default))

    def optional_seconds(self, key: str) -> float | None:
        """Seconds, or None when ``key`` is unset (the caller's default then applies)."""
        if self._get(key) is None:
            return None
        return float(self.number(key, 0))

    def boolean(self, key: str, default: bool) -> bool:
        text = self._get(key)
        if text is None:
            return default
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ConfigError(
            f"{self.values.where(key)}: {key}={text!r} is not a yes/no value; "
            f"write {key}=yes or {key}=no"
        )

    def id_map(self, key: str) -> IdMap:
        text = self._get(key)
        if text is None:
            return IdMap()
        path = _config_path(self.values, key, text)
        try:
            return IdMap.load(path)
        except ConfigError as error:
            raise ConfigError(f"{self.values.where(key)}: {key}: {error}") from None


def describe(settings: ClientSettings) -> Mapping[str, object]:
    """A plain summary for logs and provenance files."""
    return {
        "fqrn": settings.fqrn,
        "server_urls": list(settings.server_urls),
        "proxy_groups": [list(g) for g in settings.proxy_groups],
        "fallback_proxy_groups": settings.fallback_proxy_groups,
        "public_keys": [str(p) for p in settings.public_keys],
        "config_files": [str(p) for p in settings.config_files],
        **({"external_urls": list(settings.external_urls)} if settings.external_urls else {}),
    }
