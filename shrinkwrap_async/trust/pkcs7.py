"""PKCS#7 SignedData: parse a PEM structure and check each signer's signature.

``cryptography`` can build SignedData but not verify it, so this does what OpenSSL's
``PKCS7_verify`` does for one signature, in three steps per SignerInfo:

1. find the signer certificate among the embedded ones (issuer and serial number, or the
   subject key identifier of CMS version 3);
2. with signed attributes: the ``messageDigest`` attribute must equal the digest of the
   embedded content, and the signature covers the DER ``SET OF`` the attributes (the
   ``[0] IMPLICIT`` tag turned back into ``SET``); without them, it covers the content;
3. verify that signature (RSA PKCS#1 v1.5 or ECDSA) with the certificate's key.

Whether the signer certificate comes from a trusted CA is checked by the caller
(:mod:`shrinkwrap_async.trust.castore`). Only embedded (not detached) ``data`` content is
accepted: that is what a PKCS#7 whitelist is. Every failure is a one-line ``TrustError``
whose message starts with ``what`` (the file name).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from shrinkwrap_async.exitcodes import TrustError
from shrinkwrap_async.trust import der
from shrinkwrap_async.trust.castore import subject_text

SIGNED_DATA = "1.2.840.113549.1.7.2"
DATA = "1.2.840.113549.1.7.1"
CONTENT_TYPE_ATTRIBUTE = "1.2.840.113549.1.9.3"
MESSAGE_DIGEST_ATTRIBUTE = "1.2.840.113549.1.9.4"

# The PEM labels OpenSSL's PEM_read_bio_PKCS7 accepts.
PEM_LABELS = (b"PKCS7", b"PKCS #7 SIGNED DATA")

DIGESTS: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "1.3.14.3.2.26": hashes.SHA1,
    "2.16.840.1.101.3.4.2.4": hashes.SHA224,
    "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
}
# rsaEncryption and sha*WithRSAEncryption: PKCS#1 v1.5 with the SignerInfo's digest.
RSA_SIGNATURES = frozenset("1.2.840.113549.1.1." + n for n in ("1", "5", "11", "12", "13", "14"))
# id-ecPublicKey and ecdsa-with-SHA*.
ECDSA_SIGNATURES = frozenset(
    [
        "1.2.840.10045.2.1",
        "1.2.840.10045.4.1",
        "1.2.840.10045.4.3.1",
        "1.2.840.10045.4.3.2",
        "1.2.840.10045.4.3.3",
        "1.2.840.10045.4.3.4",
    ]
)

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 #]+)-----(.*?)-----END \1-----", re.DOTALL)


@dataclass(frozen=True, slots=True)
class SignerInfo:
    issuer: bytes | None  # DER Name of issuerAndSerialNumber
    serial_number: int | None
    key_identifier: bytes | None  # subjectKeyIdentifier (CMS version 3 signers)
    digest_algorithm: str
    signed_attributes: bytes | None  # content octets of the [0] IMPLICIT SET OF Attribute
    signature_algorithm: str
    signature: bytes

    def signed_message(self, content: bytes) -> bytes:
        """The bytes the signature covers."""
        if self.signed_attributes is None:
            return content
        return _der_set(self.signed_attributes)


@dataclass(frozen=True)
class SignedData:
    content: bytes
    certificates: tuple[x509.Certificate, ...]
    signers: tuple[SignerInfo, ...]

    @classmethod
    def from_pem(cls, data: bytes, what: str) -> SignedData:
        blocks = [m for m in _PEM_BLOCK.finditer(data)]
        if not blocks:
            raise TrustError(f"{what} is not PEM (no '-----BEGIN PKCS7-----' block)")
        block = next((m for m in blocks if m.group(1) in PEM_LABELS), None)
        if block is None:
            label = blocks[0].group(1).decode()
            raise TrustError(f"{what} holds a PEM '{label}' block, not 'PKCS7'")
        try:
            raw = base64.b64decode(b"".join(block.group(2).split()), validate=True)
        except (binascii.Error, ValueError):
            raise TrustError(f"{what} is not valid PEM (bad base64)") from None
        return cls.from_der(raw, what)

    @classmethod
    def from_der(cls, raw: bytes, what: str) -> SignedData:
        try:
            return _parse_signed_data(raw, what)
        except der.DerError as error:
            raise TrustError(f"{what} is malformed PKCS#7: {error}") from None

    def signer_certificate(self, signer: SignerInfo, what: str) -> x509.Certificate:
        for certificate in self.certificates:
            if signer.key_identifier is not None:
                if _subject_key_identifier(certificate) == signer.key_identifier:
                    return certificate
            elif (
                certificate.serial_number == signer.serial_number
                and _issuer_der(certificate) == signer.issuer
            ):
                return certificate
        raise TrustError(f"{what}: the signer certificate is not included in the PKCS#7 structure")

    def verify_signatures(self, what: str) -> tuple[x509.Certificate, ...]:
        """Check every signer's signature; return the signer certificates."""
        if not self.signers:
            raise TrustError(f"{what} has no signer")
        certificates = []
        for signer in self.signers:
            try:
                certificates.append(self._verify_signer(signer, what))
            except (ValueError, UnsupportedAlgorithm) as error:  # parses, but its key is unusable
                reason = " ".join(str(error).split())
                raise TrustError(f"{what} holds an unusable signer certificate: {reason}") from None
        return tuple(certificates)

    def _verify_signer(self, signer: SignerInfo, what: str) -> x509.Certificate:
        certificate = self.signer_certificate(signer, what)
        digest = DIGESTS.get(signer.digest_algorithm)
        if digest is None:
            raise TrustError(f"{what}: unsupported digest algorithm {signer.digest_algorithm}")
        if signer.signed_attributes is not None:
            self._check_signed_attributes(signer.signed_attributes, digest, what)
        message = signer.signed_message(self.content)
        key = certificate.public_key()
        subject = subject_text(certificate)
        try:
            if signer.signature_algorithm in RSA_SIGNATURES and isinstance(key, rsa.RSAPublicKey):
                key.verify(signer.signature, message, padding.PKCS1v15(), digest())
            elif signer.signature_algorithm in ECDSA_SIGNATURES and isinstance(
                key, ec.EllipticCurvePublicKey
            ):
                key.verify(signer.signature, message, ec.ECDSA(digest()))
            else:
                raise TrustError(
                    f"{what}: unsupported signature algorithm {signer.signature_algorithm} "
                    f"for the {type(key).__name__.removeprefix('_')} of {subject}"
                )
        except InvalidSignature:
            raise TrustError(
                f"{what} is tampered: its signature does not verify with the signer "
                f"certificate ({subject})"
            ) from None
        return certificate

    def _check_signed_attributes(
        self, attributes: bytes, digest: Callable[[], hashes.HashAlgorithm], what: str
    ) -> None:
        try:
            values = _attribute_values(attributes)
            digests = values.get(MESSAGE_DIGEST_ATTRIBUTE, [])
            if len(digests) != 1:
                raise der.DerError("signed attributes need exactly one messageDigest")
            claimed = digests[0].octets()
            content_types = [value.oid() for value in values.get(CONTENT_TYPE_ATTRIBUTE, [])]
        except der.DerError as error:
            raise TrustError(f"{what} is malformed PKCS#7: {error}") from None
        if any(content_type != DATA for content_type in content_types):
            raise TrustError(f"{what}: the signed content type is not data")
        hasher = hashes.Hash(digest())
        hasher.update(self.content)
        if not hmac.compare_digest(hasher.finalize(), claimed):
            raise TrustError(
                f"{what} is tampered: the embedded content does not match its signed digest"
            )


