"""Keys, certificate, whitelist and manifest signatures of a test repository.

File names follow the real server tools: ``keys/<fqrn>.pub`` (master public key, PEM
SubjectPublicKeyInfo) and, in ``keys/private/``, ``<fqrn>.masterkey`` (signs the
whitelist), ``<fqrn>.key`` and ``<fqrn>.crt`` (release-manager key and self-signed
certificate; the key signs manifests). Existing files are reused.

PKCS#7 whitelists (``Vpkcs7``): :class:`CertificateAuthority` is a test CA that issues the
signer certificate (subjectAltName URI ``cvmfs:<fqrn>``) and, when ``Wcachain`` is wanted,
the release-manager certificate (:func:`install_ca_issued_certificate`, before publishing);
:func:`write_pkcs7_whitelist` writes ``.cvmfswhitelist`` and ``.cvmfswhitelist.pkcs7``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
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
    body = whitelist_body(
        keys.fqrn, [fingerprint(keys.certificate_pem, algorithm)], days=days, now=now
    )
    return sign_whitelist_body(body, keys, algorithm)


def whitelist_body(
    fqrn: str,
    fingerprints: Sequence[str],
    *,
    days: int,
    now: dt.datetime | None = None,
    pkcs7: bool = False,
    cachain: bool = False,
) -> bytes:
    """The whitelist lines before ``--``; ``days`` may be negative (an expired whitelist)."""
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    expires = now + dt.timedelta(days=days)
    lines = [f"{now:%Y%m%d%H%M%S}", f"E{expires:%Y%m%d%H%M%S}", f"N{fqrn}"]
    lines += ["Vpkcs7"] * pkcs7 + ["Wcachain"] * cachain + list(fingerprints)
    return "".join(f"{line}\n" for line in lines).encode()


def sign_whitelist_body(body: bytes, keys: RepositoryKeys, algorithm: Algorithm) -> bytes:
    """``--``, the hash line and the master key's raw PKCS#1 signature after ``body``."""
    text, hash_line = signed_document(body, algorithm)
    return text + sign_raw_pkcs1(keys.master_key, hash_line)


def sign_manifest(body: bytes, keys: RepositoryKeys, algorithm: Algorithm) -> bytes:
    """Append ``--``, the hash line and the PKCS#1 v1.5 SHA-1 signature by the cert key."""
    text, hash_line = signed_document(body, algorithm)
    signature = keys.certificate_key.sign(hash_line, padding.PKCS1v15(), hashes.SHA1())
    return text + signature


# -- PKCS#7 whitelists -----------------------------------------------------------------


@dataclass(frozen=True)
class CertificateAuthority:
    """A test CA (root, or intermediate when created with ``parent``)."""

    name: str
    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(
        cls,
        name: str = "shrinkwrap-async Test CA",
        *,
        parent: CertificateAuthority | None = None,
        days: int = CERTIFICATE_DAYS,
        now: dt.datetime | None = None,
    ) -> CertificateAuthority:
        key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        issuer_name = parent.certificate.subject if parent else subject
        signing_key = parent.key if parent else key
        builder = (
            _validity(x509.CertificateBuilder(), days, now)
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        )
        if parent:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()), False
            )
        return cls(name, key, builder.sign(signing_key, hashes.SHA256()))

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        common_name: str,
        *,
        key: rsa.RSAPrivateKey | None = None,
        uris: Sequence[str] = (),
        days: int = CERTIFICATE_DAYS,
        now: dt.datetime | None = None,
    ) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        """An end-entity certificate (and its key), with subjectAltName URIs if given."""
        key = key or rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
        builder = (
            _validity(x509.CertificateBuilder(), days, now)
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        if uris:
            names = [x509.UniformResourceIdentifier(uri) for uri in uris]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key

    def revocation_list(
        self, revoked: Sequence[x509.Certificate], *, now: dt.datetime | None = None
    ) -> bytes:
        """A PEM CRL of this CA listing ``revoked``."""
        now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now - dt.timedelta(days=1))
            .next_update(now + dt.timedelta(days=30))
        )
        for certificate in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(certificate.serial_number)
                .revocation_date(now - dt.timedelta(hours=1))
                .build()
            )
        crl = builder.sign(self.key, hashes.SHA256())
        return crl.public_bytes(serialization.Encoding.PEM)


def _validity(
    builder: x509.CertificateBuilder, days: int, now: dt.datetime | None
) -> x509.CertificateBuilder:
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    return (
        builder.serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def sign_pkcs7(
    content: bytes,
    certificate: x509.Certificate,
    key: rsa.RSAPrivateKey,
    *,
    intermediates: Sequence[x509.Certificate] = (),
) -> bytes:
    """PEM PKCS#7 SignedData embedding ``content`` byte for byte (binary mode)."""
    builder = pkcs7.PKCS7SignatureBuilder().set_data(content)
    builder = builder.add_signer(certificate, key, hashes.SHA256())
    for extra in intermediates:
        builder = builder.add_certificate(extra)
    return builder.sign(serialization.Encoding.PEM, [pkcs7.PKCS7Options.Binary])


def install_ca_issued_certificate(
    keys_dir: Path, fqrn: str, ca: CertificateAuthority
) -> x509.Certificate:
    """Make the release-manager certificate of ``fqrn`` one issued by ``ca`` (for Wcachain).

    Call before the first publish: :meth:`RepositoryKeys.load_or_create` reuses it.
    """
    private = keys_dir / "private"
    private.mkdir(parents=True, exist_ok=True)
    key = _load_or_create_key(private / f"{fqrn}.key")
    certificate, _ = ca.issue(certificate_common_name(fqrn), key=key)
    (private / f"{fqrn}.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return certificate


def write_pkcs7_whitelist(
    repository_dir: Path,
    keys: RepositoryKeys,
    algorithm: Algorithm,
    ca: CertificateAuthority,
    *,
    days: int = 30,
    now: dt.datetime | None = None,
    cachain: bool = False,
    uri: str | None = None,
) -> x509.Certificate:
    """``.cvmfswhitelist`` with a ``Vpkcs7`` line, and ``.cvmfswhitelist.pkcs7`` signing it.

    The signer certificate is issued by ``ca`` with the subjectAltName URI ``uri`` (default
    ``cvmfs:<fqrn>``); the PKCS#7 content is the whitelist text before ``--``. The plain
    file is signed with the master key too (clients ignore that signature). Returns the
    signer certificate.
    """
    body = whitelist_body(
        keys.fqrn,
        [fingerprint(keys.certificate_pem, algorithm)],
        days=days,
        now=now,
        pkcs7=True,
        cachain=cachain,
    )
    signer, signer_key = ca.issue(
        f"{keys.fqrn} whitelist signer", uris=[uri or f"cvmfs:{keys.fqrn}"], now=now
    )
    (repository_dir / ".cvmfswhitelist.pkcs7").write_bytes(sign_pkcs7(body, signer, signer_key))
    (repository_dir / ".cvmfswhitelist").write_bytes(sign_whitelist_body(body, keys, algorithm))
    return signer
