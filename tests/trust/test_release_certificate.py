"""The release manager's certificate read without cryptography.x509: the same DER bytes
and public key as cryptography's full parse, for the real fixtures' certificates."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from shrinkwrap_async.exitcodes import TrustError
from shrinkwrap_async.hashing import Algorithm
from shrinkwrap_async.trust.chain import CERTIFICATE_MAX_SIZE, load_certificate
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


def test_a_stored_certificate_is_inflated_within_a_bound(fixtures_dir: Path) -> None:
    """The object as stored: the fixture's loads; one that inflates past the bound (a real
    certificate followed by 2 MiB of padding, 2 KiB stored) is refused before it is all in
    memory; a truncated stream is no certificate."""
    pem = (fixtures_dir / "keys" / "private" / "fix1.test.local.crt").read_bytes()
    stored = zlib.compress(pem)
    assert load_certificate(stored, Algorithm.SHA1.hash(stored))[1].der
    bomb = zlib.compress(pem + b"\n" * (2 << 20), 9)
    assert len(bomb) < 8192
    with pytest.raises(TrustError, match=f"inflates to more than {CERTIFICATE_MAX_SIZE} bytes"):
        load_certificate(bomb, Algorithm.SHA1.hash(bomb))
    cut = stored[: len(stored) // 2]
    with pytest.raises(TrustError, match="is not a PEM certificate"):
        load_certificate(cut, Algorithm.SHA1.hash(cut))