# -- structure -------------------------------------------------------------------------


def _parse_signed_data(raw: bytes, what: str) -> SignedData:
    content_info = der.parse(raw).expect(der.SEQUENCE, "ContentInfo").children()
    content_type = content_info[0].oid() if content_info else ""
    if content_type != SIGNED_DATA:
        raise TrustError(f"{what} is not PKCS#7 signed data (content type {content_type})")
    if len(content_info) != 2:
        raise der.DerError("ContentInfo must hold a content type and content")
    (signed_data,) = _explicit(content_info[1], "SignedData")
    parts = signed_data.expect(der.SEQUENCE, "SignedData").children()
    if len(parts) < 4:
        raise der.DerError("SignedData is incomplete")
    parts[0].integer()  # version
    parts[1].expect(der.SET, "digestAlgorithms")
    content = _embedded_content(parts[2], what)
    certificates: list[x509.Certificate] = []
    for part in parts[3:-1]:
        if part.tag == der.context(0):
            certificates += _certificates(part, what)
        elif part.tag != der.context(1):  # [1] CRLs are not needed
            raise der.DerError(f"unexpected element 0x{part.tag:02x} in SignedData")
    signer_infos = parts[-1].expect(der.SET, "signerInfos").children()
    signers = tuple(_signer_info(info) for info in signer_infos)
    return SignedData(content, tuple(certificates), signers)


