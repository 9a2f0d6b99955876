"""Content-defined chunking with the xor32 rolling checksum of the CernVM-FS publisher.

Facts of the upstream detector (``cvmfs/ingestion/chunk_detector.{h,cc}``) that fix the
cut points, so that chunk objects hash the same as the real tools':

* the checksum is ``x = ((x << 1) ^ byte) mod 2**32``; it depends only on the last 32
  bytes, so at every checked position it equals the XOR of ``byte[i - k] << k`` over the
  32-byte window ending at ``i``;
* after a cut at ``L`` the next cut is searched at positions ``L + min .. L + max - 1``;
  position ``i`` is a cut (the chunk ends before byte ``i``) when
  ``abs(int32(x_i) - 0x7fffffff) < 0xffffffff // avg`` in wrapping 32-bit arithmetic;
* without such a position the chunk is cut hard at ``L + max``; the rest of the file is
  the last chunk;
* only files larger than ``min`` are chunked; a file that yields one chunk is stored as a
  plain file.

The window values are computed for whole blocks at once (numpy when importable, else
Python big-integer arithmetic), and only the rare candidate positions are visited in
Python.
"""

from __future__ import annotations

from dataclasses import dataclass

WINDOW = 32
_MAGIC = 0x7FFFFFFF
_SEGMENT = 4 << 20

try:  # optional acceleration; the big-integer path gives the same values
    import numpy as _np
except ImportError:  # pragma: no cover - depends on the environment
    _np = None


@dataclass(frozen=True, slots=True)
class ChunkSizes:
    minimum: int
    average: int
    maximum: int

    def __post_init__(self) -> None:
        if not (WINDOW <= self.minimum < self.average < self.maximum):
            raise ValueError(
                f"chunk sizes need {WINDOW} <= min < avg < max, got "
                f"{self.minimum}/{self.average}/{self.maximum}"
            )

    @property
    def threshold(self) -> int:
        return 0xFFFFFFFF // self.average


def _is_cut(value: int, threshold: int) -> bool:
    signed = value - (1 << 32) if value & 0x80000000 else value
    diff = (signed - _MAGIC) & 0xFFFFFFFF
    diff = diff - (1 << 32) if diff & 0x80000000 else diff
    # abs() of the most negative int32 stays negative in the C code, so it passes.
    return diff == -(1 << 31) or abs(diff) < threshold


def _candidate_top_bytes(threshold: int) -> bytes:
    low = (1 << 31) - threshold
    high = (1 << 31) + threshold - 2
    tops = set(range(low >> 24, (high >> 24) + 1))
    tops.add(0xFF)
    return bytes(sorted(tops))


def _window_values_numpy(block: bytes) -> list[int] | None:
    assert _np is not None
    values = _np.frombuffer(block, dtype=_np.uint8).astype(_np.uint32)
    span = 1
    while span < WINDOW:
        shifted = _np.zeros_like(values)
        shifted[span:] = values[:-span] << _np.uint32(span)
        values ^= shifted
        span *= 2
    return values  # type: ignore[return-value]


def _candidates_in(block: bytes, first: int, threshold: int) -> list[int]:
    """Indices ``i >= first`` of ``block`` whose window value passes the threshold."""
    n = len(block)
    if n <= first:
        return []
    if _np is not None:
        values = _window_values_numpy(block)
        signed = values.view(_np.int32).astype(_np.int64)
        diff = ((signed - _MAGIC + (1 << 31)) % (1 << 32)) - (1 << 31)
        hits = _np.nonzero((_np.abs(diff) < threshold) | (diff == -(1 << 31)))[0]
        return [int(i) for i in hits if i >= first]
    lanes = bytearray(5 * n)
    lanes[0::5] = block
    packed = int.from_bytes(lanes, "little")
    span = 1
    while span < WINDOW:
        packed ^= packed << (41 * span)
        span *= 2
    raw = packed.to_bytes(5 * n + 5 * WINDOW + 8, "little")[: 5 * n]
    table = bytearray(256)
    for top in _candidate_top_bytes(threshold):
        table[top] = 1
    marks = raw[3::5].translate(bytes(table))
    result = []
    index = marks.find(1, first)
    while index >= 0:
        if _is_cut(int.from_bytes(raw[5 * index : 5 * index + 4], "little"), threshold):
            result.append(index)
        index = marks.find(1, index + 1)
    return result


def cut_candidates(data: bytes | memoryview, threshold: int) -> list[int]:
    """All positions (ascending) whose 32-byte window value is a cut mark."""
    result: list[int] = []
    size = len(data)
    start = 0
    while start < size:
        end = min(size, start + _SEGMENT)
        lead = min(start, WINDOW - 1)
        block = bytes(data[start - lead : end])
        first = lead if start else WINDOW - 1
        result.extend(start - lead + i for i in _candidates_in(block, first, threshold))
        start = end
    return result


def chunk_boundaries(data: bytes | memoryview, sizes: ChunkSizes) -> list[tuple[int, int]]:
    """``(offset, size)`` of every chunk; one element when the file is not cut."""
    total = len(data)
    if total <= sizes.minimum:
        return [(0, total)]
    candidates = cut_candidates(data, sizes.threshold)
    chunks: list[tuple[int, int]] = []
    last = 0
    position = 0  # index into candidates
    while True:
        low, high = last + sizes.minimum, last + sizes.maximum
        while position < len(candidates) and candidates[position] < low:
            position += 1
        if position < len(candidates) and candidates[position] < min(high, total):
            cut = candidates[position]
        elif high < total:
            cut = high
        else:
            chunks.append((last, total - last))
            return chunks
        chunks.append((last, cut - last))
        last = cut
