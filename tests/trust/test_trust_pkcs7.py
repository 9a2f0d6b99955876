"""PKCS#7 whitelists (``Vpkcs7``) and ``Wcachain``, over HTTP, against a test CA.

Repositories are written by the test publisher; ``write_pkcs7_whitelist`` then replaces
their whitelist by a ``Vpkcs7`` one and its ``.cvmfswhitelist.pkcs7``, signed by a
certificate from a test CA whose directory is ``CVMFS_TRUSTED_CERTS``. Each attack reaches
exactly the check it is about and gets its own message.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from shrinkwrap_async import cli
from shrinkwrap_async.config.settings import ClientSettings, default_trusted_certs
from shrinkwrap_async.exitcodes import ConfigError, ExitCode, TrustError
from shrinkwrap_async.hashing import Algorithm
from shrinkwrap_async.network.fetcher import Fetcher
from shrinkwrap_async.testing.publish import Publisher, PublishOptions
from shrinkwrap_async.testing.servers import StaticServer
from shrinkwrap_async.testing.shared import write_client_config
from shrinkwrap_async.testing.signing import (
    CertificateAuthority,
    RepositoryKeys,
    fingerprint,
    install_ca_issued_certificate,
    sign_pkcs7,
    sign_whitelist_body,
    whitelist_body,
    write_pkcs7_whitelist,
)
from shrinkwrap_async.trust import der
from shrinkwrap_async.trust.castore import TrustedCAs
from shrinkwrap_async.trust.chain import TrustedRoot, establish_trust, verify_pkcs7_whitelist
from shrinkwrap_async.trust.whitelist import Whitelist

FQRN = "pkcs7.test.local"
PKCS7 = ".cvmfswhitelist.pkcs7"
WHITELIST = ".cvmfswhitelist"
SHA1 = Algorithm.SHA1
DATA_OID = bytes.fromhex("2a864886f70d010701")  # 1.2.840.113549.1.7.1


# -- repositories ------------------------------------------------------------------------


def _publish(out: Path, ca: CertificateAuthority | None = None) -> Path:
    """A small repository; with ``ca`` its release-manager certificate comes from that CA."""
    source = out.parent / f"{out.name}-source"
    (source / "sw").mkdir(parents=True)
    (source / "README.txt").write_text("signed by a CA\n")
    (source / "sw" / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    (source / "latest").symlink_to("sw")
    if ca is not None:
        install_ca_issued_certificate(out / "keys", FQRN, ca)
    Publisher(out, FQRN, PublishOptions(workers=0)).publish(source)
    return out


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("Test Grid CA")


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _publish(tmp_path_factory.mktemp("self-signed") / "server")


@pytest.fixture(scope="module")
def published_ca_issued(tmp_path_factory: pytest.TempPathFactory, ca: CertificateAuthority) -> Path:
    return _publish(tmp_path_factory.mktemp("ca-issued") / "server", ca)


@dataclasses.dataclass
class Site:
    """A writable copy of a published repository, and a CA directory trusting ``ca``."""

    root: Path
    keys: RepositoryKeys
    ca: CertificateAuthority
    ca_dir: Path

    @property
    def repository(self) -> Path:
        return self.root / "cvmfs" / FQRN

    def write(self, name: str, data: bytes) -> None:
        (self.repository / name).write_bytes(data)

    def read(self, name: str) -> bytes:
        return (self.repository / name).read_bytes()

    def body(
        self, *, days: int = 30, cachain: bool = False, fingerprints: list[str] | None = None
    ) -> bytes:
        listed = fingerprints or [fingerprint(self.keys.certificate_pem, SHA1)]
        return whitelist_body(FQRN, listed, days=days, pkcs7=True, cachain=cachain)


def _site(published: Path, directory: Path, ca: CertificateAuthority) -> Site:
    root = directory / "server"
    shutil.copytree(published, root, symlinks=True)
    ca_dir = directory / "certificates"
    ca_dir.mkdir()
    (ca_dir / "testca.pem").write_bytes(ca.certificate_pem)
    (ca_dir / "testca.signing_policy").write_text("access_id_CA X509 '/CN=Test Grid CA'\n")
    site = Site(root, RepositoryKeys.load_or_create(root / "keys", FQRN), ca, ca_dir)
    write_pkcs7_whitelist(site.repository, site.keys, SHA1, ca)
    return site


@pytest.fixture
def site(published: Path, tmp_path: Path, ca: CertificateAuthority) -> Site:
    return _site(published, tmp_path, ca)


@pytest.fixture
async def server(site: Site) -> AsyncIterator[StaticServer]:
    async with StaticServer(site.root) as server:
        yield server


async def trust(
    server: StaticServer, site: Site, *, trusted: tuple[Path, ...] | None = None
) -> TrustedRoot:
    settings = ClientSettings.for_repository(
        FQRN,
        server.repository_url(FQRN),
        [site.keys.public_key_path],
        trusted_certs=(site.ca_dir,) if trusted is None else trusted,
        max_retries=0,
        timeout=5,
        timeout_direct=5,
    )
    async with Fetcher(settings) as fetcher:
        return await establish_trust(fetcher, settings)


async def refused(server: StaticServer, site: Site, **kwargs: tuple[Path, ...]) -> str:
    with pytest.raises(TrustError) as caught:
        await trust(server, site, **kwargs)
    assert caught.value.exit_code == ExitCode.TRUST
    message = str(caught.value)
    assert message and "\n" not in message
    return message


def pem_to_der(pem: bytes) -> bytes:
    body = re.search(rb"-----BEGIN PKCS7-----(.*?)-----END PKCS7-----", pem, re.DOTALL)
    assert body is not None
    return base64.b64decode(b"".join(body.group(1).split()))


def der_to_pem(raw: bytes) -> bytes:
    text = base64.encodebytes(raw).replace(b"\n", b"")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return b"-----BEGIN PKCS7-----\n" + b"\n".join(lines) + b"\n-----END PKCS7-----\n"


# -- it works ------------------------------------------------------------------------------


async def test_pkcs7_whitelist_verifies(server: StaticServer, site: Site) -> None:
    root = await trust(server, site)
    assert root.fqrn == root.whitelist.fqrn == FQRN
    assert root.whitelist.signed is None  # the copy signed in the PKCS#7 structure
    assert root.certificate_pem == site.keys.certificate_pem
    base = f"cvmfs/{FQRN}/"
    assert server.requests[base + PKCS7] == 1
    assert server.requests[base + WHITELIST] == server.requests[base + ".cvmfspublished"] == 1
    assert not any(path.endswith("/" + PKCS7[1:]) for path in server.requests)  # client's URL


async def test_fingerprints_come_from_the_signed_copy(server: StaticServer, site: Site) -> None:
    """The unsigned copy may list anything; only the PKCS#7 content counts."""
    foreign = CertificateAuthority.create("elsewhere").certificate_pem
    site.write(WHITELIST, site.body(fingerprints=[fingerprint(foreign, SHA1)]))  # unsigned
    await trust(server, site)
    signer, key = site.ca.issue("signer", uris=[f"cvmfs:{FQRN}"])
    site.write(WHITELIST, site.body())
    site.write(PKCS7, sign_pkcs7(site.body(fingerprints=[fingerprint(foreign, SHA1)]), signer, key))
    message = await refused(server, site)
    assert message.startswith("certificate not on whitelist")
    assert f"is not listed in the whitelist signed in {PKCS7} of {FQRN}" in message


