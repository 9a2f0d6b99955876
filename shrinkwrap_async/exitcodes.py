"""Exit codes and the error classes that map to them.

Every error that ends a run derives from :class:`ShrinkwrapError` and carries the exit code
the command line returns for it. The codes are documented in README.md.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    PARTIAL = 1  # some objects failed; a rerun resumes
    USAGE = 2  # usage or configuration error
    TRUST = 3  # signature, whitelist or catalog hash failure
    UNREACHABLE = 4  # every host and proxy failed
    STORAGE = 5  # local storage failure: disk full, permission, hard links impossible
    LOCKED = 75  # another run holds the lock (EX_TEMPFAIL)
    SIGNAL_BASE = 128  # 128 + N: stopped by signal N


class ShrinkwrapError(Exception):
    """Base class of errors that end a run with a specific exit code."""

    exit_code: ExitCode = ExitCode.PARTIAL


class UsageError(ShrinkwrapError):
    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """A configuration file or setting is wrong or missing."""


class SpecError(UsageError):
    """A spec file line cannot be parsed."""


class TrustError(ShrinkwrapError):
    """The trust chain (whitelist, certificate, manifest, catalog hash) failed."""

    exit_code = ExitCode.TRUST


class UnreachableError(ShrinkwrapError):
    """Every configured host and proxy failed."""

    exit_code = ExitCode.UNREACHABLE


class StorageError(ShrinkwrapError):
    """The destination cannot be written: disk full, permission denied, no hard links."""

    exit_code = ExitCode.STORAGE


class UnsafePathError(ShrinkwrapError):
    """A repository entry would write outside the destination (hostile or broken input)."""

    exit_code = ExitCode.TRUST


class LockedError(ShrinkwrapError):
    exit_code = ExitCode.LOCKED


class PartialExportError(ShrinkwrapError):
    """Some objects could not be exported; everything else is complete."""

    exit_code = ExitCode.PARTIAL
