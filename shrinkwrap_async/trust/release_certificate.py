"""The release manager's certificate, as the manifest's check needs it.

Checking a manifest needs the certificate's DER bytes (the whitelist lists their
fingerprint) and its public key (the signature). Both are read here without
``cryptography.x509``, whose import costs about 30 ms on every run, most of an unchanged
repository's: the key is the certificate's SubjectPublicKeyInfo, found with the DER reader
of ``trust.der`` and loaded by ``cryptography``'s serialization. Only bytes whose
fingerprint the signed whitelist lists are ever used, so this reading decides nothing an
attacker controls. The full X.509 object is loaded where a CA chain is checked
(``Wcachain``) or a subject is named in a message.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization

from shrinkwrap_async.trust import der

if TYPE_CHECKING:
    from cryptography import x509

_BEGIN = b"-----BEGIN CERTIFICATE-----"
_END = b"-----END CERTIFICATE-----"


@dataclass(frozen=True)
class ReleaseCertificate:
    pem: bytes
    der: bytes
    _spki: bytes = field(repr=False)

    @classmethod
    def from_pem(cls, pem: bytes) -> ReleaseCertificate:
        """The first certificate in ``pem``; ValueError if there is none to read."""
        start = pem.find(_BEGIN)
        end = pem.find(_END, start + len(_BEGIN))
        if start < 0 or end < 0:
            raise ValueError("no PEM certificate")
        try:
            data = binascii.a2b_base64(pem[start + len(_BEGIN) : end])
        except binascii.Error as error:
            raise ValueError(f"bad base64: {error}") from None
        return cls(pem, data, _public_key_info(data))

    def public_key(self) -> Any:
        """The key (ValueError or UnsupportedAlgorithm when ``cryptography`` cannot load it)."""
        return serialization.load_der_public_key(self._spki)

    def x509(self) -> x509.Certificate:
        """The full certificate (imports ``cryptography.x509``)."""
        from cryptography import x509

        return x509.load_der_x509_certificate(self.der)


def _public_key_info(data: bytes) -> bytes:
    """The encoded SubjectPublicKeyInfo of a DER certificate (RFC 5280 4.1): the seventh
    element of the TBSCertificate, the sixth when the optional [0] version is absent."""
    try:
        certificate = der.parse(data).expect(der.SEQUENCE, "certificate")
        tbs = certificate.children()[0].expect(der.SEQUENCE, "TBSCertificate")
        fields = tbs.children()
        first = 1 if fields and fields[0].tag == der.context(0) else 0
        return fields[first + 5].expect(der.SEQUENCE, "subjectPublicKeyInfo").encoding
    except (der.DerError, IndexError) as error:
        raise ValueError(f"not an X.509 certificate: {error}") from None
