"""The trust chain against the real fixture repositories and tampered copies of them.

Tampered copies are re-signed with the fixtures' private keys where the attack needs a
valid signature (an expired whitelist, a foreign certificate, a renamed manifest), so each
test reaches exactly the check it is about.
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from shrinkwrap_async.config.settings import ClientSettings
from shrinkwrap_async.exitcodes import ConfigError, ExitCode, TrustError, UnreachableError
from shrinkwrap_async.hashing import Algorithm, Digest
from shrinkwrap_async.network.fetcher import Fetcher
from shrinkwrap_async.testing.faultproxy import Fault, FaultProxy
from shrinkwrap_async.testing.servers import StaticServer
from shrinkwrap_async.trust.chain import (
    SIGNED_FILE_ATTEMPTS,
    TrustedRoot,
    establish_trust,
    verify_whitelist,
)
from shrinkwrap_async.trust.signature import SEPARATOR, load_master_key
from shrinkwrap_async.trust.whitelist import Whitelist

FIX1, FIX2, FIX3 = "fix1.test.local", "fix2.test.local", "fix3.test.local"
ROOTS = {
    FIX1: "33b8ca8ba43e54c03d90f309dbc51b95ee94cd20",
    FIX2: "3e51053cceea2f84aaac483a9b573c7d1873ea8e-shake128",
    FIX3: "89a06241bce20fc7f3789f1cad5809df3ac3df8c-rmd160",
}
ALGORITHMS = {FIX1: Algorithm.SHA1, FIX2: Algorithm.SHAKE128, FIX3: Algorithm.RMD160}
NOW = datetime(2030, 1, 1, tzinfo=UTC)


# -- signing helpers (the publisher's side, for tampered copies) ---------------------------


def private_key(fixtures: Path, name: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(
        (fixtures / "keys" / "private" / name).read_bytes(), password=None
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def letter_of(data: bytes) -> bytes:
    return data[: data.index(SEPARATOR) + 1]


def sign_whitelist(letter: bytes, master: rsa.RSAPrivateKey, algorithm: Algorithm) -> bytes:
    """``openssl pkeyutl -sign``: PKCS#1 type-1 padding around the hash line, no DigestInfo."""
    hash_line = algorithm.hash(letter).hex.encode()
    numbers = master.private_numbers()
    size = (master.key_size + 7) // 8
    block = b"\x00\x01" + b"\xff" * (size - 3 - len(hash_line)) + b"\x00" + hash_line
    signature = pow(int.from_bytes(block, "big"), numbers.d, numbers.public_numbers.n)
    return letter + b"--\n" + hash_line + b"\n" + signature.to_bytes(size, "big")


def sign_manifest(letter: bytes, key: rsa.RSAPrivateKey, algorithm: Algorithm) -> bytes:
    hash_line = algorithm.hash(letter).hex.encode()
    signature = key.sign(hash_line, padding.PKCS1v15(), hashes.SHA1())
    return letter + b"--\n" + hash_line + b"\n" + signature


def fingerprint(certificate_pem: bytes, algorithm: Algorithm) -> bytes:
    der = x509.load_pem_x509_certificate(certificate_pem).public_bytes(serialization.Encoding.DER)
    raw = algorithm.hash(der).raw.hex().upper()
    text = ":".join(raw[i : i + 2] for i in range(0, len(raw), 2))
    return (text + algorithm.suffix.upper()).encode()


# -- fixtures --------------------------------------------------------------------------------


def settings_for(
    server: StaticServer,
    fixtures: Path,
    fqrn: str,
    key_of: str | None = None,
    url_of: str | None = None,
    blacklist: Path | None = None,
    repository_tag: str | None = None,
    root_hash: str | None = None,
) -> ClientSettings:
    return ClientSettings.for_repository(
        fqrn,
        server.repository_url(url_of or fqrn),
        [fixtures / "keys" / f"{key_of or fqrn}.pub"],
        max_retries=0,
        timeout=5,
        timeout_direct=5,
        repository_tag=repository_tag,
        root_hash=Digest.from_hex(root_hash) if root_hash else None,
        **({"blacklist": blacklist} if blacklist is not None else {}),
    )


