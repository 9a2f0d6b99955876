"""Programmatic source trees, republishing (revision N+1), the CLI and the profiles."""

from __future__ import annotations

import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from shrinkwrap_async.hashing import Algorithm, Digest
from shrinkwrap_async.testing.chunking import ChunkSizes, chunk_boundaries
from shrinkwrap_async.testing.publish import Publisher, PublishOptions
from shrinkwrap_async.testing.source_trees import build_source_tree, modify_for_next_revision
from shrinkwrap_async.testing.synthetic import GeneratedContent, Profile, build_tree

from .catalog_tree import all_chunks, all_rows, manifest_fields, read_tree

FQRN = "gen.test.local"
SIZES = ChunkSizes(256 << 10, 512 << 10, 1 << 20)


def test_republish_makes_next_revision_and_keeps_unchanged_catalogs(tmp_path: Path):
    source = build_source_tree(tmp_path / "src", FQRN, chunk_min=SIZES.minimum)
    publisher = Publisher(tmp_path / "out", FQRN, PublishOptions(chunk_sizes=SIZES))
    first = publisher.publish(source)
    assert first.revision == 1
    assert set(first.catalogs) == {"", "/sw", "/sw/v1", "/sw/v2/nested/deeper", "/data",
                                   "/empty_catalog"}  # fmt: skip
    rows = all_rows(read_tree(publisher.repository_dir))
    assert rows["/special/fifo"]["flags"] == 20 and rows["/links/varsym"]["flags"] == 12
    assert rows["/links/varsym"]["symlink"] == "/opt/$(SOME_VAR)/lib"
    assert rows["/bin/tool"]["mode"] == 0o100755
    assert rows["/ünïcødé/naïve café.txt"]["hash"] is not None
    assert rows["/xattr/file_with_xattr"]["xattr"] is not None
    assert rows["/big/large.bin"]["flags"] & 64 and rows["/big/large.bin"]["hash"] is None
    assert rows["/big/threshold_plus1.bin"]["flags"] == 4

    modify_for_next_revision(source)
    second = publisher.publish(source)
    assert second.revision == 2
    assert set(second.catalogs) == {"", "/sw", "/sw/v1", "/data", "/empty_catalog", "/new"}
    assert second.catalogs["/empty_catalog"] == first.catalogs["/empty_catalog"]
    assert second.catalogs["/sw/v1"] == first.catalogs["/sw/v1"]
    assert second.catalogs["/data"] != first.catalogs["/data"]
    assert set(second.rewritten_catalogs) == {"", "/sw", "/data", "/new"}
    tree = read_tree(publisher.repository_dir)
    assert tree[""].properties["previous_revision"] == first.root_hash.hex
    assert tree[""].properties["revision"] == "2"
    assert tree["/data"].properties["previous_revision"] == first.catalogs["/data"].hex
    assert tree["/data"].properties["revision"] == "2"
    assert tree["/new"].properties["previous_revision"] == "0" * 40
    assert manifest_fields(publisher.repository_dir)["S"] == "2"
    rows = all_rows(tree)
    assert "/etc/conf.ini" not in rows and "/sw/v2" not in rows
    assert rows["/hard/a"]["hardlinks"] & 0xFFFFFFFF == 2
    assert rows["/bin/run.sh"]["mode"] == 0o100700
    # Every chunk and file object referenced exists and matches its hash.
    for path, chunks in all_chunks(tree).items():
        data = b"".join(
            zlib.decompress(
                (publisher.repository_dir / Digest(Algorithm.SHA1, h).object_path("P")).read_bytes()
            )
            for _, _, h in chunks
        )
        assert data == (source / path.lstrip("/")).read_bytes()


def test_chunker_cuts_where_the_upstream_rules_say():
    data = GeneratedContent(5, 1, 3 << 20, "random")()
    pieces = chunk_boundaries(data, SIZES)
    assert sum(size for _, size in pieces) == len(data)
    assert all(SIZES.minimum <= size <= SIZES.maximum for _, size in pieces[:-1])
    assert chunk_boundaries(bytes(5 << 19), SIZES) == [(0, 1 << 20), (1 << 20, 1 << 20),
                                                       (2 << 20, 1 << 19)]  # fmt: skip
    assert chunk_boundaries(b"x" * SIZES.minimum, SIZES) == [(0, SIZES.minimum)]


