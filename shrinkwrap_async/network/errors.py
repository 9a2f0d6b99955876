"""Errors of the fetch layer, one class per way an object can fail to arrive.

They derive from :class:`~shrinkwrap_async.exitcodes.ShrinkwrapError` so that a command
that lets one escape ends with a meaningful exit code; the export pipeline normally
catches them per object and records them instead.
"""

from __future__ import annotations

from shrinkwrap_async.exitcodes import ExitCode, ShrinkwrapError


class FetchError(ShrinkwrapError):
    """An object or file could not be fetched; ``path`` is relative to the base URL."""

    exit_code = ExitCode.PARTIAL

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class ObjectMissingError(FetchError):
    """Every host answered 404: the object does not exist (or no Stratum-1 has it yet)."""


class ObjectCorruptError(FetchError):
    """The bytes never matched the expected hash, even after the no-cache retry."""


class TransferError(FetchError):
    """Every host and proxy failed with transfer-class errors (connection, timeout, 5xx)."""

    exit_code = ExitCode.UNREACHABLE


class ExternalNotConfiguredError(FetchError):
    """An external file (catalog flag 128) is wanted but ``CVMFS_EXTERNAL_URL`` is not set."""

    MESSAGE = (
        "external file, but CVMFS_EXTERNAL_URL is not set; set it to the ';'-separated "
        "base URL(s) serving the repository's external data to export it"
    )

    def __init__(self, path: str) -> None:
        super().__init__(path, self.MESSAGE)