async def trust(
    server: StaticServer,
    fixtures: Path,
    fqrn: str,
    *,
    key_of: str | None = None,
    url_of: str | None = None,
    cache_dir: Path | None = None,
    now: datetime = NOW,
    blacklist: Path | None = None,
    repository_tag: str | None = None,
    root_hash: str | None = None,
) -> TrustedRoot:
    settings = settings_for(
        server, fixtures, fqrn, key_of, url_of, blacklist, repository_tag, root_hash
    )
    async with Fetcher(settings) as fetcher:
        return await establish_trust(fetcher, settings, cache_dir=cache_dir, now=now)


async def refused(server: StaticServer, fixtures: Path, fqrn: str = FIX1, **kwargs: object) -> str:
    with pytest.raises(TrustError) as caught:
        await trust(server, fixtures, fqrn, **kwargs)  # type: ignore[arg-type]
    assert caught.value.exit_code == ExitCode.TRUST
    message = str(caught.value)
    assert message and "\n" not in message
    return message


def repo_file(docroot: Path, fqrn: str, name: str) -> Path:
    return docroot / "cvmfs" / fqrn / name


def history_object(docroot: Path) -> tuple[bytes, Path]:
    """fix1's manifest line ``H<hash>`` and the served file of that history object."""
    manifest = repo_file(docroot, FIX1, ".cvmfspublished").read_bytes()
    line = next(line for line in letter_of(manifest).split(b"\n") if line.startswith(b"H"))
    text = line[1:].decode()
    return line, repo_file(docroot, FIX1, f"data/{text[:2]}/{text[2:]}H")


def resign_whitelist(docroot: Path, fixtures: Path, edit: Callable[[bytes], bytes]) -> None:
    """fix1's whitelist with its letter changed by ``edit``, validly signed by its master key."""
    path = repo_file(docroot, FIX1, ".cvmfswhitelist")
    master = private_key(fixtures, f"{FIX1}.masterkey")
    path.write_bytes(sign_whitelist(edit(letter_of(path.read_bytes())), master, Algorithm.SHA1))


def resign_manifest(
    docroot: Path,
    fixtures: Path,
    edit: Callable[[bytes], bytes] | None = None,
    *,
    fqrn: str = FIX1,
    algorithm: Algorithm = Algorithm.SHA1,
) -> None:
    """A manifest with its letter changed by ``edit`` (if given), validly signed by the
    repository's certificate with a hash line of ``algorithm``."""
    path = repo_file(docroot, fqrn, ".cvmfspublished")
    letter = letter_of(path.read_bytes())
    key = private_key(fixtures, f"{fqrn}.key")
    path.write_bytes(sign_manifest(edit(letter) if edit else letter, key, algorithm))


# -- the real repositories verify --------------------------------------------------------------


@pytest.mark.parametrize("fqrn", [FIX1, FIX2, FIX3])
async def test_fixture_repositories_verify(
    fixture_server: StaticServer, fixtures_dir: Path, fqrn: str, tmp_path: Path
) -> None:
    root = await trust(fixture_server, fixtures_dir, fqrn, cache_dir=tmp_path / "cache")
    assert root.root_catalog.hex == ROOTS[fqrn]
    assert root.root_catalog.algorithm is ALGORITHMS[fqrn]
    assert root.revision == (3 if fqrn == FIX1 else 2)
    assert root.fqrn == root.manifest.fqrn == root.whitelist.fqrn == fqrn
    assert root.certificate_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert root.certificate_pem == (fixtures_dir / "keys/private" / f"{fqrn}.crt").read_bytes()


