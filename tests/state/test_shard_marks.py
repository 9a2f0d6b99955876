"""Shard marks: when the export after the shards may trust that every file is in place."""

from __future__ import annotations

from pathlib import Path

from shrinkwrap_async.config.idmap import IdMap
from shrinkwrap_async.config.settings import ClientSettings
from shrinkwrap_async.pipeline.recorded_run import shard_marks_key
from shrinkwrap_async.pipeline.runner import ExportOptions
from shrinkwrap_async.spec.tree import Spec
from shrinkwrap_async.state.shard_marks import ShardMarks

FQRN = "marks.test.local"
SERVERS = ("http://127.0.0.1:1/cvmfs/@fqrn@",)


def test_complete_only_with_every_shard_of_one_count(tmp_path: Path) -> None:
    marks = ShardMarks(tmp_path, FQRN)
    assert marks.complete("k") is None  # nothing recorded
    marks.record("k", 0, 3)
    marks.record("k", 2, 3)
    marks.record("k", 1, 2)  # another partition's shard does not fill the gap
    assert marks.complete("k") is None
    marks.record("k", 1, 3)
    marks.record("k", 1, 3)  # a rerun of a shard is harmless
    assert marks.complete("k") == 3
    assert marks.complete("other") is None  # marks are per run key
    assert not list(marks.directory.rglob("*.tmp"))  # written under a temp name, renamed
    marks.clear()
    assert marks.complete("k") is None and not marks.directory.exists()
    marks.clear()  # nothing to clear is fine


def test_marks_of_one_repository_only(tmp_path: Path) -> None:
    ShardMarks(tmp_path, FQRN).record("k", 0, 1)
    assert ShardMarks(tmp_path, "other.test.local").complete("k") is None
    assert ShardMarks(tmp_path, FQRN).complete("k") == 1


def test_run_key_follows_what_decides_the_files(tmp_path: Path) -> None:
    settings = ClientSettings(fqrn=FQRN, server_urls=SERVERS)
    options = ExportOptions(dest_base=tmp_path / "dest")
    spec = Spec.parse("/*\n")
    key = shard_marks_key(settings, spec, options, "aa" * 20)
    assert key == shard_marks_key(settings, Spec.parse("/*\n"), options, "aa" * 20)
    assert key != shard_marks_key(settings, spec, options, "bb" * 20)  # another revision
    assert key != shard_marks_key(settings, Spec.parse("/a/*\n"), options, "aa" * 20)
    other_store = ExportOptions(dest_base=tmp_path / "dest", dest_cache=tmp_path / "store")
    assert key != shard_marks_key(settings, spec, other_store, "aa" * 20)
    claimed = ClientSettings(fqrn=FQRN, server_urls=SERVERS, claim_ownership=True)
    assert key != shard_marks_key(claimed, spec, options, "aa" * 20)
    mapped = ClientSettings(fqrn=FQRN, server_urls=SERVERS, uid_map=IdMap.parse("* 0\n"))
    assert key != shard_marks_key(mapped, spec, options, "aa" * 20)
    # The same map read from another file (a node's own copy of the config) is the same.
    elsewhere = ClientSettings(
        fqrn=FQRN, server_urls=SERVERS, uid_map=IdMap.parse("* 0\n", source="/node/uid.map")
    )
    assert shard_marks_key(mapped, spec, options, "aa" * 20) == shard_marks_key(
        elsewhere, spec, options, "aa" * 20
    )
