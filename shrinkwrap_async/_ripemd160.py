"""Pure-Python RIPEMD-160, for OpenSSL builds without the legacy provider.

Slow (a few MB/s) but exact; :mod:`shrinkwrap_async.hashing` uses it only when
``hashlib.new("ripemd160")`` is unavailable.
"""

from __future__ import annotations

import struct

_MASK = 0xFFFFFFFF

# The message word order of both lines comes from two permutations of 0..15 (the
# RIPEMD-160 paper's rho and pi): the left line starts in order, the right one with pi,
# and each further round applies rho. Rotation amounts depend on the round and the word.
_RHO = (7, 4, 13, 1, 10, 6, 15, 3, 12, 0, 9, 5, 2, 14, 11, 8)
_PI = tuple((9 * i + 5) % 16 for i in range(16))
_SHIFTS = (
    (11, 14, 15, 12, 5, 8, 7, 9, 11, 13, 14, 15, 6, 7, 9, 8),
    (12, 13, 11, 15, 6, 9, 9, 7, 12, 15, 11, 13, 7, 8, 7, 7),
    (13, 15, 14, 11, 7, 7, 6, 8, 13, 14, 13, 12, 5, 5, 6, 9),
    (14, 11, 12, 14, 8, 6, 5, 5, 15, 12, 15, 14, 9, 9, 8, 6),
    (15, 12, 13, 13, 9, 5, 8, 6, 14, 11, 12, 11, 8, 6, 5, 5),
)


def _word_order(first_round: tuple[int, ...]) -> tuple[int, ...]:
    """The 80 message word indexes of one line: ``first_round``, then rho applied per round."""
    order = [first_round]
    for _ in range(4):
        order.append(tuple(_RHO[word] for word in order[-1]))
    return tuple(word for round_words in order for word in round_words)


def _rotations(word_order: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(_SHIFTS[step >> 4][word] for step, word in enumerate(word_order))


_R_LEFT = _word_order(tuple(range(16)))
_R_RIGHT = _word_order(_PI)
_S_LEFT = _rotations(_R_LEFT)
_S_RIGHT = _rotations(_R_RIGHT)
_K_LEFT = (0x00000000, 0x5A827999, 0x6ED9EBA1, 0x8F1BBCDC, 0xA953FD4E)
_K_RIGHT = (0x50A28BE6, 0x5C4DD124, 0x6D703EF3, 0x7A6D76E9, 0x00000000)
_INITIAL = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0)


def _rotate(value: int, amount: int) -> int:
    return ((value << amount) | (value >> (32 - amount))) & _MASK


def _f(round_number: int, x: int, y: int, z: int) -> int:
    if round_number == 0:
        return x ^ y ^ z
    if round_number == 1:
        return (x & y) | (~x & z)
    if round_number == 2:
        return (x | ~y) ^ z
    if round_number == 3:
        return (x & z) | (y & ~z)
    return x ^ (y | ~z)


def _compress(state: tuple[int, ...], block: bytes) -> tuple[int, ...]:
    words = struct.unpack("<16I", block)
    al, bl, cl, dl, el = state
    ar, br, cr, dr, er = state
    for j in range(80):
        round_number = j >> 4
        t = (al + (_f(round_number, bl, cl, dl) & _MASK) + words[_R_LEFT[j]]
             + _K_LEFT[round_number]) & _MASK  # fmt: skip
        t = (_rotate(t, _S_LEFT[j]) + el) & _MASK
        al, el, dl, cl, bl = el, dl, _rotate(cl, 10), bl, t
        t = (ar + (_f(4 - round_number, br, cr, dr) & _MASK) + words[_R_RIGHT[j]]
             + _K_RIGHT[round_number]) & _MASK  # fmt: skip
        t = (_rotate(t, _S_RIGHT[j]) + er) & _MASK
        ar, er, dr, cr, br = er, dr, _rotate(cr, 10), br, t
    h0, h1, h2, h3, h4 = state
    return (
        (h1 + cl + dr) & _MASK,
        (h2 + dl + er) & _MASK,
        (h3 + el + ar) & _MASK,
        (h4 + al + br) & _MASK,
        (h0 + bl + cr) & _MASK,
    )


class RipeMD160:
    """``hashlib``-style RIPEMD-160: ``update(data)``, ``digest()``, ``hexdigest()``."""

    digest_size = 20
    block_size = 64
    name = "ripemd160"

    def __init__(self, data: bytes = b"") -> None:
        self._state = _INITIAL
        self._buffer = b""
        self._length = 0
        if data:
            self.update(data)

    def update(self, data: bytes, /) -> None:
        data = bytes(data)
        self._length += len(data)
        buffer = self._buffer + data
        full = len(buffer) - len(buffer) % 64
        state = self._state
        for offset in range(0, full, 64):
            state = _compress(state, buffer[offset : offset + 64])
        self._state = state
        self._buffer = buffer[full:]

    def copy(self) -> RipeMD160:
        other = RipeMD160()
        other._state, other._buffer, other._length = self._state, self._buffer, self._length
        return other

    def digest(self) -> bytes:
        tail = self._buffer + b"\x80"
        tail += b"\x00" * ((56 - len(tail)) % 64)
        tail += struct.pack("<Q", (self._length * 8) & 0xFFFFFFFFFFFFFFFF)
        state = self._state
        for offset in range(0, len(tail), 64):
            state = _compress(state, tail[offset : offset + 64])
        return struct.pack("<5I", *state)

    def hexdigest(self) -> str:
        return self.digest().hex()