async def test_signer_from_an_intermediate_ca(
    server: StaticServer, site: Site, ca: CertificateAuthority
) -> None:
    intermediate = CertificateAuthority.create("Test Issuing CA", parent=ca)
    signer, key = intermediate.issue("signer", uris=[f"cvmfs:{FQRN}"])
    chain = [intermediate.certificate]
    site.write(PKCS7, sign_pkcs7(site.body(), signer, key, intermediates=chain))
    await trust(server, site)
    site.write(PKCS7, sign_pkcs7(site.body(), signer, key))
    assert "is not from a CA in CVMFS_TRUSTED_CERTS" in await refused(server, site)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_openssl_streamed_signature_verifies(
    server: StaticServer, site: Site, tmp_path: Path
) -> None:
    """``openssl smime -sign -stream`` writes BER (indefinite lengths, chunked content)."""
    signer, key = site.ca.issue("openssl signer", uris=[f"cvmfs:{FQRN}"])
    body = site.body()  # once: it is dated to the second
    files = {"content": body, "signer.pem": signer.public_bytes(serialization.Encoding.PEM)}
    files["signer.key"] = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    command = ["openssl", "smime", "-sign", "-binary", "-nodetach", "-stream", "-outform", "PEM"]
    command += ["-in", "content", "-signer", "signer.pem", "-inkey", "signer.key"]
    signed = subprocess.run(command, cwd=tmp_path, check=True, capture_output=True).stdout
    assert der.parse(pem_to_der(signed)).encoding[1] == 0x80  # indefinite length
    site.write(PKCS7, signed)
    root = await trust(server, site)
    assert root.whitelist.raw == body


