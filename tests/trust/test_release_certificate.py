"""The release manager's certificate read without cryptography.x509: the same DER bytes
and public key as cryptography's full parse, for the real fixtures' certificates."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from shrinkwrap_async.trust.release_certificate import ReleaseCertificate


@pytest.mark.parametrize("fqrn", ["fix1.test.local", "fix2.test.local", "fix3.test.local"])
def test_der_and_key_agree_with_cryptography(fixtures_dir: Path, fqrn: str) -> None:
    pem = (fixtures_dir / "keys" / "private" / f"{fqrn}.crt").read_bytes()
    light = ReleaseCertificate.from_pem(pem)
    full = x509.load_pem_x509_certificate(pem)
    assert light.der == full.public_bytes(serialization.Encoding.DER)
    assert light.public_key().public_numbers() == full.public_key().public_numbers()  # type: ignore[union-attr]
    assert light.x509() == full


@pytest.mark.parametrize(
    "pem",
    [
        b"",
        b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n",  # SEQUENCE{1}
        b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    ],
)
def test_what_is_not_a_certificate_is_a_value_error(pem: bytes) -> None:
    with pytest.raises(ValueError):
        ReleaseCertificate.from_pem(pem)
