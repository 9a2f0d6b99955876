"""Establish trust in a repository's current root catalog.

Master key(s) -> signed whitelist (expiry, repository name, certificate fingerprints) ->
certificate object (not in the site's blacklist) -> signed manifest (a revision the
blacklist lets through) -> root catalog hash. Every later object is checked
against a hash that descends from that root, so nothing else needs a signature.

A whitelist with ``Vpkcs7`` is not checked with the master key but, as the client does,
through ``.cvmfswhitelist.pkcs7``: a PKCS#7 signature by a certificate from a CA in
``CVMFS_TRUSTED_CERTS`` whose subjectAltName URI is ``cvmfs:<fqrn>``; the whitelist signed
in it is the one used (fingerprints, expiry, name). ``Wcachain`` additionally requires the
release-manager certificate to come from such a CA.

The verified certificate object is kept by hash in ``cache_dir``; an unchanged repository
then costs exactly two requests (``.cvmfswhitelist`` and ``.cvmfspublished``).

The signed files carry no hash a download could be checked against, so a copy damaged on
the wire, or an outdated one from a proxy's cache, shows only as a failed check. The
chain is then fetched again with ``Pragma: no-cache``, up to ``SIGNED_FILE_ATTEMPTS`` times
in all; a failure that persists (a tampered signature) is reported as it was found.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa

from shrinkwrap_async.config.settings import DEFAULT_TRUSTED_CERTS, ClientSettings
from shrinkwrap_async.decimal_text import decimal_or_none
from shrinkwrap_async.exitcodes import ConfigError, TrustError, UnreachableError
from shrinkwrap_async.hashing import Digest, ObjectSuffix
from shrinkwrap_async.network.errors import (
    FetchError,
    ObjectCorruptError,
    ObjectMissingError,
    TransferError,
)
from shrinkwrap_async.trust.blacklist import Blacklist
from shrinkwrap_async.trust.manifest import Manifest
from shrinkwrap_async.trust.pinned_root import HISTORY_MAX_SIZE, PinnedRoot, resolve_pinned_root
from shrinkwrap_async.trust.release_certificate import ReleaseCertificate
from shrinkwrap_async.trust.signature import (
    load_master_keys,
    verify_manifest_signature,
    verify_whitelist_signature,
)
from shrinkwrap_async.trust.whitelist import Whitelist

if TYPE_CHECKING:  # the CA and PKCS#7 modules (cryptography.x509) load only when used
    from cryptography import x509

    from shrinkwrap_async.trust.castore import TrustedCAs

WHITELIST_FILE = ".cvmfswhitelist"
MANIFEST_FILE = ".cvmfspublished"
# The client asks for base URL + "cvmfswhitelist.pkcs7" (no "/.", cvmfs/whitelist.cc
# Whitelist::LoadUrl), which looks like a long-standing bug; servers and Stratum-1
# replication store the file under this name, so this is what we fetch.
PKCS7_WHITELIST_FILE = ".cvmfswhitelist.pkcs7"
PKCS7_CONTENT = f"the whitelist signed in {PKCS7_WHITELIST_FILE}"
SIGNED_FILE_MAX_SIZE = 4 * 1024 * 1024
SIGNED_FILE_ATTEMPTS = 4
CERTIFICATE_MAX_SIZE = 1024 * 1024


class Fetcher(Protocol):
    """What the trust chain needs from ``network.fetcher.Fetcher``."""

    async def fetch_file(self, name: str, *, max_size: int = ..., fresh: bool = ...) -> bytes: ...

    async def fetch_object(
        self, digest: Digest, suffix: str = ..., *, max_size: int | None = ...
    ) -> bytes: ...


@dataclass(frozen=True)
class TrustedRoot:
    fqrn: str
    manifest: Manifest
    whitelist: Whitelist
    certificate_pem: bytes
    pinned: PinnedRoot | None = None  # CVMFS_ROOT_HASH, _REPOSITORY_TAG or _REPOSITORY_DATE

    @property
    def root_catalog(self) -> Digest:
        return self.pinned.root_catalog if self.pinned else self.manifest.root_catalog

    @property
    def revision(self) -> int:
        return self.pinned.revision if self.pinned else self.manifest.revision

    @property
    def publish_time(self) -> int | None:
        return self.pinned.publish_time if self.pinned else self.manifest.publish_time


# -- pure verification (no network) --------------------------------------------------------


def check_whitelist_validity(whitelist: Whitelist, fqrn: str, now: datetime, what: str) -> None:
    """The whitelist names this repository and has not expired."""
    if whitelist.fqrn != fqrn:
        raise TrustError(
            f"repository name mismatch: {what} is for {whitelist.fqrn!r}, "
            f"expected {fqrn!r}; check -r/--repo and CVMFS_SERVER_URL"
        )
    if whitelist.is_expired(now):
        raise TrustError(
            f"{what} of {fqrn} expired at {whitelist.expires:%Y-%m-%d %H:%M} UTC; "
            "the repository must be re-signed (or the server is a stale mirror)"
        )


def verify_whitelist(
    data: bytes, fqrn: str, master_keys: list[rsa.RSAPublicKey], now: datetime
) -> Whitelist:
    """A whitelist signed with the master key (not ``Vpkcs7``)."""
    whitelist = Whitelist.parse(data)
    if whitelist.pkcs7:
        raise TrustError(
            f"{WHITELIST_FILE} of {fqrn} is a PKCS#7 whitelist (Vpkcs7): "
            f"it is verified with {PKCS7_WHITELIST_FILE}, not with the master key"
        )
    signed = whitelist.signed
    assert signed is not None  # parse() always keeps the signature
    signed.check_hash_line(WHITELIST_FILE)
    verify_whitelist_signature(signed, master_keys, WHITELIST_FILE)
    check_whitelist_validity(whitelist, fqrn, now, WHITELIST_FILE)
    return whitelist


def verify_pkcs7_whitelist(
    outer: Whitelist, pkcs7_data: bytes, fqrn: str, cas: TrustedCAs, now: datetime
) -> Whitelist:
    """The whitelist signed in ``.cvmfswhitelist.pkcs7``, checked as the client does.

    Every signature must verify and every signer certificate must chain to a trusted CA;
    one of them must carry the subjectAltName URI ``cvmfs:<fqrn>``. ``Wcachain`` in the
    unsigned ``outer`` copy is honoured too (it can only add a check).
    """
    from shrinkwrap_async.trust.castore import ChainError, subject_text
    from shrinkwrap_async.trust.pkcs7 import SignedData

    what = PKCS7_WHITELIST_FILE
    if not pkcs7_data.strip():
        raise TrustError(f"{what} of {fqrn} is empty")
    signed = SignedData.from_pem(pkcs7_data, what)
    signers = signed.verify_signatures(what)
    for signer in signers:
        others = [c for c in signed.certificates if c is not signer]
        try:
            cas.verify(signer, others, now)
        except ChainError as error:
            subject = subject_text(signer)
            raise TrustError(f"{what} of {fqrn}: signer certificate {subject} {error}") from None
    wanted = f"cvmfs:{fqrn}"
    uris = [uri for signer in signers for uri in _uris(signer)]
    if wanted not in uris:
        found = ", ".join(repr(uri) for uri in uris) or "none"
        raise TrustError(
            f"{what} of {fqrn}: no signer certificate has the subjectAltName URI "
            f"'{wanted}' (found: {found})"
        )
    if b"\r\n" in signed.content:
        raise TrustError(
            f"{PKCS7_CONTENT} of {fqrn} has CRLF line endings (signed as text; "
            "sign the whitelist in binary mode)"
        )
    whitelist = Whitelist.parse_content(signed.content, PKCS7_CONTENT)
    check_whitelist_validity(whitelist, fqrn, now, PKCS7_CONTENT)
    return dataclasses.replace(whitelist, cachain=whitelist.cachain or outer.cachain)


def _uris(certificate: x509.Certificate) -> list[str]:
    """The subjectAltName URIs (none when the extensions cannot be read)."""
    from cryptography import x509

    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (x509.ExtensionNotFound, ValueError):
        return []
    return names.value.get_values_for_type(x509.UniformResourceIdentifier)


def verify_manifest_letter(data: bytes, fqrn: str) -> Manifest:
    """Parse and check the manifest's content (not yet its signature)."""
    manifest = Manifest.parse(data)
    if manifest.fqrn != fqrn:
        raise TrustError(
            f"repository name mismatch: {MANIFEST_FILE} is for {manifest.fqrn!r}, "
            f"expected {fqrn!r}; check -r/--repo and CVMFS_SERVER_URL"
        )
    if manifest.certificate is None:
        raise TrustError(f"{MANIFEST_FILE} of {fqrn} names no certificate (no 'X' line)")
    manifest.signed.check_hash_line(MANIFEST_FILE, manifest.algorithm)
    return manifest


