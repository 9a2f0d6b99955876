"""Establish trust in a repository's current root catalog.

Master key(s) -> signed whitelist (expiry, repository name, certificate fingerprints) ->
certificate object -> signed manifest -> root catalog hash. Every later object is checked
against a hash that descends from that root, so nothing else needs a signature.

The verified certificate object is kept by hash in ``cache_dir``; an unchanged repository
then costs exactly two requests (``.cvmfswhitelist`` and ``.cvmfspublished``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shrinkwrap_async.config.settings import ClientSettings
from shrinkwrap_async.exitcodes import ConfigError, TrustError, UnreachableError
from shrinkwrap_async.hashing import Digest, ObjectSuffix
from shrinkwrap_async.network.errors import FetchError, ObjectCorruptError, TransferError
from shrinkwrap_async.trust.manifest import Manifest
from shrinkwrap_async.trust.signature import (
    load_master_keys,
    verify_manifest_signature,
    verify_whitelist_signature,
)
from shrinkwrap_async.trust.whitelist import Whitelist

WHITELIST_FILE = ".cvmfswhitelist"
MANIFEST_FILE = ".cvmfspublished"
SIGNED_FILE_MAX_SIZE = 4 * 1024 * 1024
CERTIFICATE_MAX_SIZE = 1024 * 1024


class Fetcher(Protocol):
    """What the trust chain needs from ``network.fetcher.Fetcher``."""

    async def fetch_file(self, name: str, *, max_size: int = ...) -> bytes: ...

    async def fetch_object(self, digest: Digest, suffix: str = ...) -> bytes: ...


@dataclass(frozen=True)
class TrustedRoot:
    fqrn: str
    manifest: Manifest
    whitelist: Whitelist
    certificate_pem: bytes

    @property
    def root_catalog(self) -> Digest:
        return self.manifest.root_catalog

    @property
    def revision(self) -> int:
        return self.manifest.revision


# -- pure verification (no network) --------------------------------------------------------


def verify_whitelist(
    data: bytes, fqrn: str, master_keys: list[rsa.RSAPublicKey], now: datetime
) -> Whitelist:
    whitelist = Whitelist.parse(data)
    if whitelist.pkcs7:
        raise TrustError(
            f"{WHITELIST_FILE} of {fqrn} requires PKCS#7 verification (Vpkcs7), "
            "which is not supported"
        )
    whitelist.signed.check_hash_line(WHITELIST_FILE)
    verify_whitelist_signature(whitelist.signed, master_keys, WHITELIST_FILE)
    if whitelist.fqrn != fqrn:
        raise TrustError(
            f"repository name mismatch: {WHITELIST_FILE} is for {whitelist.fqrn!r}, "
            f"expected {fqrn!r}; check -r/--repo and CVMFS_SERVER_URL"
        )
    if whitelist.is_expired(now):
        raise TrustError(
            f"{WHITELIST_FILE} of {fqrn} expired at {whitelist.expires:%Y-%m-%d %H:%M} UTC; "
            "the repository must be re-signed (or the server is a stale mirror)"
        )
    return whitelist


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


def load_certificate(stored: bytes, digest: Digest) -> tuple[bytes, x509.Certificate]:
    """The certificate object as stored (zlib PEM), hash-checked -> (PEM, certificate)."""
    if not digest.matches(stored):
        raise TrustError(f"certificate object {digest.hex} does not match its hash")
    try:
        pem = zlib.decompress(stored)
        certificate = x509.load_pem_x509_certificate(pem)
    except (zlib.error, ValueError):
        raise TrustError(f"certificate object {digest.hex} is not a PEM certificate") from None
    return pem, certificate


def verify_manifest(
    manifest: Manifest, whitelist: Whitelist, certificate: x509.Certificate, fqrn: str
) -> None:
    der = certificate.public_bytes(serialization.Encoding.DER)
    if not whitelist.lists(der):
        raise TrustError(
            f"certificate not on whitelist: the certificate of {MANIFEST_FILE} "
            f"({manifest.certificate}) is not listed in {WHITELIST_FILE} of {fqrn}"
        )
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise TrustError(f"certificate of {fqrn} does not hold an RSA key")
    verify_manifest_signature(manifest.signed, key, MANIFEST_FILE)


# -- network -------------------------------------------------------------------------------


async def _fetch_file(fetcher: Fetcher, name: str, settings: ClientSettings) -> bytes:
    try:
        return await fetcher.fetch_file(name, max_size=SIGNED_FILE_MAX_SIZE)
    except (TransferError, FetchError) as error:
        servers = ", ".join(settings.server_urls)
        raise UnreachableError(
            f"cannot fetch {name} of {settings.fqrn} from {servers}: {error}"
        ) from error


def _cached_certificate_path(cache_dir: Path | None, digest: Digest) -> Path | None:
    if cache_dir is None:
        return None
    return cache_dir / "certificates" / f"{digest.hex}{ObjectSuffix.CERTIFICATE}"


async def _certificate(
    fetcher: Fetcher, digest: Digest, settings: ClientSettings, cache_dir: Path | None
) -> tuple[bytes, x509.Certificate]:
    cached = _cached_certificate_path(cache_dir, digest)
    if cached is not None:
        with contextlib.suppress(OSError):
            stored = cached.read_bytes()
            if digest.matches(stored):
                with contextlib.suppress(TrustError):
                    return load_certificate(stored, digest)
    try:
        stored = await fetcher.fetch_object(digest, ObjectSuffix.CERTIFICATE)
    except ObjectCorruptError as error:
        raise TrustError(f"certificate object of {settings.fqrn} is corrupt: {error}") from error
    except FetchError as error:
        raise UnreachableError(
            f"cannot fetch the certificate of {settings.fqrn}: {error}"
        ) from error
    result = load_certificate(stored, digest)
    if cached is not None:
        _store_quietly(cached, stored)
    return result


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
    if now is None:
        now = datetime.now(UTC)
    whitelist_data, manifest_data = await asyncio.gather(
        _fetch_file(fetcher, WHITELIST_FILE, settings),
        _fetch_file(fetcher, MANIFEST_FILE, settings),
    )
    whitelist = verify_whitelist(whitelist_data, fqrn, master_keys, now)
    manifest = verify_manifest_letter(manifest_data, fqrn)
    assert manifest.certificate is not None
    pem, certificate = await _certificate(fetcher, manifest.certificate, settings, cache_dir)
    verify_manifest(manifest, whitelist, certificate, fqrn)
    return TrustedRoot(fqrn, manifest, whitelist, pem)
