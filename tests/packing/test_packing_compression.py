"""The compressors of tarballs and OCI layers: standard streams whose bytes do not depend on
the number of threads, and that the standard tools read."""

from __future__ import annotations

import gzip
import io
import random
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from shrinkwrap_async.packing.compression import GZIP_BLOCK, CompressedSink

BLOCK = GZIP_BLOCK


def _inputs() -> dict[str, list[bytes]]:
    """Inputs as lists of writes: edges of the block size, text whose repeats reach back
    across block boundaries (the dictionary carries them), random bytes, odd write sizes."""
    rng = random.Random(5)
    words = [bytes(rng.choice(b"abcdefghij") for _ in range(rng.randint(2, 9))) for _ in range(300)]
    text = b" ".join(rng.choice(words) for _ in range(700_000))
    noise = rng.randbytes(3 * BLOCK + 17)
    pieces = [text[i : i + 70_001] for i in range(0, len(text), 70_001)]
    return {
        "empty": [],
        "one byte": [b"x"],
        "below the window": [b"y" * 1000],
        "one block": [b"z" * BLOCK],
        "a block and a byte": [b"z" * BLOCK, b"!"],
        "text in odd writes": pieces,
        "noise in one write": [noise],
        "a repeat across a block boundary": [noise[:20_000] * (2 * BLOCK // 20_000)],
    }


def _compress(
    compression: str, writes: list[bytes], threads: int, level: int | None = None
) -> bytes:
    out = io.BytesIO()
    sink = CompressedSink(out, compression, level, threads)
    for data in writes:
        sink.write(data)
    sink.close()
    return out.getvalue()


@pytest.mark.parametrize("name", list(_inputs()))
def test_gzip_is_one_standard_member_whatever_the_threads(name: str) -> None:
    writes = _inputs()[name]
    plain = b"".join(writes)
    outputs = {threads: _compress("gzip", writes, threads) for threads in (1, 2, 5)}
    assert outputs[1] == outputs[2] == outputs[5]
    packed = outputs[1]
    assert packed[:4] == b"\x1f\x8b\x08\x00" and packed[4:8] == b"\0\0\0\0"  # no name, mtime 0
    assert gzip.decompress(packed) == plain
    # One member: a raw inflate of the body ends exactly before the 8-byte trailer.
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    assert inflater.decompress(packed[10:]) == plain and inflater.eof
    assert len(inflater.unused_data) == 8
    if shutil.which("gzip"):
        tested = subprocess.run(["gzip", "-dc"], input=packed, capture_output=True)
        assert tested.returncode == 0 and tested.stdout == plain
    if len(plain) > 2 * BLOCK:  # the blocks cost little against one deflate stream
        assert len(packed) <= 1.01 * len(gzip.compress(plain, mtime=0)) + 64


def test_gzip_levels_and_repeats_across_blocks() -> None:
    writes = _inputs()["a repeat across a block boundary"]
    plain = b"".join(writes)
    fast, best = _compress("gzip", writes, 2, 1), _compress("gzip", writes, 2, 9)
    assert fast[8:9] == b"\x04" and best[8:9] == b"\x02"  # the header's extra flags
    assert gzip.decompress(fast) == gzip.decompress(best) == plain
    # Each block refers back to the 32 KiB before it: the repeat compresses in every block.
    assert len(best) < len(plain) // 20


def test_zstd_is_the_same_for_any_number_of_threads() -> None:
    zstandard = pytest.importorskip("zstandard")
    writes = _inputs()["text in odd writes"]
    outputs = {threads: _compress("zstd", writes, threads) for threads in (1, 2, 5)}
    assert outputs[1] == outputs[2] == outputs[5]
    with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(outputs[2])) as reader:
        assert reader.read() == b"".join(writes)


def test_processors_below_one_is_a_usage_error(export: Path, tmp_path: Path) -> None:
    from _packtree import FQRN

    from shrinkwrap_async.cli import main

    args = ["pack", "-q", "-x", str(export), "-r", FQRN, "-o", str(tmp_path / "a.tar.gz")]
    assert main([*args, "--processors", "0"]) == 2
    assert main([*args, "--processors", "3"]) == 0
    three = (tmp_path / "a.tar.gz").read_bytes()
    assert main([*args, "--processors", "1"]) == 0
    assert (tmp_path / "a.tar.gz").read_bytes() == three
