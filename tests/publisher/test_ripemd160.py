"""The pure-Python RIPEMD-160 fallback against published test vectors and hashlib."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shrinkwrap_async._ripemd160 import RipeMD160

VECTORS = {
    b"": "9c1185a5c5e9fc54612808977ee8f548b2258d31",
    b"abc": "8eb208f7e05d987a9b044a8e98c6b087f15a0bfc",
    b"message digest": "5d0689ef49d2fae572b881b123a85ffa21595f36",
    b"a" * 1_000_000: "52783243c1697bdbe16d37f97f68f08325dc1528",
    bytes.fromhex("789c030000000001"): "fcdb20b894f31f1306d56294c049ca7293dde0fc",
}


@pytest.mark.parametrize("data", list(VECTORS), ids=lambda d: str(len(d)))
def test_known_vectors(data: bytes):
    assert RipeMD160(data).hexdigest() == VECTORS[data]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=5))
def test_incremental_updates_equal_one_shot(parts: list[bytes]):
    hasher = RipeMD160()
    for part in parts:
        hasher.update(part)
    assert hasher.digest() == RipeMD160(b"".join(parts)).digest()
    try:
        reference = hashlib.new("ripemd160", b"".join(parts)).digest()
    except ValueError:  # OpenSSL without the legacy provider
        return
    assert hasher.digest() == reference
