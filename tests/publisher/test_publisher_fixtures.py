"""The publisher against the real-tool fixtures: schema, structure, content hashes, chunks."""

from __future__ import annotations

import sqlite3
import subprocess
import zlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from shrinkwrap_async.hashing import Algorithm, Digest
from shrinkwrap_async.testing.chunking import ChunkSizes
from shrinkwrap_async.testing.publish import Publisher, PublishOptions, PublishResult

from .catalog_tree import all_chunks, all_rows, manifest_fields, read_tree

SETTINGS = {
    "fix1.test.local": (Algorithm.SHA1, True, ChunkSizes(256 << 10, 512 << 10, 1 << 20)),
    "fix2.test.local": (Algorithm.SHAKE128, True, ChunkSizes(32 << 10, 64 << 10, 128 << 10)),
    "fix3.test.local": (Algorithm.RMD160, False, ChunkSizes(128 << 10, 256 << 10, 512 << 10)),
}
COMPARED_COLUMNS = ("hash", "flags", "mode", "size", "mtime", "uid", "gid", "symlink", "xattr")


def unpack(fixtures_dir: Path, fqrn: str, revision: int, target: Path) -> Path:
    archive = fixtures_dir / "source" / fqrn / f"rev{revision}.tar.gz"
    target.mkdir(parents=True)
    # GNU tar restores user.* xattrs, owners, modes and the device node (we run as root).
    command = ["tar", "--xattrs", "--xattrs-include=user.*", "--numeric-owner", "-xpzf"]
    subprocess.run([*command, str(archive), "-C", str(target)], check=True)
    return target


def fixture_revision_tree(fixtures_dir: Path, fqrn: str, revision: int):
    root = (fixtures_dir / "revisions" / fqrn / str(revision) / "root_hash").read_text()
    return read_tree(fixtures_dir / fqrn, Digest.from_hex(root.strip()))


@pytest.fixture(scope="module")
def published(tmp_path_factory, fixtures_dir) -> dict[str, tuple[Path, PublishResult]]:
    """Each fixture's revision A published with the fixture's settings."""
    result = {}
    for fqrn, (algorithm, compress, sizes) in SETTINGS.items():
        work = tmp_path_factory.mktemp(fqrn)
        source = unpack(fixtures_dir, fqrn, 2, work / "source")
        options = PublishOptions(hash_algorithm=algorithm, compress=compress, chunk_sizes=sizes)
        out = work / "out"
        result[fqrn] = (out, Publisher(out, fqrn, options).publish(source))
    return result


@pytest.mark.parametrize("fqrn", sorted(SETTINGS))
def test_same_entries_hashes_and_chunks_as_real_tools(published, fixtures_dir, fqrn):
    out, result = published[fqrn]
    ours = read_tree(out / "cvmfs" / fqrn)
    theirs = fixture_revision_tree(fixtures_dir, fqrn, 2)
    assert sorted(ours) == sorted(theirs)
    assert set(result.catalogs) == set(theirs)
    our_rows, their_rows = all_rows(ours), all_rows(theirs)
    assert set(our_rows) == set(their_rows)
    differences = [
        (path, column, their_rows[path][column], our_rows[path][column])
        for path in their_rows
        for column in COMPARED_COLUMNS
        if path != "" and their_rows[path][column] != our_rows[path][column]
    ]
    assert differences == []
    unchunked = [p for p, row in their_rows.items() if row["hash"] is not None]
    assert len(unchunked) > 100
    assert all_chunks(ours) == all_chunks(theirs)
    for path, catalog in theirs.items():
        mine = ours[path]
        assert mine.statistics == catalog.statistics, path
        assert list(mine.properties) == list(catalog.properties), path
        assert mine.master == catalog.master, path


def test_hard_link_groups_are_packed(published):
    out, _ = published["fix1.test.local"]
    rows = all_rows(read_tree(out / "cvmfs" / "fix1.test.local"))
    group = {rows[f"/hard/{n}"]["hardlinks"] for n in "abc"}
    pair = {rows[f"/hard/{n}"]["hardlinks"] for n in ("pair1", "pair2")}
    assert len(group) == 1 and len(pair) == 1 and group != pair
    assert group.pop() & 0xFFFFFFFF == 3 and pair.pop() & 0xFFFFFFFF == 2
    assert rows["/xdir/one/f"]["hardlinks"] == rows["/xdir/two/f"]["hardlinks"] == 1


def test_statistics_equal_a_recount(published):
    out, _ = published["fix3.test.local"]
    tree = read_tree(out / "cvmfs" / "fix3.test.local")
    for mountpoint, catalog in tree.items():
        rows = catalog.rows.values()
        regular = [r for r in rows if r["flags"] & 4 and not r["flags"] & 24]
        assert catalog.statistics["self_dir"] == sum(1 for r in rows if r["flags"] & 1)
        assert catalog.statistics["self_regular"] == len(regular)
        assert catalog.statistics["self_symlink"] == sum(1 for r in rows if r["flags"] & 8)
        assert catalog.statistics["self_special"] == sum(1 for r in rows if r["flags"] & 16)
        assert catalog.statistics["self_file_size"] == sum(r["size"] for r in regular)
        assert catalog.statistics["self_chunks"] == sum(map(len, catalog.chunks.values()))
        assert catalog.statistics["self_xattr"] == sum(1 for r in rows if r["xattr"])
        assert catalog.statistics["self_nested"] == len(catalog.nested)
        below = [c for m, c in tree.items() if m.startswith(mountpoint + "/")]
        for kind in ("regular", "dir", "file_size", "chunks"):
            assert catalog.statistics[f"subtree_{kind}"] == sum(
                c.statistics[f"self_{kind}"] for c in below
            )
    root = tree[""]
    assert root.statistics["self_special"] == 2
    assert root.rows["/special/null_device"]["size"] == 259


