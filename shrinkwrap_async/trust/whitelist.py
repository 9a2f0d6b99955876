"""The whitelist ``.cvmfswhitelist``: expiry, repository name, certificate fingerprints.

Layout: issue time (14 characters), ``E<YYYYMMDDhhmmss>`` expiry (15 characters, UTC),
``N<fqrn>``, optional ``Vpkcs7`` and ``Wcachain`` lines, then fingerprint lines up to
``--``; lines that are not fingerprints are skipped, as the client skips them. Expiry has
hour granularity: ``E20231214221320`` is valid until 2023-12-14 22:00:00 UTC. The same
text, without signature, is the content of a PKCS#7 whitelist (``Vpkcs7``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from shrinkwrap_async.exitcodes import TrustError
from shrinkwrap_async.hashing import Digest
from shrinkwrap_async.trust.signature import SEPARATOR, SignedFile

WHAT = ".cvmfswhitelist"


def parse_fingerprint(line: str) -> Digest | None:
    """``AB:CD:...[-RMD160|-SHAKE128]`` up to the first blank or ``#``; None if not one."""
    end = len(line)
    for stop in (" ", "\t", "#"):
        position = line.find(stop)
        if position >= 0:
            end = min(end, position)
    text = line[:end].replace(":", "").lower()
    try:
        return Digest.from_hex(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class Whitelist:
    issued: str
    expires: datetime  # the first instant at which it is no longer valid (on an hour)
    fqrn: str
    fingerprints: tuple[Digest, ...]
    pkcs7: bool
    cachain: bool
    raw: bytes
    signed: SignedFile | None  # None: the content of a PKCS#7 whitelist

    @classmethod
    def parse(cls, data: bytes, what: str = WHAT) -> Whitelist:
        """A signed ``.cvmfswhitelist`` (its signature is checked by the caller)."""
        signed = SignedFile.split(data, what)
        return cls._parse_letter(signed.letter, data, signed, what)

    @classmethod
    def parse_content(cls, data: bytes, what: str) -> Whitelist:
        """Whitelist text whose signature lies elsewhere (the content of a PKCS#7 whitelist).

        As the client: lines up to ``--`` or to the end; anything after ``--`` is ignored.
        """
        position = data.find(SEPARATOR)
        letter = data if position < 0 else data[: position + 1]
        return cls._parse_letter(letter, data, None, what)

    @classmethod
    def _parse_letter(
        cls, letter: bytes, raw: bytes, signed: SignedFile | None, what: str
    ) -> Whitelist:
        try:
            lines = letter.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            raise TrustError(f"{what} is not text before its signature") from None
        if lines and lines[-1] == "":
            lines.pop()
        if len(lines) < 3 or len(lines[0]) != 14:
            raise TrustError(f"{what} is malformed: first line is not a 14-digit issue time")
        expiry = lines[1]
        if len(expiry) != 15 or expiry[0] != "E" or not expiry[1:].isdigit():
            raise TrustError(f"{what} is malformed: second line is not E<YYYYMMDDhhmmss>")
        try:
            expires = datetime(
                int(expiry[1:5]), int(expiry[5:7]), int(expiry[7:9]), int(expiry[9:11]), tzinfo=UTC
            )
        except ValueError:
            raise TrustError(f"{what} is malformed: bad expiry date {expiry[1:]}") from None
        if not lines[2].startswith("N"):
            raise TrustError(f"{what} is malformed: third line is not N<repository name>")
        rest = lines[3:]
        pkcs7 = bool(rest) and rest[0] == "Vpkcs7"
        if pkcs7:
            rest = rest[1:]
        cachain = bool(rest) and rest[0] == "Wcachain"
        if cachain:
            rest = rest[1:]
        fingerprints = tuple(fp for line in rest if (fp := parse_fingerprint(line)) is not None)
        return cls(
            issued=lines[0],
            expires=expires,
            fqrn=lines[2][1:],
            fingerprints=fingerprints,
            pkcs7=pkcs7,
            cachain=cachain,
            raw=raw,
            signed=signed,
        )

    def is_expired(self, now: datetime) -> bool:
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        return now >= self.expires

    def lists(self, certificate_der: bytes) -> bool:
        """Is the certificate (DER) listed, each fingerprint in its own algorithm?"""
        return any(fp.matches(certificate_der) for fp in self.fingerprints)
