"""Trusted CA certificates (``CVMFS_TRUSTED_CERTS``) and certificate chain checks.

The client hands ``CVMFS_TRUSTED_CERTS`` (``:``-separated) to OpenSSL as hashed
directories of CA certificates and CRLs, e.g. ``/etc/grid-security/certificates``. Here a
path may be a directory (every readable file in it is scanned for PEM certificates and
CRLs; other files such as ``*.signing_policy`` are ignored) or a single PEM file.

Chains are built with ``cryptography.x509.verification`` at the given time, with the
signer's other certificates as untrusted intermediates. The end-entity certificate may
carry any extensions (a PKCS#7 whitelist signer or a release-manager certificate is no
TLS client), while issuers must assert ``basicConstraints cA``; keyUsage, when present on a
CA, must allow certificate signing. Revocation: a certificate whose issuer has a CRL in the
store (signed by that issuer) must not be listed in it; unlike the client, a CA without a
CRL is not refused.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
)

from shrinkwrap_async.exitcodes import TrustError

SETTING = "CVMFS_TRUSTED_CERTS"
MAX_FILE_SIZE = 1024 * 1024

_PEM_BLOCK = re.compile(rb"-----BEGIN (CERTIFICATE|X509 CRL)-----.*?-----END \1-----", re.DOTALL)


class ChainError(TrustError):
    """A certificate does not chain to a trusted CA (the caller says whose)."""


def subject_text(certificate: x509.Certificate) -> str:
    """The certificate's subject as RFC 4514 text, for messages (see :func:`_name_text`)."""
    return _name_text(lambda: certificate.subject)


def issuer_text(certificate: x509.Certificate) -> str:
    """The certificate's issuer as RFC 4514 text, for messages (see :func:`_name_text`)."""
    return _name_text(lambda: certificate.issuer)


def _name_text(name: Callable[[], x509.Name]) -> str:
    """A certificate from the network may carry a name that parses but cannot be read or
    rendered (cryptography then raises KeyError or TypeError): the message goes on. Control
    characters are escaped, so that a message stays one line."""
    try:
        text = name().rfc4514_string()
    except Exception:  # any failure of the decoding or the rendering
        return "(a name that cannot be printed)"
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _ca_key_usage(_policy: Policy, _certificate: x509.Certificate, usage: object) -> None:
    if isinstance(usage, x509.KeyUsage) and not usage.key_cert_sign:
        raise ValueError("keyUsage of a CA does not allow certificate signing")


def _ca_policy() -> ExtensionPolicy:
    """Web PKI rules for issuers, relaxed where grid CAs differ (criticality, keyUsage)."""
    return (
        ExtensionPolicy.webpki_defaults_ca()
        .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, None)
        .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _ca_key_usage)
    )


@dataclass(frozen=True)
class TrustedCAs:
    certificates: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...]
    sources: tuple[Path, ...]

    @classmethod
    def load(cls, paths: Sequence[Path]) -> TrustedCAs:
        """Every PEM certificate and CRL in ``paths`` (directories or files), deduplicated."""
        certificates: dict[bytes, x509.Certificate] = {}
        crls: dict[bytes, x509.CertificateRevocationList] = {}
        for path in paths:
            for pem in _pem_blocks(path):
                with contextlib.suppress(ValueError):
                    if pem.startswith(b"-----BEGIN X509 CRL"):
                        crl = x509.load_pem_x509_crl(pem)
                        crls.setdefault(crl.public_bytes(serialization.Encoding.DER), crl)
                    else:
                        certificate = x509.load_pem_x509_certificate(pem)
                        der = certificate.public_bytes(serialization.Encoding.DER)
                        certificates.setdefault(der, certificate)
        return cls(tuple(certificates.values()), tuple(crls.values()), tuple(paths))

    def verify(
        self,
        certificate: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        now: datetime,
    ) -> list[x509.Certificate]:
        """The chain from ``certificate`` to a trusted CA.

        Raises ChainError whose message completes "<certificate> ...": "is not from a CA
        in CVMFS_TRUSTED_CERTS (...)", "does not verify against ... (expired, ...)" or "is
        revoked (...)".
        """
        not_trusted = f"is not from a CA in {SETTING}"
        if not self.certificates:
            raise ChainError(f"{not_trusted} (it holds no CA certificate)")
        builder = (
            PolicyBuilder()
            .store(Store(list(self.certificates)))
            .time(now)
            .extension_policies(ca_policy=_ca_policy(), ee_policy=ExtensionPolicy.permit_all())
        )
        try:
            verified = builder.build_client_verifier().verify(certificate, list(intermediates))
        except Exception as error:  # a corrupt certificate may raise KeyError, TypeError, ...
            reason = _short(error)
            if reason.endswith("no interior errors"):  # no path to any trusted certificate
                issuer = issuer_text(certificate)
                raise ChainError(f"{not_trusted} (no chain from its issuer {issuer})") from None
            raise ChainError(f"does not verify against {SETTING} ({reason})") from None
        self._check_revocation(verified.chain)
        return verified.chain

    def _check_revocation(self, chain: Sequence[x509.Certificate]) -> None:
        for position, (certificate, issuer) in enumerate(itertools.pairwise(chain)):
            key = issuer.public_key()
            for crl in self.crls:
                if crl.issuer != certificate.issuer or not crl.is_signature_valid(key):
                    continue
                if crl.get_revoked_certificate_by_serial_number(certificate.serial_number):
                    details = (
                        f"serial {certificate.serial_number:x}, in a CRL of {subject_text(issuer)}"
                    )
                    if position == 0:
                        raise ChainError(f"is revoked ({details})")
                    subject = subject_text(certificate)
                    raise ChainError(f"has a revoked issuer {subject} ({details})")


def _short(error: Exception) -> str:
    """The verifier's reason, without its dump of the certificate, on one line."""
    text = str(error).split(" (encountered processing", 1)[0]
    return " ".join(text.split())


def _pem_blocks(path: Path) -> list[bytes]:
    if path.is_dir():
        try:
            files = sorted(p for p in path.iterdir() if p.is_file())
        except OSError:
            return []
    else:
        files = [path]
    blocks: list[bytes] = []
    for file in files:
        try:
            if file.stat().st_size > MAX_FILE_SIZE:
                continue
            data = file.read_bytes()
        except OSError:
            continue
        blocks += (match.group(0) for match in _PEM_BLOCK.finditer(data))
    return blocks