# -- end to end ------------------------------------------------------------------------------


async def _cli(*argv: str) -> int:
    return await asyncio.get_running_loop().run_in_executor(None, cli.main, list(argv))


async def test_export_end_to_end(
    server: StaticServer, site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = f"CVMFS_TRUSTED_CERTS={site.ca_dir}\n"
    config = write_client_config(tmp_path / "client", server.url, site.root / "keys", extra=extra)
    spec = tmp_path / "all.spec"
    spec.write_text("/*\n")
    dest = tmp_path / "dest"
    argv = ["export", "-r", FQRN, "-f", str(config), "-t", str(spec), "-x", str(dest)]
    assert await _cli(*argv, "--json", "-q") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["files"] == 2
    assert (dest / FQRN / "README.txt").read_text() == "signed by a CA\n"
    assert (dest / FQRN / "latest").readlink() == Path("sw")

    # Unchanged: the signed copy of this very whitelist is verified again from the cache,
    # so the run costs the two requests of any unchanged repository.
    server.requests.clear()
    assert await _cli(*argv, "--json", "-q") == 0
    assert json.loads(capsys.readouterr().out)["up_to_date"] is True
    assert sum(server.requests.values()) == 2 and not server.requests[f"cvmfs/{FQRN}/{PKCS7}"]

    # A tampered PKCS#7 whitelist, fetched by a client without it in its cache: exit 3 and
    # nothing in the tree.
    site.write(PKCS7, site.read(PKCS7).replace(b"\n-----END", b"AAAA\n-----END"))
    fresh = write_client_config(tmp_path / "fresh", server.url, site.root / "keys", extra=extra)
    other = tmp_path / "other"
    argv[4], argv[-1] = str(fresh), str(other)
    assert await _cli(*argv, "-q") == ExitCode.TRUST
    assert not (other / FQRN).exists()


# -- each failure refused with its own message -----------------------------------------------


async def test_tampered_content(server: StaticServer, site: Site) -> None:
    raw = pem_to_der(site.read(PKCS7))
    original = fingerprint(site.keys.certificate_pem, SHA1).encode()
    changed = (b"0" if original[:1] != b"0" else b"1") + original[1:]
    assert raw.count(original) == 1
    site.write(PKCS7, der_to_pem(raw.replace(original, changed)))
    message = await refused(server, site)
    assert message == (
        f"{PKCS7} is tampered: the embedded content does not match its signed digest"
    )


async def test_tampered_signature(server: StaticServer, site: Site) -> None:
    raw = bytearray(pem_to_der(site.read(PKCS7)))
    raw[-1] ^= 0x01  # the last byte of the signature (no unsigned attributes follow)
    site.write(PKCS7, der_to_pem(bytes(raw)))
    message = await refused(server, site)
    assert "is tampered: its signature does not verify with the signer certificate" in message


async def test_signer_not_from_a_trusted_ca(server: StaticServer, site: Site) -> None:
    rogue = CertificateAuthority.create("Rogue CA")
    write_pkcs7_whitelist(site.repository, site.keys, SHA1, rogue)
    message = await refused(server, site)
    assert message == (
        f"{PKCS7} of {FQRN}: signer certificate CN={FQRN} whitelist signer is not from a CA "
        "in CVMFS_TRUSTED_CERTS (no chain from its issuer CN=Rogue CA)"
    )


async def test_expired_signer_certificate(server: StaticServer, site: Site) -> None:
    past = datetime.now(UTC) - timedelta(days=10)
    signer, key = site.ca.issue("old signer", uris=[f"cvmfs:{FQRN}"], days=2, now=past)
    site.write(PKCS7, sign_pkcs7(site.body(), signer, key))
    message = await refused(server, site)
    assert message == (
        f"{PKCS7} of {FQRN}: signer certificate CN=old signer does not verify against "
        "CVMFS_TRUSTED_CERTS (validation failed: cert is not valid at validation time)"
    )


async def test_revoked_signer(server: StaticServer, site: Site) -> None:
    signer = write_pkcs7_whitelist(site.repository, site.keys, SHA1, site.ca)
    (site.ca_dir / "testca.r0").write_bytes(site.ca.revocation_list([signer]))
    message = await refused(server, site)
    assert message == (
        f"{PKCS7} of {FQRN}: signer certificate CN={FQRN} whitelist signer is revoked "
        f"(serial {signer.serial_number:x}, in a CRL of CN=Test Grid CA)"
    )


async def test_wrong_subject_alternative_name(server: StaticServer, site: Site) -> None:
    write_pkcs7_whitelist(site.repository, site.keys, SHA1, site.ca, uri="cvmfs:other.test.local")
    message = await refused(server, site)
    assert message == (
        f"{PKCS7} of {FQRN}: no signer certificate has the subjectAltName URI "
        f"'cvmfs:{FQRN}' (found: 'cvmfs:other.test.local')"
    )


async def test_expired_embedded_whitelist(server: StaticServer, site: Site) -> None:
    signer, key = site.ca.issue("signer", uris=[f"cvmfs:{FQRN}"])
    site.write(PKCS7, sign_pkcs7(site.body(days=-2), signer, key))
    message = await refused(server, site)
    assert message.startswith(f"the whitelist signed in {PKCS7} of {FQRN} expired at ")


async def test_expired_outer_whitelist(server: StaticServer, site: Site) -> None:
    """As the client, the unsigned copy's expiry counts too."""
    site.write(WHITELIST, sign_whitelist_body(site.body(days=-2), site.keys, SHA1))
    message = await refused(server, site)
    assert message.startswith(f"{WHITELIST} of {FQRN} expired at ")


async def test_embedded_whitelist_of_another_repository(server: StaticServer, site: Site) -> None:
    signer, key = site.ca.issue("signer", uris=[f"cvmfs:{FQRN}"])
    body = site.body().replace(f"N{FQRN}\n".encode(), b"Nother.test.local\n")
    site.write(PKCS7, sign_pkcs7(body, signer, key))
    message = await refused(server, site)
    assert message.startswith(
        f"repository name mismatch: the whitelist signed in {PKCS7} is for 'other"
    )


async def test_crlf_content(server: StaticServer, site: Site) -> None:
    signer, key = site.ca.issue("signer", uris=[f"cvmfs:{FQRN}"])
    site.write(PKCS7, sign_pkcs7(site.body().replace(b"\n", b"\r\n"), signer, key))
    assert "has CRLF line endings" in await refused(server, site)


async def test_missing_pkcs7_file(server: StaticServer, site: Site) -> None:
    (site.repository / PKCS7).unlink()
    message = await refused(server, site)
    assert message == (
        f"{WHITELIST} of {FQRN} requires PKCS#7 verification (Vpkcs7), "
        f"but the server has no {PKCS7} (404)"
    )


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "is empty"),
        (b"hello\n", "is not PEM"),
        (b"-----BEGIN CMS-----\nMA==\n-----END CMS-----\n", "holds a PEM 'CMS' block"),
        (b"-----BEGIN PKCS7-----\n!!\n-----END PKCS7-----\n", "bad base64"),
        (der_to_pem(b"\x30\x03\x02\x01\x01"), "is malformed PKCS#7"),
        (der_to_pem(b"\x30\x0b\x06\x09" + DATA_OID), "is not PKCS#7 signed data"),
    ],
)
async def test_unreadable_pkcs7_file(
    server: StaticServer, site: Site, data: bytes, problem: str
) -> None:
    site.write(PKCS7, data)
    message = await refused(server, site)
    assert message.startswith(PKCS7) and problem in message


