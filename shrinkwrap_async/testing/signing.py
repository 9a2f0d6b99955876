"""Keys, certificate, whitelist and manifest signatures of a test repository.

File names follow the real server tools: ``keys/<fqrn>.pub`` (master public key, PEM
SubjectPublicKeyInfo) and, in ``keys/private/``, ``<fqrn>.masterkey`` (signs the
whitelist), ``<fqrn>.key`` and ``<fqrn>.crt`` (release-manager key and self-signed
certificate; the key signs manifests). Existing files are reused.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from shrinkwrap_async.hashing import Algorithm

KEY_BITS = 2048
CERTIFICATE_DAYS = 3650


@dataclass(frozen=True)
class RepositoryKeys:
    fqrn: str
    master_key: rsa.RSAPrivateKey
    certificate_key: rsa.RSAPrivateKey
    certificate_pem: bytes
    public_key_path: Path

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.certificate_pem)

    @classmethod
    def load_or_create(cls, keys_dir: Path, fqrn: str) -> RepositoryKeys:
        private = keys_dir / "private"
        private.mkdir(parents=True, exist_ok=True)
        master_key = _load_or_create_key(private / f"{fqrn}.masterkey")
        public_path = keys_dir / f"{fqrn}.pub"
        public_pem = master_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if not public_path.exists() or public_path.read_bytes() != public_pem:
            public_path.write_bytes(public_pem)
        certificate_key = _load_or_create_key(private / f"{fqrn}.key")
        certificate_path = private / f"{fqrn}.crt"
        if certificate_path.exists():
            certificate_pem = certificate_path.read_bytes()
        else:
            certificate_pem = make_certificate(fqrn, certificate_key)
            certificate_path.write_bytes(certificate_pem)
        return cls(fqrn, master_key, certificate_key, certificate_pem, public_path)


def _load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{path}: not an RSA private key")
        return key
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return key


def certificate_common_name(fqrn: str) -> str:
    """``<fqrn, first 30 characters then "[...]"> CernVM-FS Release Managers``."""
    short = fqrn if len(fqrn) <= 30 else fqrn[:30] + "[...]"
    return f"{short} CernVM-FS Release Managers"


def make_certificate(fqrn: str, key: rsa.RSAPrivateKey, *, days: int = CERTIFICATE_DAYS) -> bytes:
    """A self-signed PEM certificate for the release-manager key."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, certificate_common_name(fqrn))])
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def fingerprint(certificate_pem: bytes, algorithm: Algorithm) -> str:
    """Colon-separated uppercase hex of the DER hash, ``-RMD160``/``-SHAKE128`` suffixed."""
    der = x509.load_pem_x509_certificate(certificate_pem).public_bytes(serialization.Encoding.DER)
    digest = algorithm.hash(der).raw
    return ":".join(f"{byte:02X}" for byte in digest) + algorithm.suffix.upper()


def sign_raw_pkcs1(key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    """RSA "private encrypt" with PKCS#1 type-1 padding around ``message`` (no DigestInfo)."""
    numbers = key.private_numbers()
    modulus = numbers.public_numbers.n
    size = (modulus.bit_length() + 7) // 8
    padding_length = size - 3 - len(message)
    if padding_length < 8:
        raise ValueError("message too long for the key")
    block = b"\x00\x01" + b"\xff" * padding_length + b"\x00" + message
    signature = pow(int.from_bytes(block, "big"), numbers.d, modulus)
    return signature.to_bytes(size, "big")


def signed_document(body: bytes, algorithm: Algorithm) -> tuple[bytes, bytes]:
    """``(text up to and including the hash line, hash line)`` for a signed letter."""
    hash_line = algorithm.hash(body).hex.encode()
    return body + b"--\n" + hash_line + b"\n", hash_line


def make_whitelist(
    keys: RepositoryKeys,
    algorithm: Algorithm,
    *,
    days: int,
    now: dt.datetime | None = None,
) -> bytes:
    """The ``.cvmfswhitelist`` text with its raw PKCS#1 signature by the master key."""
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    expires = now + dt.timedelta(days=days)
    body = (
        f"{now:%Y%m%d%H%M%S}\n"
        f"E{expires:%Y%m%d%H%M%S}\n"
        f"N{keys.fqrn}\n"
        f"{fingerprint(keys.certificate_pem, algorithm)}\n"
    ).encode()
    text, hash_line = signed_document(body, algorithm)
    return text + sign_raw_pkcs1(keys.master_key, hash_line)


def sign_manifest(body: bytes, keys: RepositoryKeys, algorithm: Algorithm) -> bytes:
    """Append ``--``, the hash line and the PKCS#1 v1.5 SHA-1 signature by the cert key."""
    text, hash_line = signed_document(body, algorithm)
    signature = keys.certificate_key.sign(hash_line, padding.PKCS1v15(), hashes.SHA1())
    return text + signature