async def test_unchanged_repository_costs_two_requests(
    fixture_server: StaticServer, fixtures_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = await trust(fixture_server, fixtures_dir, FIX2, cache_dir=cache)
    assert fixture_server.total_requests == 3
    fixture_server.requests.clear()
    second = await trust(fixture_server, fixtures_dir, FIX2, cache_dir=cache)
    assert second.root_catalog == first.root_catalog
    assert dict(fixture_server.requests) == {
        f"cvmfs/{FIX2}/.cvmfswhitelist": 1,
        f"cvmfs/{FIX2}/.cvmfspublished": 1,
    }


async def test_corrupt_cached_certificate_is_refetched(
    fixture_server: StaticServer, fixtures_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    await trust(fixture_server, fixtures_dir, FIX1, cache_dir=cache)
    (cached,) = (cache / "certificates").iterdir()
    cached.write_bytes(b"garbage")
    fixture_server.requests.clear()
    await trust(fixture_server, fixtures_dir, FIX1, cache_dir=cache)
    assert fixture_server.total_requests == 3


async def test_older_revision_verifies(
    fixture_server: StaticServer, fixtures_dir: Path, fixture_docroot: Path
) -> None:
    revision_a = fixtures_dir / "revisions" / FIX1 / "2" / ".cvmfspublished"
    repo_file(fixture_docroot, FIX1, ".cvmfspublished").write_bytes(revision_a.read_bytes())
    root = await trust(fixture_server, fixtures_dir, FIX1)
    assert root.revision == 2
    assert root.root_catalog.hex == "2c0a532d053941a164e5166a0e5e4e50086f27c0"


async def test_signed_files_damaged_on_the_wire_are_fetched_again(
    fixture_server: StaticServer, fixtures_dir: Path
) -> None:
    """Every path's first copy has a byte flipped in transit: the signed files fail their
    check and are asked for again with no-cache, the certificate fails its hash."""
    async with FaultProxy(faults={Fault.FLIP: 1.0}, max_faults_per_path=1) as proxy:
        settings = settings_for(fixture_server, fixtures_dir, FIX1)
        settings = dataclasses.replace(settings, proxy_groups=((proxy.url,),))
        async with Fetcher(settings) as fetcher:
            root = await establish_trust(fetcher, settings, now=NOW)
    assert root.root_catalog.hex == ROOTS[FIX1]
    assert proxy.applied[Fault.FLIP] == 3  # whitelist, manifest, certificate
    fresh = [path for path, headers in proxy.headers_seen if headers.get("Pragma") == "no-cache"]
    names = sorted(path.rsplit("/", 1)[1] for path in fresh)
    assert names[:2] == [".cvmfspublished", ".cvmfswhitelist"], names
    assert len(names) == 3 and names[2].endswith("X")  # the certificate's no-cache repeat
    assert fetcher.stats.no_cache_retries == 3


async def test_tampered_file_is_refused_after_bounded_fresh_attempts(
    fixture_server: StaticServer, fixtures_dir: Path, fixture_docroot: Path
) -> None:
    path = repo_file(fixture_docroot, FIX1, ".cvmfspublished")
    path.write_bytes(path.read_bytes().replace(b"\nS3\n", b"\nS4\n", 1))
    message = await refused(fixture_server, fixtures_dir)
    assert "is tampered" in message
    assert fixture_server.requests[f"cvmfs/{FIX1}/.cvmfspublished"] == SIGNED_FILE_ATTEMPTS


# -- each attack refused with its own message ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "line", "tampered"),
    [(".cvmfspublished", b"\nS3\n", b"\nS4\n"), (".cvmfswhitelist", b"\nE2036", b"\nE2037")],
)
async def test_tampered_signed_file(
    fixture_server: StaticServer,
    fixtures_dir: Path,
    fixture_docroot: Path,
    name: str,
    line: bytes,
    tampered: bytes,
) -> None:
    """One line changed, hash line and signature left as they were."""
    path = repo_file(fixture_docroot, FIX1, name)
    path.write_bytes(path.read_bytes().replace(line, tampered, 1))
    message = await refused(fixture_server, fixtures_dir)
    assert "is tampered" in message and name in message


async def test_tampered_manifest_with_recomputed_hash(
    fixture_server: StaticServer, fixtures_dir: Path, fixture_docroot: Path
) -> None:
    """Hash line made to match, but the signature is the original one."""
    path = repo_file(fixture_docroot, FIX1, ".cvmfspublished")
    data = path.read_bytes()
    letter = letter_of(data).replace(b"\nS3\n", b"\nS4\n", 1)
    rest = data[data.index(SEPARATOR) + len(SEPARATOR) :]
    signature = rest[rest.index(b"\n") + 1 :]
    path.write_bytes(
        letter + b"--\n" + Algorithm.SHA1.hash(letter).hex.encode() + b"\n" + signature
    )
    message = await refused(fixture_server, fixtures_dir)
    assert "signature does not verify with the repository certificate" in message


async def test_expired_whitelist_resigned(
    fixture_server: StaticServer, fixtures_dir: Path, fixture_docroot: Path
) -> None:
    resign_whitelist(
        fixture_docroot,
        fixtures_dir,
        lambda letter: re.sub(rb"\nE\d{14}\n", b"\nE20291231235959\n", letter),
    )
    message = await refused(fixture_server, fixtures_dir)
    assert "expired at 2029-12-31 23:00 UTC" in message


async def test_certificate_not_on_whitelist(
    fixture_server: StaticServer, fixtures_dir: Path, fixture_docroot: Path
) -> None:
    foreign = (fixtures_dir / "keys/private" / f"{FIX2}.crt").read_bytes()

    def list_only_foreign(letter: bytes) -> bytes:
        header = b"\n".join(letter.split(b"\n")[:3]) + b"\n"
        return header + fingerprint(foreign, Algorithm.SHA1) + b"\n"

    resign_whitelist(fixture_docroot, fixtures_dir, list_only_foreign)
    message = await refused(fixture_server, fixtures_dir)
    assert message.startswith("certificate not on whitelist")


@pytest.mark.parametrize("fqrn", [FIX1, FIX2, FIX3])
async def test_blacklisted_certificate_is_refused(
    fixture_server: StaticServer, fixtures_dir: Path, fqrn: str, tmp_path: Path
) -> None:
    """A fingerprint in the site's blacklist (in the certificate's algorithm, with a comment)
    refuses a certificate the whitelist lists; another certificate's fingerprint does not."""
    own = (fixtures_dir / "keys/private" / f"{fqrn}.crt").read_bytes()
    other = (fixtures_dir / "keys/private" / f"{FIX2 if fqrn == FIX1 else FIX1}.crt").read_bytes()
    algorithm = ALGORITHMS[fqrn]
    blacklist = tmp_path / "blacklist"
    blacklist.write_bytes(b"# site blacklist\n" + fingerprint(other, algorithm) + b"\n")
    root = await trust(fixture_server, fixtures_dir, fqrn, blacklist=blacklist)
    assert root.root_catalog.hex == ROOTS[fqrn]
    listed = fingerprint(own, algorithm)
    blacklist.write_bytes(b"# site blacklist\n" + listed + b" # key leaked\n")
    message = await refused(fixture_server, fixtures_dir, fqrn, blacklist=blacklist)
    assert message.startswith(f"the certificate of {fqrn} is blacklisted in {blacklist}")


@pytest.mark.parametrize(
    ("lines", "accepted"),
    [
        ([f"<{FIX1} 4"], False),
        ([f"<{FIX1}\t 9", f"<{FIX1} 2"], False),  # the highest floor counts
        ([f"<{FIX1} 3"], True),  # only revisions below 3
        ([f"<{FIX1} 4 "], True),  # something after the number: not a revision line
        ([f"<{FIX1}4"], True),
        ([f"<{FIX1}.other 9", "<fix2.test.local 9", f"{FIX1} 9"], True),
    ],
)
async def test_blacklisted_revision_is_refused(
    fixture_server: StaticServer,
    fixtures_dir: Path,
    tmp_path: Path,
    lines: list[str],
    accepted: bool,
) -> None:
    """``<fqrn N`` refuses the revisions of fqrn below N (fix1 serves revision 3), read as
    the client reads it; after the signatures, so the revision is one the publisher signed."""
    blacklist = tmp_path / "blacklist"
    blacklist.write_text("\n".join(lines) + "\n")
    if accepted:
        root = await trust(fixture_server, fixtures_dir, FIX1, blacklist=blacklist)
        assert root.revision == 3
        return
    message = await refused(fixture_server, fixtures_dir, FIX1, blacklist=blacklist)
    assert message.startswith(f"revision 3 of {FIX1} is blacklisted: {blacklist} refuses")


async def test_a_missing_blacklist_is_empty_an_unreadable_one_an_error(
    fixture_server: StaticServer, fixtures_dir: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-blacklist"
    root = await trust(fixture_server, fixtures_dir, FIX1, blacklist=missing)
    assert root.revision == 3
    with pytest.raises(ConfigError, match="cannot read the blacklist"):
        await trust(fixture_server, fixtures_dir, FIX1, blacklist=tmp_path)  # a directory


async def test_a_pinned_tag_resolves_through_the_history_database(
    fixture_server: StaticServer, fixtures_dir: Path
) -> None:
    root = await trust(fixture_server, fixtures_dir, FIX1, repository_tag="trunk-previous")
    assert (
        root.revision == 2 and root.root_catalog.hex == "2c0a532d053941a164e5166a0e5e4e50086f27c0"
    )
    assert root.manifest.revision == 3  # the signed manifest is still the newest
    assert root.pinned is not None and root.pinned.reason == "tag 'trunk-previous'"


async def test_a_pinned_root_hash_takes_its_revision_from_the_catalog(
    fixture_server: StaticServer, fixtures_dir: Path, fixture_docroot: Path, tmp_path: Path
) -> None:
    """As the client reads it once mounted: no history database is needed (here it is
    gone), and a second run finds the revision kept by hash (two requests)."""
    history_object(fixture_docroot)[1].unlink()
    pinned = "2c0a532d053941a164e5166a0e5e4e50086f27c0"
    cache = tmp_path / "cache"
    root = await trust(fixture_server, fixtures_dir, FIX1, root_hash=pinned, cache_dir=cache)
    assert root.revision == 2 and root.root_catalog.hex == pinned
    assert root.publish_time == 1795553237  # the catalog's last_modified
    fixture_server.requests.clear()
    again = await trust(fixture_server, fixtures_dir, FIX1, root_hash=pinned, cache_dir=cache)
    assert again.revision == 2 and fixture_server.total_requests == 2
    with pytest.raises(UnreachableError):  # a tag needs the history
        await trust(fixture_server, fixtures_dir, FIX1, repository_tag="trunk")


async def test_a_damaged_history_database_is_refused(
    fixture_server: StaticServer, fixtures_dir: Path, fixture_docroot: Path
) -> None:
    """Bytes that fail the manifest's H hash; then, under a re-signed manifest, an object
    with the right hash that is no SQLite database: exit 3, one line, each."""
    history, stored = history_object(fixture_docroot)
    stored.write_bytes(zlib.compress(b"tampered"))
    message = await refused(fixture_server, fixtures_dir, repository_tag="trunk")
    assert message.startswith(f"history database object of {FIX1} is corrupt")
    garbage = zlib.compress(b"not a database" * 100)
    digest = Algorithm.SHA1.hash(garbage)
    target = fixture_docroot / "cvmfs" / FIX1 / digest.object_path("H")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(garbage)
    resign_manifest(
        fixture_docroot,
        fixtures_dir,
        lambda letter: letter.replace(history, b"H" + digest.hex.encode()),
    )
    message = await refused(fixture_server, fixtures_dir, repository_tag="trunk")
    assert message.startswith(f"the history database of {FIX1} is unreadable")


async def test_wrong_master_key(fixture_server: StaticServer, fixtures_dir: Path) -> None:
    message = await refused(fixture_server, fixtures_dir, key_of=FIX2)
    assert "not signed by any configured master key" in message
    assert "CVMFS_PUBLIC_KEY" in message


async def test_repository_name_mismatch_whitelist(
    fixture_server: StaticServer, fixtures_dir: Path
) -> None:
    """Asking for fix1 at fix2's URL (with fix2's key): the whitelist names fix2."""
    message = await refused(fixture_server, fixtures_dir, key_of=FIX2, url_of=FIX2)
    assert message.startswith("repository name mismatch: .cvmfswhitelist is for 'fix2.test.local'")


async def test_repository_name_mismatch_manifest(
    fixture_server: StaticServer, fixtures_dir: Path, fixture_docroot: Path
) -> None:
    """A validly signed manifest that names another repository."""
    resign_manifest(
        fixture_docroot,
        fixtures_dir,
        lambda letter: letter.replace(b"\nNfix1.test.local\n", b"\nNfix9.test.local\n"),
    )
    message = await refused(fixture_server, fixtures_dir)
    assert message.startswith("repository name mismatch: .cvmfspublished is for 'fix9.test.local'")


@pytest.mark.parametrize("name", [".cvmfspublished", ".cvmfswhitelist"])
async def test_truncated_signature(
    fixture_server: StaticServer, fixtures_dir: Path, fixture_docroot: Path, name: str
) -> None:
    path = repo_file(fixture_docroot, FIX3, name)
    path.write_bytes(path.read_bytes()[:-40])
    message = await refused(fixture_server, fixtures_dir, FIX3)
    assert f"{name} signature is truncated" in message


async def test_resigned_manifest_verifies(
    fixture_server: StaticServer, fixtures_dir: Path, fixture_docroot: Path
) -> None:
    """The helpers are right: a re-signed, unchanged manifest (shake128) still verifies."""
    resign_manifest(fixture_docroot, fixtures_dir, fqrn=FIX2, algorithm=Algorithm.SHAKE128)
    wl = repo_file(fixture_docroot, FIX2, ".cvmfswhitelist")
    master = private_key(fixtures_dir, f"{FIX2}.masterkey")
    resigned = sign_whitelist(letter_of(wl.read_bytes()), master, Algorithm.SHAKE128)
    assert resigned == wl.read_bytes()  # PKCS#1 type 1 is deterministic: byte-identical
    root = await trust(fixture_server, fixtures_dir, FIX2)
    assert root.root_catalog.hex == ROOTS[FIX2]


async def test_manifest_hash_algorithm_must_be_the_repository_one(
    fixture_server: StaticServer, fixtures_dir: Path, fixture_docroot: Path
) -> None:
    resign_manifest(fixture_docroot, fixtures_dir, fqrn=FIX2, algorithm=Algorithm.SHA1)
    message = await refused(fixture_server, fixtures_dir, FIX2)
    assert "hash line uses sha1, the repository uses shake128" in message


async def test_pkcs7_whitelist_without_its_signature_file_refused(
    fixture_server: StaticServer, fixtures_dir: Path, fixture_docroot: Path
) -> None:
    def add_vpkcs7(letter: bytes) -> bytes:
        lines = letter.split(b"\n")
        return b"\n".join([*lines[:3], b"Vpkcs7", *lines[3:]])

    resign_whitelist(fixture_docroot, fixtures_dir, add_vpkcs7)
    message = await refused(fixture_server, fixtures_dir)
    assert "PKCS#7" in message and ".cvmfswhitelist.pkcs7" in message


@pytest.mark.parametrize(
    ("drop", "problem"),
    [(b"C", "lacks the required 'C' line"), (b"R", "'R'"), (b"D", "'D'"), (b"S", "'S'")],
)
async def test_manifest_missing_required_line(
    fixture_server: StaticServer,
    fixtures_dir: Path,
    fixture_docroot: Path,
    drop: bytes,
    problem: str,
) -> None:
    def drop_line(letter: bytes) -> bytes:
        return b"\n".join(line for line in letter.split(b"\n") if not line.startswith(drop))

    resign_manifest(fixture_docroot, fixtures_dir, drop_line)
    message = await refused(fixture_server, fixtures_dir)
    assert problem in message


@pytest.mark.parametrize(
    "revision",
    [b"9" * 5000, "\u00b2".encode(), b"-1"],
    ids=["5000 digits", "superscript", "negative"],
)
async def test_manifest_revision_not_a_number(
    fixture_server: StaticServer, fixtures_dir: Path, fixture_docroot: Path, revision: bytes
) -> None:
    """A signed manifest whose revision is no plain number (5,000 digits, a superscript
    digit) is a one-line trust error, not an exception from ``int``."""

    def set_revision(letter: bytes) -> bytes:
        lines = [b"S" + revision if line.startswith(b"S") else line for line in letter.split(b"\n")]
        return b"\n".join(lines)

    resign_manifest(fixture_docroot, fixtures_dir, set_revision)
    message = await refused(fixture_server, fixtures_dir)
    assert "line 'S' is not a number" in message


async def test_manifest_wrong_root_path_hash(
    fixture_server: StaticServer, fixtures_dir: Path, fixture_docroot: Path
) -> None:
    resign_manifest(
        fixture_docroot,
        fixtures_dir,
        lambda letter: letter.replace(
            b"Rd41d8cd98f00b204e9800998ecf8427e", b"R00000000000000000000000000000000"
        ),
    )
    assert "is not MD5('')" in await refused(fixture_server, fixtures_dir)


async def test_missing_repository_is_unreachable(
    fixture_server: StaticServer, fixtures_dir: Path
) -> None:
    settings = settings_for(fixture_server, fixtures_dir, FIX1, url_of="nothing.here")
    async with Fetcher(settings) as fetcher:
        with pytest.raises(UnreachableError) as caught:
            await establish_trust(fetcher, settings, now=NOW)
    assert caught.value.exit_code == ExitCode.UNREACHABLE
    assert ".cvmfs" in str(caught.value) and "nothing.here" in str(caught.value)


# -- pure checks on the fixture files --------------------------------------------------------


def test_whitelist_expiry_has_hour_granularity(fixtures_dir: Path) -> None:
    data = (fixtures_dir / FIX1 / ".cvmfswhitelist").read_bytes()
    whitelist = Whitelist.parse(data)
    assert whitelist.expires == datetime(2036, 11, 21, 20, tzinfo=UTC)  # E20361121204716
    key = load_master_key(fixtures_dir / "keys" / f"{FIX1}.pub")
    verify_whitelist(data, FIX1, [key], datetime(2036, 11, 21, 19, 59, 59, tzinfo=UTC))
    with pytest.raises(TrustError, match="expired"):
        verify_whitelist(data, FIX1, [key], datetime(2036, 11, 21, 20, 0, 0, tzinfo=UTC))


@pytest.mark.parametrize("fqrn", [FIX1, FIX2, FIX3])
def test_whitelist_fingerprints_use_their_own_algorithm(fixtures_dir: Path, fqrn: str) -> None:
    whitelist = Whitelist.parse((fixtures_dir / fqrn / ".cvmfswhitelist").read_bytes())
    assert [fp.algorithm for fp in whitelist.fingerprints] == [ALGORITHMS[fqrn]]
    pem = (fixtures_dir / "keys/private" / f"{fqrn}.crt").read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    assert whitelist.lists(der)
    assert not dataclasses.replace(whitelist, fingerprints=()).lists(der)


async def test_no_or_bad_master_key_is_a_config_error(
    fixture_server: StaticServer, fixtures_dir: Path, tmp_path: Path
) -> None:
    settings = dataclasses.replace(settings_for(fixture_server, fixtures_dir, FIX1), public_keys=())
    async with Fetcher(settings) as fetcher:
        with pytest.raises(ConfigError, match="no master public key configured"):
            await establish_trust(fetcher, settings, now=NOW)
    not_a_key = tmp_path / "broken.pub"
    not_a_key.write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    settings = dataclasses.replace(settings, public_keys=(not_a_key,))
    async with Fetcher(settings) as fetcher:
        with pytest.raises(ConfigError, match=r"broken.pub: not a PEM public key"):
            await establish_trust(fetcher, settings, now=NOW)


async def test_certificate_with_an_unloadable_key(
    fixture_server: StaticServer, fixtures_dir: Path, fixture_docroot: Path
) -> None:
    """A listed certificate whose key algorithm is unknown is a TrustError, not a crash."""
    pem = (fixtures_dir / "keys/private" / f"{FIX1}.crt").read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    rsa_encryption = bytes.fromhex("06092a864886f70d010101")  # OID 1.2.840.113549.1.1.1
    assert der.count(rsa_encryption) == 1
    odd = x509.load_der_x509_certificate(der.replace(rsa_encryption, rsa_encryption[:-1] + b"\x63"))
    odd_pem = odd.public_bytes(serialization.Encoding.PEM)
    stored = zlib.compress(odd_pem)
    digest = Algorithm.SHA1.hash(stored)
    (fixture_docroot / "cvmfs" / FIX1 / digest.object_path("X")).write_bytes(stored)

    def list_odd(letter: bytes) -> bytes:
        header = b"\n".join(letter.split(b"\n")[:3]) + b"\n"
        return header + fingerprint(odd_pem, Algorithm.SHA1) + b"\n"

    def point_at_odd(letter: bytes) -> bytes:
        return re.sub(rb"(?m)^X.*$", b"X" + digest.hex.encode(), letter)

    resign_whitelist(fixture_docroot, fixtures_dir, list_odd)
    resign_manifest(fixture_docroot, fixtures_dir, point_at_odd)
    message = await refused(fixture_server, fixtures_dir)
    assert message == f"certificate of {FIX1} holds an unusable public key"
