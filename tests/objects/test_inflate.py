"""Bounded inflation gives the same bytes and refuses the same streams on every zlib backend."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shrinkwrap_async import inflate
from shrinkwrap_async.pipeline.decompress_verify import BoundedInflater, ContentError

BACKENDS = inflate.available_backends()
PAYLOAD = os.urandom(3000) + b"repeated text " * 20000 + os.urandom(500)
STREAM = zlib.compress(PAYLOAD, 6)


def inflate_in_pieces(backend: str, stream: bytes, expected: int, cuts: list[int]) -> bytes:
    inflater = BoundedInflater(expected, True, BACKENDS[backend][0])
    out = bytearray()
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        out += inflater.feed(stream[start:cut])
        start = cut
    inflater.finish()
    return bytes(out)


def test_isal_is_installed_where_the_project_asks_for_it() -> None:
    """pyproject.toml asks for python-isal on x86_64 and aarch64; it must be the default."""
    if os.uname().machine not in ("x86_64", "aarch64"):
        pytest.skip("python-isal is only required on x86_64 and aarch64")
    assert "isal" in BACKENDS
    assert inflate.BACKEND == "isal"


def test_the_environment_selects_the_standard_module() -> None:
    code = "from shrinkwrap_async import inflate; print(inflate.BACKEND)"
    env = dict(os.environ, **{inflate.BACKEND_ENV: "zlib"})
    chosen = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert chosen.stdout.strip() == "zlib"


@pytest.mark.parametrize("backend", list(BACKENDS))
@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_pieces_inflate_to_the_original(backend: str, cuts: list[int]) -> None:
    assert inflate_in_pieces(backend, STREAM, len(PAYLOAD), cuts) == PAYLOAD


def _corrupt(stream: bytes) -> bytes:
    middle = len(stream) // 2
    return stream[:middle] + bytes([stream[middle] ^ 0xFF]) + stream[middle + 1 :]


BAD_STREAMS = {
    "more than the catalog says (a bomb)": (STREAM, len(PAYLOAD) - 1),
    "less than the catalog says": (STREAM, len(PAYLOAD) + 1),
    "truncated": (STREAM[:-20], len(PAYLOAD)),
    "trailing bytes": (STREAM + b"extra", len(PAYLOAD)),
    "not zlib at all": (b"plain text, not a zlib stream" * 10, len(PAYLOAD)),
    "a flipped byte": (_corrupt(STREAM), len(PAYLOAD)),
    "empty": (b"", len(PAYLOAD)),
}


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("case", list(BAD_STREAMS))
@pytest.mark.parametrize("cuts", [[], [7, 1000, 5000]])
def test_bad_streams_are_content_errors(backend: str, case: str, cuts: list[int]) -> None:
    stream, expected = BAD_STREAMS[case]
    with pytest.raises(ContentError):
        inflate_in_pieces(backend, stream, expected, [c for c in cuts if c < len(stream)])


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_bomb_is_stopped_at_the_expected_size(backend: str) -> None:
    """A stream of 64 MiB of zeros claimed to be 1 KiB: refused after about 1 KiB of output."""
    bomb = zlib.compress(bytes(64 << 20), 9)
    inflater = BoundedInflater(1024, True, BACKENDS[backend][0])
    with pytest.raises(ContentError, match="more than the 1024 bytes"):
        inflater.feed(bomb)
    assert inflater.produced <= 1025