@pytest.mark.parametrize("fqrn", sorted(SETTINGS))
def test_manifest_has_the_fixture_structure_and_verifies(published, fixtures_dir, fqrn):
    out, result = published[fqrn]
    repository = out / "cvmfs" / fqrn
    algorithm = SETTINGS[fqrn][0]
    ours, theirs = manifest_fields(repository), manifest_fields(fixtures_dir / fqrn)
    assert list(ours) == list(theirs) == list("CBRDSGANXHTMY")
    assert ours["C"] == result.root_hash.hex and ours["N"] == fqrn and ours["S"] == "1"
    raw = (repository / ".cvmfspublished").read_bytes()
    letter, rest = raw.split(b"--\n", 1)
    hash_line, signature = rest.split(b"\n", 1)
    assert hash_line == algorithm.hash(letter).hex.encode()
    certificate_blob = (repository / Digest.from_hex(ours["X"]).object_path("X")).read_bytes()
    assert Digest.from_hex(ours["X"]).matches(certificate_blob)
    certificate = x509.load_pem_x509_certificate(zlib.decompress(certificate_blob))
    certificate.public_key().verify(signature, hash_line, padding.PKCS1v15(), hashes.SHA1())
    catalog_blob = (repository / result.root_hash.object_path("C")).read_bytes()
    assert int(ours["B"]) == len(zlib.decompress(catalog_blob))
    reflog = (repository / ".cvmfsreflog").read_bytes()
    assert algorithm.hash(reflog).hex == ours["Y"]
    for key, suffix in (("H", "H"), ("M", "M")):
        digest = Digest.from_hex(ours[key])
        zlib.decompress((repository / digest.object_path(suffix)).read_bytes())


@pytest.mark.parametrize("fqrn", sorted(SETTINGS))
def test_whitelist_structure_and_master_key_signature(published, fixtures_dir, fqrn):
    out, _ = published[fqrn]
    algorithm = SETTINGS[fqrn][0]
    ours = (out / "cvmfs" / fqrn / ".cvmfswhitelist").read_bytes()
    theirs = (fixtures_dir / fqrn / ".cvmfswhitelist").read_bytes()
    our_lines = ours.split(b"--\n", 1)[0].decode().splitlines()
    their_lines = theirs.split(b"--\n", 1)[0].decode().splitlines()
    assert [len(line) for line in our_lines[:2]] == [len(line) for line in their_lines[:2]]
    assert our_lines[1][0] == "E" and our_lines[2] == f"N{fqrn}"
    assert len(our_lines) == len(their_lines) == 4
    assert our_lines[3][59:] == their_lines[3][59:] == algorithm.suffix.upper()
    letter, rest = ours.split(b"--\n", 1)
    hash_line, signature = rest.split(b"\n", 1)
    assert hash_line == algorithm.hash(letter).hex.encode()
    master = serialization.load_pem_public_key((out / "keys" / f"{fqrn}.pub").read_bytes())
    assert isinstance(master, rsa.RSAPublicKey)
    assert master.recover_data_from_signature(signature, padding.PKCS1v15(), None) == hash_line
    manifest = manifest_fields(out / "cvmfs" / fqrn)
    blob = (out / "cvmfs" / fqrn / Digest.from_hex(manifest["X"]).object_path("X")).read_bytes()
    der = x509.load_pem_x509_certificate(zlib.decompress(blob)).public_bytes(
        serialization.Encoding.DER
    )
    assert our_lines[3].split("-")[0].replace(":", "").lower() == algorithm.hash(der).raw.hex()


def test_certificate_like_the_real_one(published, fixtures_dir):
    out, _ = published["fix1.test.local"]
    ours = x509.load_pem_x509_certificate(
        (out / "keys" / "private" / "fix1.test.local.crt").read_bytes()
    )
    theirs = x509.load_pem_x509_certificate(
        (fixtures_dir / "keys" / "private" / "fix1.test.local.crt").read_bytes()
    )
    assert ours.subject == theirs.subject == ours.issuer
    assert ours.public_key().key_size == theirs.public_key().key_size == 2048
    assert (out / "keys" / "private" / "fix1.test.local.masterkey").exists()


def test_history_and_reflog_have_the_fixture_schema(published, fixtures_dir, tmp_path):
    out, _ = published["fix1.test.local"]

    def schema(data: bytes, name: str) -> tuple[list, dict]:
        path = tmp_path / name
        path.write_bytes(data)
        db = sqlite3.connect(path)
        try:
            master = sorted(db.execute("SELECT type, name, sql FROM sqlite_master"))
            return master, dict(db.execute("SELECT key, value FROM properties"))
        finally:
            db.close()

    found = {}
    for tag, base in (
        ("ours", out / "cvmfs" / "fix1.test.local"),
        ("theirs", fixtures_dir / "fix1.test.local"),
    ):
        fields = manifest_fields(base)
        blob = (base / Digest.from_hex(fields["H"]).object_path("H")).read_bytes()
        found[tag] = (
            schema(zlib.decompress(blob), f"h-{tag}"),
            schema((base / ".cvmfsreflog").read_bytes(), f"r-{tag}"),
        )
    (our_history, our_reflog), (their_history, their_reflog) = found["ours"], found["theirs"]
    assert our_history[0] == their_history[0]
    assert set(our_history[1]) <= set(their_history[1])
    assert our_reflog[0] == their_reflog[0]
    assert set(our_reflog[1]) == set(their_reflog[1])
