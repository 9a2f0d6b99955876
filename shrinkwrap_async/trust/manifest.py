"""The signed manifest ``.cvmfspublished``: one key letter per line, then the signature.

Lines are ``<letter><value>`` (no separator); empty lines are skipped, a repeated key
overwrites (``Z`` values are joined with ``|``) and unknown keys are ignored, as in the
client. ``C``, ``R``, ``D`` and ``S`` are required and ``R`` must be the MD5 of the empty
path. Whether ``N`` names the expected repository is checked by the trust chain.
"""

from __future__ import annotations

from dataclasses import dataclass

from shrinkwrap_async.decimal_text import decimal_or_none
from shrinkwrap_async.exitcodes import TrustError
from shrinkwrap_async.hashing import Algorithm, Digest
from shrinkwrap_async.trust.signature import SignedFile

ROOT_PATH_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
WHAT = ".cvmfspublished"


def parse_key_lines(letter: bytes, what: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        text = letter.decode("utf-8")
    except UnicodeDecodeError:
        raise TrustError(f"{what} is not text before its signature") from None
    for line in text.split("\n"):
        if not line:
            continue
        key, value = line[0], line[1:]
        if key == "Z" and key in fields:
            fields[key] += "|" + value
        else:
            fields[key] = value
    return fields


def _digest(fields: dict[str, str], key: str, required: bool = False) -> Digest | None:
    value = fields.get(key)
    if value is None or value == "":
        if required:
            raise TrustError(f"{WHAT} lacks the required '{key}' line")
        return None
    try:
        return Digest.from_hex(value)
    except ValueError:
        raise TrustError(f"{WHAT} line '{key}' is not a content hash: {value[:60]!r}") from None


def _number(fields: dict[str, str], key: str, required: bool = False) -> int | None:
    value = fields.get(key)
    if value is None:
        if required:
            raise TrustError(f"{WHAT} lacks the required '{key}' line")
        return None
    number = decimal_or_none(value)
    if number is None:
        raise TrustError(f"{WHAT} line '{key}' is not a number: {value[:40]!r}")
    return number


@dataclass(frozen=True)
class Manifest:
    root_catalog: Digest
    revision: int
    ttl: int
    fqrn: str
    certificate: Digest | None
    history: Digest | None
    metainfo: Digest | None
    reflog: Digest | None
    publish_time: int | None
    root_catalog_size: int | None
    garbage_collectable: bool
    alternative_names: bool
    raw: bytes
    signed: SignedFile

    @property
    def algorithm(self) -> Algorithm:
        """The repository hash algorithm (that of the root catalog)."""
        return self.root_catalog.algorithm

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        signed = SignedFile.split(data, WHAT)
        fields = parse_key_lines(signed.letter, WHAT)
        root_catalog = _digest(fields, "C", required=True)
        assert root_catalog is not None
        if "R" not in fields:
            raise TrustError(f"{WHAT} lacks the required 'R' line")
        if fields["R"] != ROOT_PATH_MD5:
            raise TrustError(f"{WHAT} root path hash R{fields['R'][:40]} is not MD5('')")
        ttl = _number(fields, "D", required=True)
        revision = _number(fields, "S", required=True)
        assert ttl is not None and revision is not None
        return cls(
            root_catalog=root_catalog,
            revision=revision,
            ttl=ttl,
            fqrn=fields.get("N", ""),
            certificate=_digest(fields, "X"),
            history=_digest(fields, "H"),
            metainfo=_digest(fields, "M"),
            reflog=_digest(fields, "Y"),
            publish_time=_number(fields, "T"),
            root_catalog_size=_number(fields, "B"),
            garbage_collectable=fields.get("G") == "yes",
            alternative_names=fields.get("A") == "yes",
            raw=data,
            signed=signed,
        )
