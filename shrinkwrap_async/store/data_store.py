"""The ``.data`` store: one committed file per (content, metadata), named as cvmfs_shrinkwrap does.

Object names are ``XX/YY/<rest of content hash incl. algorithm id>.<meta md5>`` (format §11.5),
so an export made by cvmfs_shrinkwrap can be refreshed by this tool and the other way round.
Objects are written below ``.tmp/<pid>/`` (same file system), given their final metadata and
linked into place only once complete and verified: a killed run never leaves a truncated
object under a final name, and a committed object is never replaced (several processes may
share one store). Fan-out directories are made when first needed.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import shutil
import stat
import struct
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from shrinkwrap_async.hashing import Digest
from shrinkwrap_async.store.errors import storage_error

log = logging.getLogger(__name__)

TEMP_DIR = ".tmp"
FANOUT_MODE = 0o700
FICLONE = 0x40049409  # ioctl: share the source's extents (btrfs, XFS, bcachefs)
Xattrs = Sequence[tuple[str, bytes]]


def serialize_xattrs(xattrs: Xattrs) -> bytes:
    """The catalog xattr blob (format §6.8): version 1, count, then sorted key/value pairs."""
    items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in xattrs)
    out = bytearray((1, len(items)))
    for key, value in items:
        out += bytes((len(key), len(value))) + key + value
    return bytes(out)


def meta_hash(mode: int, uid: int, gid: int, xattrs: Xattrs = ()) -> str:
    """MD5 of mode&0777, uid, gid (little-endian 32 bit, each followed by a 0 byte) and xattrs.

    Keys starting with ``security.selinux`` are left out, as cvmfs_shrinkwrap does.
    """
    kept = [(k, v) for k, v in xattrs if not k.lower().startswith("security.selinux")]
    blob = struct.pack("<IxIxIx", mode & 0o777, uid, gid)
    if kept:
        blob += serialize_xattrs(kept)
    return hashlib.md5(blob).hexdigest()


def chunk_list_digest(chunk_digests: Iterable[Digest]) -> Digest:
    """Whole-file identity of a chunked file: hash of its binary chunk digests in order (§7)."""
    digests = list(chunk_digests)
    if not digests:
        raise ValueError("a chunked file needs at least one chunk")
    algorithm = digests[0].algorithm
    return algorithm.hash(b"".join(d.raw for d in digests))


def object_name(content: Digest, meta: str) -> str:
    """``XX/YY/<rest>.<meta>``, relative to the store root."""
    text = content.hex
    return f"{text[:2]}/{text[2:4]}/{text[4:]}.{meta}"


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """Metadata a committed object carries: that of the first entry that created it."""

    mode: int
    uid: int
    gid: int
    mtime: int
    xattrs: tuple[tuple[str, bytes], ...] = ()

    @property
    def meta_hash(self) -> str:
        return meta_hash(self.mode, self.uid, self.gid, self.xattrs)


class DataStore:
    """Content-addressed object store below ``root`` (default ``<dest-base>/.data``).

    Methods are synchronous and meant to run in an I/O executor, a batch per call.
    """

    def __init__(self, root: Path, *, chown: bool = True) -> None:
        self.root = Path(root)
        self.chown = chown
        self.temp_dir = self.root / TEMP_DIR / str(os.getpid())
        self._known_fanout: set[str] = set()

    # -- setup -----------------------------------------------------------------
    def prepare(self) -> int:
        """Create the store and this run's temp dir; sweep temps of dead runs. Returns count."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            (self.root / TEMP_DIR).mkdir(mode=FANOUT_MODE, exist_ok=True)
            swept = self.sweep_stale_temps()
            self.temp_dir.mkdir(mode=FANOUT_MODE, exist_ok=True)
        except OSError as error:
            raise storage_error(error, f"cannot prepare the object store {self.root}") from error
        return swept

    def sweep_stale_temps(self) -> int:
        """Remove temp dirs left by runs that no longer exist (killed, crashed)."""
        swept = 0
        base = self.root / TEMP_DIR
        for child in base.iterdir() if base.is_dir() else ():
            pid = int(child.name) if child.name.isdigit() else None
            if pid is not None and pid != os.getpid() and process_alive(pid):
                continue  # a concurrent run sharing this store
            swept += sum(1 for _ in child.iterdir()) if child.is_dir() else 1
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        return swept

    def cleanup(self) -> None:
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    # -- lookups ----------------------------------------------------------------
    def path_for(self, name: str) -> Path:
        return self.root / name

    def exists(self, name: str) -> bool:
        try:
            return os.stat(self.root / name, follow_symlinks=False).st_nlink > 0
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as error:
            raise storage_error(error, f"cannot look up object {name}") from error

    def existing(self, names: Iterable[str]) -> set[str]:
        """Which of ``names`` are committed (one cheap stat each)."""
        return {name for name in names if self.exists(name)}

    def same_content(self, name: str) -> str | None:
        """A committed object with the content of ``name`` under other metadata, if any.

        Objects of one content share their fan-out directory and the part of the name
        before the metadata hash, so this is one listing of a small directory.
        """
        fanout, _, base = name.rpartition("/")
        prefix = base.rsplit(".", 1)[0] + "."
        try:
            names = os.listdir(self.root / fanout)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as error:
            raise storage_error(error, f"cannot list {fanout} of the object store") from error
        for candidate in names:
            if candidate.startswith(prefix) and candidate != base:
                return f"{fanout}/{candidate}"
        return None

    # -- writing ----------------------------------------------------------------
    def new_temp(self) -> tuple[int, Path]:
        """Open a fresh temp file for writing; returns (fd, path)."""
        path = self.temp_dir / uuid.uuid4().hex
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as error:
            raise storage_error(error, "cannot create a temporary object") from error
        return fd, path

    def commit(self, temp: Path, name: str, meta: ObjectMeta) -> Path:
        """Give ``temp`` its metadata and put it in place as ``name``. Returns the final path."""
        final = self.root / name
        try:
            fd = os.open(temp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                if self.chown:
                    os.fchown(fd, meta.uid, meta.gid)
                os.fchmod(fd, meta.mode & 0o777)
                for key, value in meta.xattrs:
                    try:
                        os.setxattr(fd, key, value)
                    except OSError as error:
                        if error.errno not in (errno.ENOTSUP, errno.EPERM, errno.EACCES):
                            raise
                        log.debug("xattr %s not kept on %s: %s", key, name, error.strerror)
                os.utime(fd, (meta.mtime, meta.mtime))
            finally:
                os.close(fd)
            self._ensure_fanout(name)
            self._publish(temp, final)
        except OSError as error:
            raise storage_error(error, f"cannot commit object {name}") from error
        return final

    @staticmethod
    def _publish(temp: Path, final: Path) -> None:
        """Give ``temp`` its final name without ever replacing a committed object.

        A rename over an existing object would drop the old inode's last link while another
        process (a shard, a run of another repository sharing ``.data``) may be hard-linking
        it, and that link then fails with ENOENT. An object of the same name holds the same
        verified content and metadata, so the first one stays and ``temp`` is dropped. Where
        the file system has no hard links, a rename it is.
        """
        try:
            os.link(temp, final)
        except FileExistsError:
            pass  # committed meanwhile by another process: keep that one
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            os.rename(temp, final)
            return
        os.unlink(temp)

    def write_object(self, name: str, content: bytes, meta: ObjectMeta) -> Path:
        """Write a small verified object in one go (temp, metadata, rename)."""
        fd, temp = self.new_temp()
        try:
            with os.fdopen(fd, "wb", closefd=True) as f:
                f.write(content)
        except OSError as error:
            temp.unlink(missing_ok=True)
            raise storage_error(error, f"cannot write object {name}") from error
        return self.commit(temp, name, meta)

    def copy_object(self, source: str, name: str, meta: ObjectMeta, size: int) -> Path | None:
        """Make ``name`` from the committed object ``source`` (same content, other metadata).

        A reflink where the file system has them, else an in-kernel copy; then the usual
        metadata and rename. Returns None, making nothing, when ``source`` is not a regular
        file of ``size`` bytes (the caller then fetches the object).
        """
        try:
            source_fd = os.open(self.root / source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as error:
            if error.errno == errno.ELOOP:
                return None
            raise storage_error(error, f"cannot read object {source}") from error
        try:
            st = os.fstat(source_fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != size:
                return None
            fd, temp = self.new_temp()
            try:
                clone_or_copy(source_fd, fd, size)
            except OSError as error:
                temp.unlink(missing_ok=True)
                raise storage_error(error, f"cannot write object {name}") from error
            finally:
                os.close(fd)
        finally:
            os.close(source_fd)
        try:
            return self.commit(temp, name, meta)
        except BaseException:
            self.discard(temp)
            raise

    def discard(self, temp: Path) -> None:
        temp.unlink(missing_ok=True)

    def _ensure_fanout(self, name: str) -> None:
        fanout = name[:5]
        if fanout in self._known_fanout:
            return
        path = self.root / fanout
        os.makedirs(path, mode=FANOUT_MODE, exist_ok=True)
        self._known_fanout.add(fanout)


def clone_or_copy(source_fd: int, target_fd: int, size: int) -> str:
    """Give ``target_fd`` the ``size`` bytes of ``source_fd``; returns how ("reflink", "copy").

    A reflink shares the data blocks (no space used, copy-on-write); where the file system
    cannot, ``copy_file_range`` (in-kernel, may still share blocks) or ``sendfile``.
    """
    try:
        fcntl.ioctl(target_fd, FICLONE, source_fd)
        return "reflink"
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
            raise
    offset = 0
    use_copy_range = hasattr(os, "copy_file_range")
    while offset < size:
        if use_copy_range:
            try:
                sent = os.copy_file_range(source_fd, target_fd, size - offset, offset, offset)
            except OSError as error:
                if error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                use_copy_range = False
                continue
        else:
            os.lseek(target_fd, offset, os.SEEK_SET)
            sent = os.sendfile(target_fd, source_fd, offset, size - offset)
        if sent == 0:
            raise OSError(errno.EIO, "source object shorter than expected")
        offset += sent
    return "copy"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one of ours or not: a temp dir is then left alone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
