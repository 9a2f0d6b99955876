"""The site's blacklist (``CVMFS_BLACKLIST``, by default ``/etc/cvmfs/blacklist``).

A site, or the CVMFS team through its configuration, lists there what must not be
trusted any more, whatever a whitelist says:

- certificate fingerprints (the whitelist's format, ``AB:CD:...[-RMD160|-SHAKE128]``, up
  to the first blank or ``#``): a manifest signed by such a certificate is refused, e.g.
  after a release manager's key was compromised;
- ``<fqrn N`` lines: revisions of ``fqrn`` below ``N`` are refused, e.g. a revision that
  shipped a vulnerable release, which a stale mirror or a replay could serve again.

Lines that are neither are skipped, as the client skips them; a file that does not exist
is an empty blacklist. A revision line is, as the client reads it, ``<`` and the name, a
blank or tab, any further blanks, then digits with nothing after them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shrinkwrap_async.decimal_text import decimal_or_none
from shrinkwrap_async.exitcodes import ConfigError, TrustError
from shrinkwrap_async.hashing import Digest
from shrinkwrap_async.trust.whitelist import parse_fingerprint

BLACKLIST_MAX_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True)
class Blacklist:
    fingerprints: tuple[Digest, ...] = ()
    lines: tuple[str, ...] = ()  # every line, for the revision floors of any repository
    source: Path | None = None  # the file read, for messages

    @classmethod
    def parse(cls, text: str, source: Path | None = None) -> Blacklist:
        lines = tuple(text.split("\n"))
        fingerprints = tuple(fp for line in lines if (fp := parse_fingerprint(line)) is not None)
        return cls(fingerprints, lines, source)

    @classmethod
    def load(cls, path: Path) -> Blacklist:
        """The blacklist in ``path``; a missing file is an empty one, an unreadable one a
        configuration error (the client refuses to mount then)."""
        try:
            with open(path, "rb") as handle:
                data = handle.read(BLACKLIST_MAX_SIZE + 1)
        except FileNotFoundError:
            return cls()
        except OSError as error:
            raise ConfigError(
                f"cannot read the blacklist {path}: {error.strerror or error}"
            ) from None
        if len(data) > BLACKLIST_MAX_SIZE:
            raise ConfigError(f"the blacklist {path} is larger than 16 MiB")
        return cls.parse(data.decode("utf-8", "replace"), path)

    def _named(self) -> str:
        return str(self.source) if self.source is not None else "the blacklist"

    def minimum_revision(self, fqrn: str) -> int:
        """The lowest revision of ``fqrn`` the blacklist lets through (0: any)."""
        floor = 0
        prefix = "<" + fqrn
        for line in self.lines:
            if not line.startswith(prefix) or len(line) <= len(prefix) + 1:
                continue
            if line[len(prefix)] not in " \t":
                continue
            number = decimal_or_none(line[len(prefix) + 1 :].lstrip(" \t"))
            if number is not None:
                floor = max(floor, number)
        return floor

    def check_revision(self, fqrn: str, revision: int) -> None:
        floor = self.minimum_revision(fqrn)
        if revision < floor:
            raise TrustError(
                f"revision {revision} of {fqrn} is blacklisted: {self._named()} refuses "
                f"revisions below {floor} (a stale mirror or proxy, or a replayed manifest)"
            )

    def check_certificate(self, fqrn: str, certificate_der: bytes) -> None:
        for fingerprint in self.fingerprints:
            if fingerprint.matches(certificate_der):
                raise TrustError(
                    f"the certificate of {fqrn} is blacklisted in {self._named()} "
                    f"(fingerprint {fingerprint.hex})"
                )
