"""Signed CernVM-FS files (manifest, whitelist) and the RSA checks on them.

Both files end with ``--``, a hash line (hex of the hash of every byte before ``--``, with
the algorithm identifier for non-SHA-1) and the raw signature to the end of the file.

* Whitelist: the signature is the master key's raw PKCS#1 type-1 "private encrypt" of the
  ASCII hash line (no DigestInfo); we recover it with each master key and compare exactly.
* Manifest: an ordinary RSASSA-PKCS1-v1_5 signature with SHA-1 over the ASCII hash line,
  made by the release-manager certificate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from shrinkwrap_async.exitcodes import ConfigError, TrustError
from shrinkwrap_async.hashing import Algorithm, Digest

SEPARATOR = b"\n--\n"


@dataclass(frozen=True, slots=True)
class SignedFile:
    """A file split into its signed letter, hash line and signature."""

    letter: bytes  # every byte up to and including the newline before "--"
    hash_line: bytes  # ASCII hex, without newline
    signature: bytes

    @classmethod
    def split(cls, data: bytes, what: str) -> SignedFile:
        position = data.find(SEPARATOR)
        if data.startswith(b"--\n"):
            position = -1
        if position < 0:
            raise TrustError(f"{what} is not signed (no '--' separator line)")
        letter = data[: position + 1]
        rest = data[position + len(SEPARATOR) :]
        newline = rest.find(b"\n")
        if newline < 0:
            raise TrustError(f"{what} signature is truncated (no hash line ending)")
        return cls(letter, rest[:newline], rest[newline + 1 :])

    def hash_line_digest(self, what: str) -> Digest:
        try:
            return Digest.from_hex(self.hash_line.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise TrustError(f"{what} hash line {self.hash_line[:60]!r} is not a hash") from None

    def check_hash_line(self, what: str, algorithm: Algorithm | None = None) -> None:
        """The hash line must be the hash of the letter (in ``algorithm`` if given)."""
        claimed = self.hash_line_digest(what)
        if algorithm is not None and claimed.algorithm is not algorithm:
            raise TrustError(
                f"{what} is tampered: hash line uses {claimed.algorithm.name_lower}, "
                f"the repository uses {algorithm.name_lower}"
            )
        if self.hash_line != self.hash_line.lower() or not claimed.matches(self.letter):
            raise TrustError(f"{what} is tampered: its content does not match its signed hash")


def load_master_key(path: Path) -> rsa.RSAPublicKey:
    """A master public key (PEM ``BEGIN PUBLIC KEY``, RSA), as the client requires."""
    fix = "use the repository's PEM public key ('-----BEGIN PUBLIC KEY-----', RSA)"
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read public key ({error.strerror}); {fix}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ConfigError(f"{path}: not a PEM public key; {fix}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError(f"{path}: public key is not RSA; {fix}")
    return key


def load_master_keys(paths: Sequence[Path]) -> list[rsa.RSAPublicKey]:
    return [load_master_key(Path(p)) for p in paths]


def verify_whitelist_signature(
    signed: SignedFile, keys: Sequence[rsa.RSAPublicKey], what: str = ".cvmfswhitelist"
) -> None:
    """Accept if any master key recovers exactly the hash line (PKCS#1 type 1)."""
    usable = [key for key in keys if key.key_size // 8 >= len(signed.hash_line)]
    if not usable:
        raise TrustError(f"{what}: no master key is large enough to verify it")
    if all(len(signed.signature) < (key.key_size + 7) // 8 for key in usable):
        raise TrustError(
            f"{what} signature is truncated ({len(signed.signature)} bytes, "
            f"expected {(usable[0].key_size + 7) // 8})"
        )
    for key in usable:
        if len(signed.signature) != (key.key_size + 7) // 8:
            continue
        try:
            recovered = key.recover_data_from_signature(signed.signature, padding.PKCS1v15(), None)
        except (InvalidSignature, ValueError):
            continue
        if recovered == signed.hash_line:
            return
    raise TrustError(
        f"{what} is not signed by any configured master key "
        "(wrong master key, or the whitelist was tampered with); "
        "check CVMFS_PUBLIC_KEY/CVMFS_KEYS_DIR"
    )


def verify_manifest_signature(
    signed: SignedFile, certificate_key: rsa.RSAPublicKey, what: str = ".cvmfspublished"
) -> None:
    expected = (certificate_key.key_size + 7) // 8
    if len(signed.signature) < expected:
        raise TrustError(
            f"{what} signature is truncated ({len(signed.signature)} bytes, expected {expected})"
        )
    try:
        certificate_key.verify(
            signed.signature, signed.hash_line, padding.PKCS1v15(), hashes.SHA1()
        )
    except InvalidSignature:
        raise TrustError(
            f"{what} is tampered: its signature does not verify with the repository certificate"
        ) from None
