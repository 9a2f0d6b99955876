"""shrinkwrap-async: export CernVM-FS repositories over HTTP into plain POSIX trees."""

__version__ = "0.1.0"