def _explicit(element: der.Element, what: str) -> list[der.Element]:
    children = element.expect(der.context(0), what).children()
    if len(children) != 1:
        raise der.DerError(f"{what}: expected one element inside [0]")
    return children


def _embedded_content(encapsulated: der.Element, what: str) -> bytes:
    parts = encapsulated.expect(der.SEQUENCE, "contentInfo").children()
    content_type = parts[0].oid() if parts else ""
    if content_type != DATA:
        raise TrustError(f"{what}: the signed content type {content_type} is not data")
    if len(parts) < 2:
        raise TrustError(f"{what} carries no content (a detached signature)")
    (octets,) = _explicit(parts[1], "content")
    return octets.octets()


def _certificates(element: der.Element, what: str) -> list[x509.Certificate]:
    certificates = []
    for child in element.children():
        if child.tag != der.SEQUENCE:
            continue  # attribute or other certificate formats: never signers here
        try:
            certificates.append(x509.load_der_x509_certificate(child.encoding))
        except Exception as error:  # ValueError, InvalidVersion, ...: all unreadable
            raise TrustError(f"{what} holds an unreadable certificate: {error}") from None
    return certificates


def _algorithm(element: der.Element, what: str) -> str:
    parts = element.expect(der.SEQUENCE, what).children()
    if not parts:
        raise der.DerError(f"{what} is empty")
    return parts[0].oid()


def _signer_info(element: der.Element) -> SignerInfo:
    parts = element.expect(der.SEQUENCE, "SignerInfo").children()
    if len(parts) < 5:
        raise der.DerError("SignerInfo is incomplete")
    parts[0].integer()  # version
    issuer = serial = key_identifier = None
    identifier = parts[1]
    if identifier.tag == der.context(0, constructed=False):
        key_identifier = identifier.content
    else:
        name_and_serial = identifier.expect(der.SEQUENCE, "issuerAndSerialNumber").children()
        if len(name_and_serial) != 2:
            raise der.DerError("issuerAndSerialNumber must hold a name and a serial number")
        issuer = name_and_serial[0].expect(der.SEQUENCE, "issuer").encoding
        serial = name_and_serial[1].integer()
    digest_algorithm = _algorithm(parts[2], "digestAlgorithm")
    rest = parts[3:]
    signed_attributes = None
    if rest[0].tag == der.context(0):
        signed_attributes = rest.pop(0).content
    if len(rest) < 2:
        raise der.DerError("SignerInfo lacks its signature")
    signature_algorithm = _algorithm(rest[0], "signatureAlgorithm")
    signature = rest[1].expect(der.OCTET_STRING, "signature").content
    return SignerInfo(
        issuer,
        serial,
        key_identifier,
        digest_algorithm,
        signed_attributes,
        signature_algorithm,
        signature,
    )


def _attribute_values(attributes: bytes) -> dict[str, list[der.Element]]:
    values: dict[str, list[der.Element]] = {}
    for attribute in der.parse(_der_set(attributes)).children():
        parts = attribute.expect(der.SEQUENCE, "Attribute").children()
        if len(parts) != 2:
            raise der.DerError("an attribute must hold a type and a set of values")
        values.setdefault(parts[0].oid(), []).extend(parts[1].expect(der.SET, "values").children())
    return values


def _der_set(content: bytes) -> bytes:
    """``SET`` around ``content``: how signed attributes are encoded for signing."""
    return bytes([der.SET]) + der.encode_length(len(content)) + content


def _issuer_der(certificate: x509.Certificate) -> bytes:
    """The issuer Name exactly as encoded in the certificate."""
    fields = der.parse(certificate.tbs_certificate_bytes).children()
    if fields and fields[0].tag == der.context(0):
        fields = fields[1:]  # explicit version
    return fields[2].encoding  # serialNumber, signature, issuer


def _subject_key_identifier(certificate: x509.Certificate) -> bytes | None:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return None
    return extension.value.digest
