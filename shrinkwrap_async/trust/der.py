"""A small reader for ASN.1 BER/DER, enough for PKCS#7 SignedData.

``cryptography`` parses certificates but not SignedData, so the few structures of a
PKCS#7 signature are walked here. BER is accepted where real signers produce it
(``openssl smime -sign -stream`` writes indefinite lengths and constructed OCTET STRINGs);
tags are single-byte (numbers below 31), which is all PKCS#7 uses.
"""

from __future__ import annotations

from dataclasses import dataclass

INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
SEQUENCE = 0x30
SET = 0x31
CONSTRUCTED = 0x20
CONTEXT = 0x80

MAX_DEPTH = 32


class DerError(ValueError):
    """The bytes are not the ASN.1 structure expected."""


def context(number: int, *, constructed: bool = True) -> int:
    """The tag of ``[number]`` (context-specific)."""
    return CONTEXT | (CONSTRUCTED if constructed else 0) | number


@dataclass(frozen=True, slots=True)
class Element:
    """One TLV: its identifier octet, content octets and whole encoding."""

    tag: int
    content: bytes  # for an indefinite length: everything up to the end-of-contents octets
    encoding: bytes
    depth: int = 0  # nesting level, bounded by MAX_DEPTH

    @property
    def constructed(self) -> bool:
        return bool(self.tag & CONSTRUCTED)

    def children(self) -> list[Element]:
        if not self.constructed:
            raise DerError(f"element with tag 0x{self.tag:02x} is not constructed")
        return _read_all(self.content, self.depth + 1)

    def expect(self, tag: int, what: str) -> Element:
        if self.tag != tag:
            raise DerError(f"{what}: expected tag 0x{tag:02x}, found 0x{self.tag:02x}")
        return self

    def octets(self) -> bytes:
        """An OCTET STRING's value, joining the pieces of a constructed (BER) one."""
        if self.tag == OCTET_STRING:
            return self.content
        if self.tag == OCTET_STRING | CONSTRUCTED:
            return b"".join(child.octets() for child in self.children())
        raise DerError(f"expected an OCTET STRING, found tag 0x{self.tag:02x}")

    def integer(self) -> int:
        if self.tag != INTEGER or not self.content:
            raise DerError("expected an INTEGER")
        return int.from_bytes(self.content, "big", signed=True)

    def oid(self) -> str:
        if self.tag != OID or not self.content or self.content[-1] & 0x80:
            raise DerError("expected an OBJECT IDENTIFIER")
        arcs: list[int] = []
        value = 0
        for byte in self.content:
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                arcs.append(value)
                value = 0
        first = min(arcs[0] // 40, 2)
        return ".".join(str(arc) for arc in (first, arcs[0] - 40 * first, *arcs[1:]))


def parse(data: bytes) -> Element:
    """Exactly one element spanning all of ``data``."""
    element, end = _read(data, 0, 0)
    if end != len(data):
        raise DerError(f"{len(data) - end} bytes after the end of the structure")
    return element


def encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _read_all(data: bytes, depth: int) -> list[Element]:
    elements = []
    offset = 0
    while offset < len(data):
        element, offset = _read(data, offset, depth)
        elements.append(element)
    return elements


def _read(data: bytes, offset: int, depth: int) -> tuple[Element, int]:
    """The element at ``offset`` and the offset just after it."""
    if depth > MAX_DEPTH:
        raise DerError("structure nested too deeply")
    if offset + 2 > len(data):
        raise DerError("truncated (no room for a tag and length)")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise DerError("multi-byte tags are not used by PKCS#7")
    first = data[offset + 1]
    start = offset + 2
    if first == 0x80:
        if not tag & CONSTRUCTED:
            raise DerError("indefinite length on a primitive element")
        position = start
        while True:
            if data[position : position + 2] == b"\x00\x00":
                whole = data[offset : position + 2]
                return Element(tag, data[start:position], whole, depth), position + 2
            _, position = _read(data, position, depth + 1)
    if first & 0x80:
        count = first & 0x7F
        if count > 4 or start + count > len(data):
            raise DerError("bad length")
        length = int.from_bytes(data[start : start + count], "big")
        start += count
    else:
        length = first
    end = start + length
    if end > len(data):
        raise DerError(f"truncated (element claims {length} bytes, {len(data) - start} remain)")
    return Element(tag, data[start:end], data[offset:end], depth), end