async def test_detached_signature(server: StaticServer, site: Site) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import pkcs7

    signer, key = site.ca.issue("signer", uris=[f"cvmfs:{FQRN}"])
    options = [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]
    detached = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(site.body())
        .add_signer(signer, key, hashes.SHA256())
        .sign(serialization.Encoding.PEM, options)
    )
    site.write(PKCS7, detached)
    assert "carries no content (a detached signature)" in await refused(server, site)


# -- Wcachain ------------------------------------------------------------------------------


async def test_wcachain_refuses_a_self_signed_publisher_certificate(
    server: StaticServer, site: Site
) -> None:
    write_pkcs7_whitelist(site.repository, site.keys, SHA1, site.ca, cachain=True)
    message = await refused(server, site)
    assert message == (
        f"certificate of {FQRN} (CN={FQRN} CernVM-FS Release Managers) is not from a CA in "
        f"CVMFS_TRUSTED_CERTS (no chain from its issuer CN={FQRN} CernVM-FS Release Managers)"
        ", but the whitelist requires it (Wcachain)"
    )


@pytest.mark.parametrize("vpkcs7", [True, False], ids=["Vpkcs7", "rsa"])
async def test_wcachain_accepts_a_ca_issued_publisher_certificate(
    published_ca_issued: Path, tmp_path: Path, ca: CertificateAuthority, vpkcs7: bool
) -> None:
    site = _site(published_ca_issued, tmp_path, ca)
    if vpkcs7:
        write_pkcs7_whitelist(site.repository, site.keys, SHA1, ca, cachain=True)
    else:  # Wcachain on a whitelist signed with the master key
        listed = [fingerprint(site.keys.certificate_pem, SHA1)]
        body = whitelist_body(FQRN, listed, days=30, cachain=True)
        site.write(WHITELIST, sign_whitelist_body(body, site.keys, SHA1))
        (site.repository / PKCS7).unlink()
    async with StaticServer(site.root) as server:
        root = await trust(server, site)
        assert root.whitelist.cachain
        other_ca = tmp_path / "other-ca.pem"
        other_ca.write_bytes(CertificateAuthority.create("Other CA").certificate_pem)
        if vpkcs7:  # the whitelist signer's CA is trusted, the publisher's is not
            trusted = (site.ca_dir, other_ca)
            (site.ca_dir / "testca.pem").write_bytes(b"")
            intermediate = CertificateAuthority.create("Signer CA")
            (site.ca_dir / "signer-ca.pem").write_bytes(intermediate.certificate_pem)
            signer, key = intermediate.issue("signer", uris=[f"cvmfs:{FQRN}"])
            site.write(PKCS7, sign_pkcs7(site.body(cachain=True), signer, key))
        else:
            trusted = (other_ca,)
        message = await refused(server, site, trusted=trusted)
        assert "(Wcachain)" in message


