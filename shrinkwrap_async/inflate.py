"""zlib inflation for data objects: ISA-L's where python-isal is installed, else zlib's.

Inflating the stored objects is the export's largest CPU cost after the file system.
ISA-L's inflate (``isal.isal_zlib``, the same interface as the standard module) gives the
same bytes in about half the time: 0.80 s against 1.55 s of one core for the reference
benchmark repository's 18,029 objects. Both are used through :func:`decompressobj` and
:data:`INFLATE_ERRORS` only.

``SHRINKWRAP_ASYNC_INFLATE=zlib`` selects the standard module (for comparisons, or should a
platform's ISA-L build misbehave).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from typing import Any

BACKEND_ENV = "SHRINKWRAP_ASYNC_INFLATE"

Decompressor = Any  # zlib's and isal's decompress objects (no common class to name)


def available_backends() -> dict[str, tuple[Callable[[], Decompressor], tuple[type, ...]]]:
    """``{name: (decompressobj factory, exception classes of a bad stream)}``, preferred first."""
    backends: dict[str, tuple[Callable[[], Decompressor], tuple[type, ...]]] = {}
    try:
        from isal import isal_zlib
    except ImportError:
        pass
    else:
        backends["isal"] = (isal_zlib.decompressobj, (isal_zlib.error, zlib.error))
    backends["zlib"] = (zlib.decompressobj, (zlib.error,))
    return backends


_BACKENDS = available_backends()
BACKEND = os.environ.get(BACKEND_ENV, "")
if BACKEND not in _BACKENDS:
    BACKEND = next(iter(_BACKENDS))
decompressobj: Callable[[], Decompressor] = _BACKENDS[BACKEND][0]
# A bad stream raises one of these, whichever backend its decompress object came from.
INFLATE_ERRORS: tuple[type, ...] = tuple(
    dict.fromkeys(error for _, errors in _BACKENDS.values() for error in errors)
)
