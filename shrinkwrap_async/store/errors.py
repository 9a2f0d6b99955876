"""Local storage failures as :class:`StorageError` (exit 5) with a one-line message.

Every write of the export (the ``.data`` store, the visible tree, the spool of directory
metadata) that fails because of the local file system becomes a ``StorageError`` where it
happens, with the ``OSError`` as its ``__cause__``. :func:`as_storage_error` is the net of
last resort for a failure that escaped from elsewhere: it recognises local storage failures
by their errno (or by SQLite's result code) so that the user never sees a traceback for a
full, read-only or forbidden destination.
"""

from __future__ import annotations

import errno
import os
import sqlite3

from shrinkwrap_async.exitcodes import StorageError

STORAGE_ERRNOS = frozenset(
    {
        errno.ENOSPC,  # file system full
        errno.EDQUOT,  # quota exceeded
        errno.EFBIG,  # file too large (also RLIMIT_FSIZE)
        errno.EROFS,  # read-only file system
        errno.EACCES,  # permission denied
        errno.EPERM,  # operation not permitted
        errno.EMLINK,  # too many links
        errno.EIO,  # the device failed
    }
)
"""errno values that mean "this destination cannot take the write", never a network fault."""

# SQLite primary result codes of the same kind (the low byte of an extended code).
_SQLITE_STORAGE_CODES = frozenset(
    {
        3,  # SQLITE_PERM
        8,  # SQLITE_READONLY
        10,  # SQLITE_IOERR
        13,  # SQLITE_FULL
        14,  # SQLITE_CANTOPEN
    }
)


def storage_error(error: OSError, what: str) -> StorageError:
    """``what: <strerror> (<file>)`` as a StorageError; raise it ``from error``."""
    reason = error.strerror or os.strerror(error.errno or 0)
    where = f" ({error.filename})" if error.filename else ""
    return StorageError(f"{what}: {reason}{where}")


def is_storage_failure(error: BaseException) -> bool:
    """Whether ``error`` is a local storage failure (by errno, or SQLite result code)."""
    if isinstance(error, StorageError):
        return True
    if isinstance(error, OSError):
        return error.errno in STORAGE_ERRNOS
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in _SQLITE_STORAGE_CODES
    return False


def as_storage_error(error: BaseException) -> StorageError | None:
    """``error`` as a StorageError when it is a local storage failure, else None."""
    if isinstance(error, StorageError):
        return error
    if not is_storage_failure(error):
        return None
    if isinstance(error, OSError):
        converted = storage_error(error, "local storage failure")
    else:
        converted = StorageError(f"local storage failure: {error}")
    converted.__cause__ = error
    return converted