# -- configuration ---------------------------------------------------------------------------


async def test_missing_ca_store_is_a_config_error(
    server: StaticServer, site: Site, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for trusted in [(), (empty,)]:
        with pytest.raises(ConfigError) as caught:
            await trust(server, site, trusted=trusted)
        assert caught.value.exit_code == ExitCode.USAGE
        message = str(caught.value)
        assert "\n" not in message and "requires trusted CA certificates (Vpkcs7)" in message
        assert "CVMFS_TRUSTED_CERTS" in message


def test_trusted_certs_setting(tmp_path: Path, site: Site) -> None:
    keys = site.root / "keys"
    config = tmp_path / "conf" / "client.conf"
    config.parent.mkdir()
    base = f"CVMFS_SERVER_URL=http://127.0.0.1:1/cvmfs/@fqrn@\nCVMFS_KEYS_DIR={keys}\n"

    def load(extra: str) -> ClientSettings:
        config.write_text(base + extra)
        return ClientSettings.load([config], FQRN)

    assert load("").trusted_certs == default_trusted_certs()
    assert load("CVMFS_TRUSTED_CERTS=\n").trusted_certs == ()
    (tmp_path / "conf" / "cas").mkdir()
    both = load(f"CVMFS_TRUSTED_CERTS=cas:{site.ca_dir}/testca.pem\n").trusted_certs
    assert both == (tmp_path / "conf" / "cas", site.ca_dir / "testca.pem")
    with pytest.raises(ConfigError) as caught:
        load("CVMFS_TRUSTED_CERTS=/nonexistent/certificates\n")
    message = str(caught.value)
    assert message.startswith(f"{config}:3: CVMFS_TRUSTED_CERTS entry /nonexistent/certificates")
    assert "does not exist" in message and "\n" not in message
    programmatic = ClientSettings.for_repository(FQRN, "http://127.0.0.1:1", trusted_certs="x")
    assert programmatic.trusted_certs == (Path("x"),)


# -- CA rules ----------------------------------------------------------------------------------


def _grid_style_ca(*, key_usage: x509.KeyUsage | None) -> CertificateAuthority:
    """A root CA with basicConstraints not critical and the given (or no) keyUsage."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Grid Style CA")])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=False)
    )
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=False)
    return CertificateAuthority("Grid Style CA", key, builder.sign(key, hashes.SHA256()))


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    flags = dict.fromkeys(
        ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment"],
        False,
    )
    return x509.KeyUsage(
        **flags,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


@pytest.mark.parametrize(
    ("key_usage", "accepted"),
    [(None, True), (_key_usage(cert_sign=True), True), (_key_usage(cert_sign=False), False)],
    ids=["no-keyUsage", "keyCertSign", "no-keyCertSign"],
)
def test_ca_rules(key_usage: x509.KeyUsage | None, accepted: bool) -> None:
    """Grid CAs: basicConstraints need not be critical, keyUsage need not be present."""
    ca = _grid_style_ca(key_usage=key_usage)
    leaf, _ = ca.issue("leaf")
    cas = TrustedCAs((ca.certificate,), (), ())
    if accepted:
        assert cas.verify(leaf, [], datetime.now(UTC))[-1] == ca.certificate
    else:
        with pytest.raises(TrustError, match="does not verify against CVMFS_TRUSTED_CERTS"):
            cas.verify(leaf, [], datetime.now(UTC))


def test_an_end_entity_certificate_is_no_ca() -> None:
    """A trusted certificate without basicConstraints cA cannot issue (nor a whitelist signer)."""
    not_a_ca, key = CertificateAuthority.create("root").issue("not a CA")
    leaf, _ = CertificateAuthority("not a CA", key, not_a_ca).issue("leaf")
    with pytest.raises(TrustError, match="CA certificate has no basicConstraints"):
        TrustedCAs((not_a_ca,), (), ()).verify(leaf, [], datetime.now(UTC))


# -- corrupted structures never fail other than with a TrustError ----------------------------


@pytest.fixture(scope="module")
def signed_example(ca: CertificateAuthority) -> tuple[bytes, TrustedCAs]:
    signer, key = ca.issue("signer", uris=["cvmfs:x"])
    pem = sign_pkcs7(b"20240101000000\nE20990101000000\nNx\n", signer, key)
    return pem_to_der(pem), TrustedCAs((ca.certificate,), (), ())


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_corrupted_structures_are_trust_errors(
    signed_example: tuple[bytes, TrustedCAs], data: st.DataObject
) -> None:
    valid, cas = signed_example
    raw = bytearray(valid)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(len(raw) // 2, len(raw)))
    outer = Whitelist.parse_content(b"20240101000000\nE20990101000000\nNx\nVpkcs7\n", WHITELIST)
    now = datetime.now(UTC)
    try:
        verify_pkcs7_whitelist(outer, der_to_pem(bytes(raw[:cut])), "x", cas, now)
    except TrustError as error:
        assert "\n" not in str(error)


def test_unmodified_example_verifies(signed_example: tuple[bytes, TrustedCAs]) -> None:
    valid, cas = signed_example
    outer = Whitelist.parse_content(b"20240101000000\nE20990101000000\nNx\nVpkcs7\n", WHITELIST)
    whitelist = verify_pkcs7_whitelist(outer, der_to_pem(valid), "x", cas, datetime.now(UTC))
    assert whitelist.fqrn == "x" and whitelist.fingerprints == ()


@pytest.mark.parametrize("tag", [0x00, 0x03, 0x05])
def test_a_signer_name_that_cannot_be_read_is_a_trust_error(
    signed_example: tuple[bytes, TrustedCAs], tag: int
) -> None:
    """Found by the corruption test: a name whose string tag is changed still parses, but
    cryptography raises KeyError or TypeError when it is read or printed."""
    valid, cas = signed_example
    raw = bytearray(valid)
    raw[raw.rindex(b"\x0c\x06signer")] = tag  # the signer certificate's subject CN
    outer = Whitelist.parse_content(b"20240101000000\nE20990101000000\nNx\nVpkcs7\n", WHITELIST)
    with pytest.raises(TrustError) as raised:
        verify_pkcs7_whitelist(outer, der_to_pem(bytes(raw)), "x", cas, datetime.now(UTC))
    assert "\n" not in str(raised.value)


def test_a_name_with_a_line_break_stays_on_one_line(
    signed_example: tuple[bytes, TrustedCAs],
) -> None:
    """Names come from the network: printed in a message, their control characters are
    escaped (an error is one line)."""
    _, cas = signed_example
    rogue = CertificateAuthority.create("Rogue\nCA")
    signer, key = rogue.issue("signer", uris=["cvmfs:x"])
    pem = sign_pkcs7(b"20240101000000\nE20990101000000\nNx\n", signer, key)
    outer = Whitelist.parse_content(b"20240101000000\nE20990101000000\nNx\nVpkcs7\n", WHITELIST)
    with pytest.raises(TrustError, match=r"Rogue\\x0aCA") as raised:
        verify_pkcs7_whitelist(outer, pem, "x", cas, datetime.now(UTC))
    assert "\n" not in str(raised.value)