def test_generated_profile_is_deterministic_and_publishes(tmp_path: Path):
    profile = Profile(300, 3, 2, 2, 2048, 8192, big_files=0, extras=True)
    tree_a, tree_b = build_tree(profile, 7), build_tree(profile, 7)
    first = Publisher(tmp_path / "a", FQRN, PublishOptions(workers=1)).publish(tree_a)
    second = Publisher(tmp_path / "b", FQRN, PublishOptions(workers=2)).publish(tree_b)
    assert set(first.catalogs) == {"", "/release-00", "/release-01", "/release-02"}
    rows_a = all_rows(read_tree(first.repository_dir))
    rows_b = all_rows(read_tree(second.repository_dir))
    assert {p: r["hash"] for p, r in rows_a.items()} == {p: r["hash"] for p, r in rows_b.items()}
    assert sum(1 for p in rows_a if p.endswith(".dat")) == 300
    assert (
        rows_a["/release-00/linked-a"]["hardlinks"] == rows_a["/release-00/linked-b"]["hardlinks"]
    )


def test_a_profile_can_hold_its_releases_in_one_catalog_below_the_root(tmp_path: Path):
    deep = Profile(60, 3, 2, 2, 2048, 8192, extras=True, under="sw")
    flat = Profile(60, 3, 2, 2, 2048, 8192, extras=True)
    published = {
        name: Publisher(tmp_path / name, FQRN, PublishOptions(workers=1)).publish(
            build_tree(profile, 7)
        )
        for name, profile in (("deep", deep), ("flat", flat))
    }
    assert set(published["deep"].catalogs) == {"", "/sw", "/sw/release-00", "/sw/release-01",
                                               "/sw/release-02"}  # fmt: skip
    rows = {
        name: {path: row["hash"] for path, row in all_rows(read_tree(p.repository_dir)).items()}
        for name, p in published.items()
    }
    below = {path for path in rows["deep"] if path.startswith("/sw/")} - {"/sw/.cvmfscatalog"}
    assert {path: rows["deep"][path] for path in below} == {
        "/sw" + path: digest for path, digest in rows["flat"].items() if path
    }


def test_command_line_publishes_and_republishes(tmp_path: Path):
    source = tmp_path / "src"
    (source / "dir").mkdir(parents=True)
    (source / "dir" / "file.txt").write_text("hello world\n")
    command = [sys.executable, "-m", "shrinkwrap_async.testing.publish", "--fqrn", FQRN,
               "--source", str(source), "--out", str(tmp_path / "out"), "--hash", "shake128",
               "--compression", "none", "--no-chunking"]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    (source / "dir" / "more.txt").write_text("more\n")
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    assert done.stdout.startswith("revision 2 ")
    repository = tmp_path / "out" / "cvmfs" / FQRN
    rows = all_rows(read_tree(repository))
    assert rows["/dir/file.txt"]["flags"] == 4 | (2 << 8) | (1 << 11)
    digest = Digest(Algorithm.SHAKE128, rows["/dir/file.txt"]["hash"])
    assert (repository / digest.object_path()).read_bytes() == b"hello world\n"
    assert (tmp_path / "out" / "keys" / f"{FQRN}.pub").exists()
    bad = subprocess.run([*command[:-1], "--chunk-min", "10"], capture_output=True, text=True)
    assert bad.returncode == 2 and "chunk sizes" in bad.stderr


@pytest.mark.slow
def test_reference_profile_publishes(tmp_path: Path):
    from shrinkwrap_async.testing.synthetic import build_profile

    result = Publisher(tmp_path, "ref.test.local").publish(build_profile("reference", 1))
    assert result.files == 20_010 and len(result.catalogs) == 11