def load_certificate(stored: bytes, digest: Digest) -> tuple[bytes, ReleaseCertificate]:
    """The certificate object as stored (zlib PEM), hash-checked -> (PEM, certificate)."""
    if not digest.matches(stored):
        raise TrustError(f"certificate object {digest.hex} does not match its hash")
    inflater = zlib.decompressobj()
    try:
        pem = inflater.decompress(stored, CERTIFICATE_MAX_SIZE)
        if inflater.unconsumed_tail:  # a certificate is a few KiB; this may be a bomb
            raise TrustError(
                f"certificate object {digest.hex} inflates to more than "
                f"{CERTIFICATE_MAX_SIZE} bytes"
            )
        if not inflater.eof:
            raise ValueError("truncated zlib stream")
        certificate = ReleaseCertificate.from_pem(pem)
    except (zlib.error, ValueError):
        raise TrustError(f"certificate object {digest.hex} is not a PEM certificate") from None
    return pem, certificate


def verify_manifest(
    manifest: Manifest,
    whitelist: Whitelist,
    certificate: ReleaseCertificate,
    fqrn: str,
    *,
    cas: TrustedCAs | None = None,
    now: datetime | None = None,
) -> None:
    """Certificate listed (and, for ``Wcachain``, from a trusted CA); manifest signed by it."""
    if not whitelist.lists(certificate.der):
        listed_in = WHITELIST_FILE if whitelist.signed is not None else PKCS7_CONTENT
        raise TrustError(
            f"certificate not on whitelist: the certificate of {MANIFEST_FILE} "
            f"({manifest.certificate}) is not listed in {listed_in} of {fqrn}"
        )
    if whitelist.cachain:
        if cas is None:
            raise TrustError(f"{WHITELIST_FILE} of {fqrn} requires Wcachain, but no CA is loaded")
        from shrinkwrap_async.trust.castore import ChainError, subject_text

        full = certificate.x509()
        try:
            cas.verify(full, [], now or datetime.now(UTC))
        except ChainError as error:
            subject = subject_text(full)
            raise TrustError(
                f"certificate of {fqrn} ({subject}) {error}, "
                "but the whitelist requires it (Wcachain)"
            ) from None
    try:
        key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm):  # a key type this library cannot load
        raise TrustError(f"certificate of {fqrn} holds an unusable public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise TrustError(f"certificate of {fqrn} does not hold an RSA key")
    verify_manifest_signature(manifest.signed, key, MANIFEST_FILE)


# -- network -------------------------------------------------------------------------------


def _unreachable(name: str, settings: ClientSettings, error: Exception) -> UnreachableError:
    """The error for a repository file that no configured server delivered."""
    servers = ", ".join(settings.server_urls)
    return UnreachableError(f"cannot fetch {name} of {settings.fqrn} from {servers}: {error}")


async def _fetch_file(
    fetcher: Fetcher, name: str, settings: ClientSettings, *, fresh: bool = False
) -> bytes:
    try:
        return await fetcher.fetch_file(name, max_size=SIGNED_FILE_MAX_SIZE, fresh=fresh)
    except (TransferError, FetchError) as error:
        raise _unreachable(name, settings, error) from error


async def _fetch_pkcs7_whitelist(
    fetcher: Fetcher, settings: ClientSettings, *, fresh: bool = False
) -> bytes:
    try:
        return await fetcher.fetch_file(
            PKCS7_WHITELIST_FILE, max_size=SIGNED_FILE_MAX_SIZE, fresh=fresh
        )
    except ObjectMissingError:
        raise TrustError(
            f"{WHITELIST_FILE} of {settings.fqrn} requires PKCS#7 verification (Vpkcs7), "
            f"but the server has no {PKCS7_WHITELIST_FILE} (404)"
        ) from None
    except (TransferError, FetchError) as error:
        raise _unreachable(PKCS7_WHITELIST_FILE, settings, error) from error


async def load_trusted_cas(settings: ClientSettings, reason: str) -> TrustedCAs:
    """The CAs of CVMFS_TRUSTED_CERTS; ConfigError when there are none."""
    from shrinkwrap_async.trust.castore import TrustedCAs

    cas = await asyncio.to_thread(TrustedCAs.load, settings.trusted_certs)
    if cas.certificates:
        return cas
    key = "CVMFS_TRUSTED_CERTS"
    if settings.values.origin(key) is not None:
        where = f"{settings.values.where(key)}: "
        shown = ":".join(str(p) for p in settings.trusted_certs) or "empty"
    else:
        where = ""
        shown = ":".join(str(p) for p in settings.trusted_certs) or (
            f"unset, and {DEFAULT_TRUSTED_CERTS} does not exist"
        )
    raise ConfigError(
        f"{where}{WHITELIST_FILE} of {settings.fqrn} requires trusted CA certificates "
        f"({reason}), but {key} ({shown}) holds none; set {key} to ':'-separated "
        "directories or files of PEM CA certificates"
    )


def _cached_object_path(cache_dir: Path | None, digest: Digest, suffix: str) -> Path | None:
    """Where the certificate or history object ``digest`` is kept, beside the certificates."""
    if cache_dir is None:
        return None
    return cache_dir / "certificates" / f"{digest.hex}{suffix}"


@contextlib.contextmanager
def _chain_object_errors(what: str, settings: ClientSettings) -> Iterator[None]:
    """A corrupt object of the chain is a trust failure, one that cannot be fetched an
    unreachable repository."""
    try:
        yield
    except ObjectCorruptError as error:
        raise TrustError(f"{what} object of {settings.fqrn} is corrupt: {error}") from error
    except FetchError as error:
        raise UnreachableError(f"cannot fetch the {what} of {settings.fqrn}: {error}") from error


async def _fetch_chain_object(
    fetcher: Fetcher,
    digest: Digest,
    suffix: str,
    what: str,
    settings: ClientSettings,
    max_size: int | None = None,
) -> bytes:
    """The stored bytes of ``digest`` (see :func:`_chain_object_errors`)."""
    with _chain_object_errors(what, settings):
        return await fetcher.fetch_object(digest, suffix, max_size=max_size)


async def _certificate(
    fetcher: Fetcher, digest: Digest, settings: ClientSettings, cache_dir: Path | None
) -> tuple[bytes, ReleaseCertificate]:
    cached = _cached_object_path(cache_dir, digest, ObjectSuffix.CERTIFICATE)
    if cached is not None:
        stored = _read_quietly(cached)
        if stored is not None and digest.matches(stored):
            with contextlib.suppress(TrustError):
                return load_certificate(stored, digest)
    stored = await _fetch_chain_object(
        fetcher, digest, ObjectSuffix.CERTIFICATE, "certificate", settings, CERTIFICATE_MAX_SIZE
    )
    result = load_certificate(stored, digest)
    if cached is not None:
        _store_quietly(cached, stored)
    return result


async def _history(
    fetcher: Fetcher, digest: Digest, settings: ClientSettings, cache_dir: Path | None
) -> bytes:
    """The history database object (for a pinned root), kept by hash as the certificate:
    a pinned run of an unchanged repository then costs two requests too."""
    cached = _cached_object_path(cache_dir, digest, ObjectSuffix.HISTORY)
    if cached is not None:
        stored = _read_quietly(cached)
        if stored is not None and digest.matches(stored):
            return stored
    stored = await _fetch_chain_object(
        fetcher, digest, ObjectSuffix.HISTORY, "history database", settings, HISTORY_MAX_SIZE
    )
    if cached is not None:
        _store_quietly(cached, stored)
    return stored


async def _pinned_catalog_revision(
    fetcher: Fetcher, digest: Digest, settings: ClientSettings, cache_dir: Path | None
) -> tuple[int, int | None]:
    """The revision and publish time of the root catalog ``CVMFS_ROOT_HASH`` names, read
    through the catalog cache beside ``cache_dir`` (where the export then finds it: a pinned
    run of an unchanged repository costs two requests), or a temporary one."""
    from shrinkwrap_async.catalogs.cache import CatalogCache

    with contextlib.ExitStack() as stack:
        if cache_dir is None:
            catalogs = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        else:
            catalogs = cache_dir.parent / "catalogs"
        try:
            with _chain_object_errors("pinned root catalog", settings):
                catalog = await CatalogCache(catalogs, fetcher).open(digest, "")  # type: ignore[arg-type]
        except UnreachableError as error:
            if isinstance(error.__cause__, ObjectMissingError):  # a hash the servers lack
                raise ConfigError(
                    f"CVMFS_ROOT_HASH={digest.hex} names no catalog of {settings.fqrn}: "
                    f"{error.__cause__}"
                ) from None
            raise
        try:
            return catalog.revision, decimal_or_none(catalog.properties.get("last_modified", ""))
        finally:
            await catalog.close()


def _cached_pkcs7_path(cache_dir: Path | None, whitelist: bytes) -> Path | None:
    """Where the ``.cvmfswhitelist.pkcs7`` published with ``whitelist`` (its exact bytes)
    is kept: an unchanged repository then costs two requests, as one without Vpkcs7."""
    if cache_dir is None:
        return None
    key = hashlib.sha256(whitelist).hexdigest()
    return cache_dir / "certificates" / f"whitelist-{key}.pkcs7"


def _read_quietly(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _store_quietly(path: Path, data: bytes) -> None:
    """Cache write; a failure only costs a request next time."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()


async def establish_trust(
    fetcher: Fetcher,
    settings: ClientSettings,
    *,
    cache_dir: Path | None = None,
    now: datetime | None = None,
) -> TrustedRoot:
    """Fetch and verify whitelist, certificate and manifest; raise TrustError on failure."""
    fqrn = settings.fqrn
    if not settings.public_keys:
        raise ConfigError(
            f"no master public key configured for {fqrn}; set CVMFS_PUBLIC_KEY or CVMFS_KEYS_DIR"
        )
    master_keys = load_master_keys(settings.public_keys)
    blacklist = Blacklist.load(settings.blacklist)
    if now is None:
        now = datetime.now(UTC)
    for attempt in range(SIGNED_FILE_ATTEMPTS):
        try:
            trusted = await _verified_chain(
                fetcher, settings, master_keys, blacklist, cache_dir, now, fresh=attempt > 0
            )
            break
        except TrustError:
            if attempt == SIGNED_FILE_ATTEMPTS - 1:
                raise

    async def fetch_history(digest: Digest) -> bytes:
        return await _history(fetcher, digest, settings, cache_dir)

    async def catalog_revision(digest: Digest) -> tuple[int, int | None]:
        return await _pinned_catalog_revision(fetcher, digest, settings, cache_dir)

    pinned = await resolve_pinned_root(settings, trusted.manifest, fetch_history, catalog_revision)
    if pinned is None:
        return trusted
    blacklist.check_revision(fqrn, pinned.revision)
    return dataclasses.replace(trusted, pinned=pinned)


async def _verified_chain(
    fetcher: Fetcher,
    settings: ClientSettings,
    master_keys: list[rsa.RSAPublicKey],
    blacklist: Blacklist,
    cache_dir: Path | None,
    now: datetime,
    *,
    fresh: bool,
) -> TrustedRoot:
    """One pass over the chain; ``fresh`` asks proxies for new copies of the signed files
    (a blacklisted revision may be a proxy's stale copy, so it is asked for again too)."""
    fqrn = settings.fqrn
    whitelist_data, manifest_data = await asyncio.gather(
        _fetch_file(fetcher, WHITELIST_FILE, settings, fresh=fresh),
        _fetch_file(fetcher, MANIFEST_FILE, settings, fresh=fresh),
    )
    cas: TrustedCAs | None = None
    outer = Whitelist.parse_content(whitelist_data, WHITELIST_FILE)
    if outer.pkcs7:
        # Its own signature is not checked (the client does not either; it may have none),
        # but its name and expiry are, as the client does, before the signed copy is used.
        check_whitelist_validity(outer, fqrn, now, WHITELIST_FILE)
        # The signed copy published with this very whitelist, verified again from the cache
        # (a pass with ``fresh`` fetches it anew).
        cached = _cached_pkcs7_path(cache_dir, whitelist_data)
        pkcs7_data = None if fresh or cached is None else _read_quietly(cached)
        fetched = pkcs7_data is None
        if pkcs7_data is None:
            pkcs7_data = await _fetch_pkcs7_whitelist(fetcher, settings, fresh=fresh)
        cas = await load_trusted_cas(settings, "Vpkcs7")
        whitelist = verify_pkcs7_whitelist(outer, pkcs7_data, fqrn, cas, now)
        if fetched and cached is not None:
            _store_quietly(cached, pkcs7_data)
    else:
        whitelist = verify_whitelist(whitelist_data, fqrn, master_keys, now)
    manifest = verify_manifest_letter(manifest_data, fqrn)
    assert manifest.certificate is not None
    pem, certificate = await _certificate(fetcher, manifest.certificate, settings, cache_dir)
    blacklist.check_certificate(fqrn, certificate.der)
    if whitelist.cachain and cas is None:
        cas = await load_trusted_cas(settings, "Wcachain")
    verify_manifest(manifest, whitelist, certificate, fqrn, cas=cas, now=now)
    blacklist.check_revision(fqrn, manifest.revision)  # a revision it signed
    return TrustedRoot(fqrn, manifest, whitelist, pem)
