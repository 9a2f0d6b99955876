"""The ``.data`` store: one committed file per (content, metadata), named as cvmfs_shrinkwrap does.

Object names are ``XX/YY/<rest of content hash incl. algorithm id>.<meta md5>`` (format §11.5),
so an export made by cvmfs_shrinkwrap can be refreshed by this tool and the other way round.
Objects are written below ``.tmp/<pid>/`` (same file system), given their final metadata and
linked into place only once complete and verified: a killed run never leaves a truncated
object under a final name, and a committed object is never replaced (several processes may
share one store). Fan-out directories are made when first needed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import itertools
import logging
import os
import shutil
import stat
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from shrinkwrap_async.decimal_text import decimal_or_none
from shrinkwrap_async.store.errors import storage_error
from shrinkwrap_async.store.object_names import ObjectMeta, applied_xattrs, is_fanout_name

log = logging.getLogger(__name__)

TEMP_DIR = ".tmp"
FANOUT_MODE = 0o700
FICLONE = 0x40049409  # ioctl: share the source's extents (btrfs, XFS, bcachefs)
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# A file without a name (Linux), linked into place through /proc/self/fd when complete.
# read and write: an object file that cannot be linked is read back into a named temp
_UNNAMED_FLAGS = (
    os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC
    if hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
    else None
)
UNNAMED_ENV = "SHRINKWRAP_ASYNC_UNNAMED_TEMPS"  # "0": temp files with names only
_LIST_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NO_UNNAMED_ERRNOS = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT)
_NO_UNNAMED_LINK_ERRNOS = (errno.EXDEV, errno.EPERM, errno.EACCES, errno.EOPNOTSUPP, errno.EINVAL)
_proc_fd: int | None = None  # this process's /proc/self/fd, opened on first use


def _proc_fd_dir() -> int:
    """This process's ``/proc/self/fd``, opened once per process.

    An fd of it names the fd table of the process that opened it, so a forked child
    forgets its parent's (``_forget_proc_fd``) and opens its own.
    """
    global _proc_fd
    if _proc_fd is None:
        _proc_fd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return _proc_fd


def _forget_proc_fd() -> None:
    global _proc_fd
    if _proc_fd is not None:
        with contextlib.suppress(OSError):
            os.close(_proc_fd)
        _proc_fd = None


os.register_at_fork(after_in_child=_forget_proc_fd)


class DataStore:
    """Content-addressed object store below ``root`` (default ``<dest-base>/.data``).

    Methods are synchronous and meant to run in an I/O executor, a batch per call.
    """

    def __init__(self, root: Path, *, chown: bool = True) -> None:
        self.root = Path(root)
        self.chown = chown
        self._root_prefix = f"{self.root}/"
        self.temp_dir = self.root / TEMP_DIR / str(os.getpid())
        self._temp_counter = itertools.count()
        self._umask = current_umask()
        # Owner of a file this process creates in the temp dir (refined by ``prepare``).
        self._creator = (os.geteuid(), os.getegid())
        self._noreplace = _renameat2 is not None
        self._unnamed = _UNNAMED_FLAGS is not None and os.environ.get(UNNAMED_ENV) != "0"
        # Fan-out directories ("ab/cd") this process made or found: at most 65,536 short
        # names. One it has not met yet is made before the first object goes into it, so
        # a fresh store costs one mkdir per directory, not a failed link, a stat and a mkdir.
        self._fanouts: set[str] = set()
        # A store without objects when this run prepared it (a first export) can only hold
        # what this process made or sets out to make: shards split objects by content, so
        # another writer of one of ours is not expected (and would only cost a second
        # fetch). Look-ups in any other fan-out directory are answered without a call (on
        # a parallel file system each is a round trip: 16,000 failed opens for the
        # reference export).
        self._empty_at_start = False
        self._pending_fanouts: set[str] = set()
        # The store's root, opened once: the calls of every object name paths relative to
        # it, so the kernel does not walk the whole destination path for each of them.
        self._root_fd: int | None = None
        self._root_fd_lock = threading.Lock()

    @property
    def temp_dir(self) -> Path:
        return self._temp_dir

    @temp_dir.setter
    def temp_dir(self, path: Path) -> None:
        self._temp_dir = Path(path)
        self._temp_prefix = f"{self._temp_dir}/"
        # relative to the root where it is below it (absolute paths ignore a dir fd)
        self._temp_at = (
            os.path.relpath(path, self.root)
            if self._temp_dir.is_relative_to(self.root)
            else str(path)
        )

    @property
    def root_fd(self) -> int:
        """A descriptor of the store's root (opened on first use, closed with the store)."""
        fd = self._root_fd
        if fd is None:
            with self._root_fd_lock:
                fd = self._root_fd
                if fd is None:
                    try:
                        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    except OSError as error:
                        raise storage_error(
                            error, f"cannot open the object store {self.root}"
                        ) from error
                    # closed once: by close(), or when the store is collected
                    self._root_fd_closer = weakref.finalize(self, _close_quietly, fd)
                    self._root_fd = fd
        return fd

    # -- setup -----------------------------------------------------------------
    def prepare(self) -> int:
        """Create the store and this run's temp dir; sweep temps of dead runs. Returns count."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._empty_at_start = not any(map(is_fanout_name, os.listdir(self.root)))
            (self.root / TEMP_DIR).mkdir(mode=FANOUT_MODE, exist_ok=True)
            swept = self.sweep_stale_temps()
            self.temp_dir.mkdir(mode=FANOUT_MODE, exist_ok=True)
            st = os.stat(self.temp_dir)
            if st.st_mode & stat.S_ISGID:  # new files take the directory's group
                self._creator = (os.geteuid(), st.st_gid)
        except OSError as error:
            raise storage_error(error, f"cannot prepare the object store {self.root}") from error
        return swept

    def worker_spec(self) -> tuple[Any, ...]:
        """What another process needs to write objects into this store: the same temp
        directory (swept with this process's), names of its own, the same owner rules."""
        return (str(self.root), self.chown, str(self.temp_dir), self._creator)

    @classmethod
    def from_worker_spec(cls, spec: tuple[Any, ...]) -> DataStore:
        root, chown, temp_dir, creator = spec
        store = cls(Path(root), chown=chown)
        store.temp_dir = Path(temp_dir)
        store._temp_prefix = f"{temp_dir}/w{os.getpid()}-"
        store._creator = tuple(creator)
        return store

    def sweep_stale_temps(self) -> int:
        """Remove temp dirs left by runs that no longer exist (killed, crashed)."""
        swept = 0
        base = self.root / TEMP_DIR
        for child in base.iterdir() if base.is_dir() else ():
            pid = decimal_or_none(child.name)
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
        self.close()

    def close(self) -> None:
        """Close the root's descriptor (the store opens it again if used once more)."""
        with self._root_fd_lock:
            if self._root_fd is not None:
                self._root_fd = None
                self._root_fd_closer()

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

    def look_up(self, names: Sequence[str]) -> list[str]:
        """For each name: itself if committed, else a committed object of the same content
        under other metadata, else ``""`` (run it in an executor).

        In a fan-out directory this process has met, one stat says whether the object is
        there; otherwise one listing of the directory answers both questions, and a
        missing directory (most of them, in a new store) costs one failed open.
        """
        found: list[str] = []
        root = self.root_fd
        for name in names:
            fanout, _, base = name.rpartition("/")
            known = fanout in self._fanouts
            if not known and self._empty_at_start and fanout not in self._pending_fanouts:
                found.append("")  # nothing of this content made since the store was empty
                continue
            try:
                if known:
                    try:
                        if os.stat(name, dir_fd=root, follow_symlinks=False).st_nlink > 0:
                            found.append(name)
                            continue
                    except (FileNotFoundError, NotADirectoryError):
                        pass
                listing = self._listing(fanout)
            except OSError as error:
                raise storage_error(error, f"cannot look up object {name}") from error
            if listing is None:
                found.append("")
            elif base in listing:
                found.append(name)
            else:
                found.append(_same_content_in(fanout, base, listing) or "")
        return found

    def note_pending(self, name: str) -> None:
        """This process sets out to make object ``name`` (fetch, stream or copy): look-ups
        in its fan-out directory ask the file system from now on."""
        if self._empty_at_start:
            self._pending_fanouts.add(name.rpartition("/")[0])

    def same_content(self, name: str) -> str | None:
        """A committed object with the content of ``name`` under other metadata, if any.

        Objects of one content share their fan-out directory and the part of the name
        before the metadata hash, so this is one listing of a small directory.
        """
        fanout, _, base = name.rpartition("/")
        try:
            listing = self._listing(fanout)
        except OSError as error:
            raise storage_error(error, f"cannot list {fanout} of the object store") from error
        return None if listing is None else _same_content_in(fanout, base, listing)

    def _listing(self, fanout: str) -> list[str] | None:
        """The names in the fan-out directory ``fanout``; None if it does not exist."""
        try:
            fd = os.open(fanout, _LIST_FLAGS, dir_fd=self.root_fd)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            names = os.listdir(fd)
        finally:
            os.close(fd)
        self._fanouts.add(fanout)
        return names

    # -- writing ----------------------------------------------------------------
    def new_temp(self, mode: int = 0o600) -> tuple[int, Path]:
        """Open a fresh temp file for writing; returns (fd, path).

        Temp names are a counter: the directory is this process's own, so they are unique
        without a random name (``uuid4`` costs a ``getrandom`` call per object).
        """
        while True:
            path = f"{self._temp_prefix}{next(self._temp_counter)}"
            try:
                fd = os.open(path, _TEMP_FLAGS, mode)
            except FileExistsError:
                continue  # left by a dead process of the same pid (shards do not sweep)
            except OSError as error:
                raise storage_error(error, "cannot create a temporary object") from error
            return fd, Path(path)

    def new_object_file(self, mode: int = 0o600) -> tuple[int, Path | None]:
        """An empty file to write an object into: ``(fd, temp)``.

        Unnamed (``O_TMPFILE``, ``temp`` None) where the file system has them: the file
        has no name until it is linked into place, complete, so there is no temp name to
        enter in and remove from the temp directory, and a killed run leaves nothing
        behind. Else a named temp. Either way :meth:`commit_object_file` puts it in place.
        """
        if self._unnamed:
            try:
                fd = os.open(self._temp_at, _UNNAMED_FLAGS, mode, dir_fd=self.root_fd)
            except OSError as error:
                if error.errno not in _NO_UNNAMED_ERRNOS:
                    raise storage_error(error, "cannot create a temporary object") from error
                self._unnamed = False
            else:
                return fd, None
        return self.new_temp(mode)

    def commit_object_file(
        self,
        fd: int,
        temp: Path | None,
        name: str,
        meta: ObjectMeta,
        *,
        created_mode: int = 0o600,
    ) -> str:
        """Give the file of :meth:`new_object_file` (made with ``created_mode``) its
        metadata and the name ``name``; ``fd`` is closed in every case (a delayed write
        error there fails the commit). Returns the object's path."""
        if temp is not None:
            return str(self.commit_fd(fd, str(temp), name, meta, created_mode=created_mode))
        try:
            try:
                self._set_metadata(fd, name, meta, created_mode=created_mode)
                if self._linked_unnamed(fd, name):
                    return f"{self._root_prefix}{name}"
                copy, copy_temp = self.new_temp()  # the bytes are only in the unnamed file
                try:
                    clone_or_copy(fd, copy, os.fstat(fd).st_size)
                except OSError:
                    os.close(copy)
                    _unlink_quietly(str(copy_temp))
                    raise
            finally:
                os.close(fd)
        except OSError as error:
            raise storage_error(error, f"cannot write object {name}") from error
        return str(self.commit_fd(copy, str(copy_temp), name, meta, created_mode=0o600))

    def commit_fd(
        self, fd: int, temp: str, name: str, meta: ObjectMeta, *, created_mode: int
    ) -> Path:
        """Give the open temp ``fd`` its metadata, close it and put it in place as ``name``.

        Only what differs from how the file was created is changed: the owner when it is
        not the creator's, the mode when the umask (or ``created_mode``) differs. The fd is
        closed in every case; on failure the temp is removed.
        """
        try:
            try:
                self._set_metadata(fd, name, meta, created_mode=created_mode)
            finally:
                os.close(fd)
            final = f"{self._root_prefix}{name}"
            self._publish(temp, final, name)
        except OSError as error:
            _unlink_quietly(temp)
            raise storage_error(error, f"cannot commit object {name}") from error
        return Path(final)

    def _set_metadata(self, fd: int, name: str, meta: ObjectMeta, *, created_mode: int) -> None:
        mode = meta.mode & 0o777
        if self.chown and (meta.uid, meta.gid) != self._creator:
            os.fchown(fd, meta.uid, meta.gid)
        if created_mode < 0 or created_mode & ~self._umask != mode:
            os.fchmod(fd, mode)
        for key, value in applied_xattrs(meta.xattrs):
            try:
                os.setxattr(fd, key, value)
            except OSError as error:
                if error.errno not in (errno.ENOTSUP, errno.EPERM, errno.EACCES):
                    raise
                log.debug("xattr %s not kept on %s: %s", key, name, error.strerror)
        os.utime(fd, (meta.mtime, meta.mtime))

    def set_mtime(self, name: str, mtime: int) -> bool:
        """Give the object ``name`` this mtime; False if it already had it."""
        path = self.root / name
        try:
            if int(os.stat(path).st_mtime) == mtime:
                return False
            os.utime(path, (mtime, mtime))
        except OSError as error:
            raise storage_error(error, f"cannot set the mtime of object {name}") from error
        return True

    def _publish(self, temp: str, final: str, name: str) -> None:
        """Give ``temp`` its final name without ever replacing a committed object.

        A rename over an existing object would drop the old inode's last link while another
        process (a shard, a run of another repository sharing ``.data``) may be hard-linking
        it, and that link then fails with ENOENT. An object of the same name holds the same
        verified content and metadata, so the first one stays and ``temp`` is dropped.
        ``renameat2(RENAME_NOREPLACE)`` does this in one call; where the file system (or
        libc) lacks it, a hard link and an unlink; where it has no hard links, a rename.
        The fan-out directory is made as :meth:`_in_fanout` says.
        """
        self._in_fanout(
            name,
            lambda: self._place_temp(temp, final),
            source_gone=lambda: not os.path.exists(temp),
        )

    def _place_temp(self, temp: str, final: str) -> None:
        """One attempt of :meth:`_publish` (FileNotFoundError: no fan-out directory yet)."""
        if self._noreplace:
            try:
                rename_noreplace(temp, final)
                return
            except FileExistsError:
                os.unlink(temp)  # committed meanwhile by another process
                return
            except OSError as error:
                if error.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
                    raise
                self._noreplace = False  # this file system cannot: link + unlink
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

    def _in_fanout(
        self,
        name: str,
        place: Callable[[], None],
        source_gone: Callable[[], bool] | None = None,
    ) -> None:
        """``place()`` the object ``name`` in its fan-out directory, made first if this
        process has not met it yet. Should ``place()`` still say ENOENT (the directory was
        removed meanwhile), the directories are made again and ``place()`` tried once more,
        unless ``source_gone()``: the ENOENT was not theirs."""
        fanout = name.rpartition("/")[0]
        if fanout not in self._fanouts:
            self._make_fanout(fanout)
        try:
            place()
        except FileNotFoundError:
            if source_gone is not None and source_gone():
                raise
            self._fanouts.discard(fanout)
            self._make_fanout(fanout)
            place()

    def write_object(self, name: str, content: bytes, meta: ObjectMeta) -> str:
        """Write a small verified object in one go: create, write, metadata on the fd, link
        into place (:meth:`new_object_file`, :meth:`commit_object_file`).

        About five system calls: open, write, utime, link, close (plus chown or chmod only
        when the owner or the umask make them necessary).
        """
        mode = meta.mode & 0o777
        fd, temp = self.new_object_file(mode)
        try:
            _write_all(fd, content)
        except OSError as error:
            os.close(fd)
            if temp is not None:
                _unlink_quietly(str(temp))
            raise storage_error(error, f"cannot write object {name}") from error
        return self.commit_object_file(fd, temp, name, meta, created_mode=mode)

    def _linked_unnamed(self, fd: int, name: str) -> bool:
        """Link the unnamed file ``fd`` as ``name`` (an object already there, made meanwhile
        by another process, stays, as in :meth:`_publish`). False where the file system
        refuses such links (e.g. protected_hardlinks, a FUSE file system): this store then
        makes named temps from now on."""
        fds, root = _proc_fd_dir(), self.root_fd

        def link() -> None:
            # linkat(AT_SYMLINK_FOLLOW) on the /proc entry (os.link calls plain link(),
            # which would link the magic symlink itself, unless a directory fd is given).
            with contextlib.suppress(FileExistsError):
                os.link(str(fd), name, src_dir_fd=fds, dst_dir_fd=root, follow_symlinks=True)

        try:
            self._in_fanout(name, link)
        except OSError as error:
            if error.errno not in _NO_UNNAMED_LINK_ERRNOS:
                raise
            log.debug("unnamed temp files not linkable here (%s): named ones", error)
            self._unnamed = False
            return False
        return True

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
            fd, temp = self.new_object_file()
            try:
                clone_or_copy(source_fd, fd, size)
            except OSError as error:
                os.close(fd)
                if temp is not None:
                    self.discard(temp)
                raise storage_error(error, f"cannot write object {name}") from error
        finally:
            os.close(source_fd)
        return Path(self.commit_object_file(fd, temp, name, meta))

    def discard(self, temp: Path) -> None:
        temp.unlink(missing_ok=True)

    def _make_fanout(self, fanout: str) -> None:
        """Make the fan-out directory ``fanout`` ("ab/cd") and its parent where missing."""
        if not fanout:
            return
        root = self.root_fd
        try:
            os.mkdir(fanout, FANOUT_MODE, dir_fd=root)
        except FileExistsError:
            pass
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):
                os.mkdir(fanout.partition("/")[0], FANOUT_MODE, dir_fd=root)
            with contextlib.suppress(FileExistsError):
                os.mkdir(fanout, FANOUT_MODE, dir_fd=root)
        self._fanouts.add(fanout)


def _write_all(fd: int, content: bytes) -> None:
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view) :]


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
    """Whether process ``pid`` exists (one of ours or not: a temp dir is then left alone).

    A number that cannot be a process id (0, negative, beyond ``pid_t``) is none."""
    if not 0 < pid < 2**31:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def current_umask() -> int:
    """The process umask, read without changing it where /proc says it (Linux 4.7+)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _same_content_in(fanout: str, base: str, listing: Iterable[str]) -> str | None:
    """An object of ``listing`` (in ``fanout``) with the content of ``base``, not itself."""
    prefix = base.rsplit(".", 1)[0] + "."
    for candidate in listing:
        if candidate.startswith(prefix) and candidate != base:
            return f"{fanout}/{candidate}"
    return None


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _load_renameat2() -> Any:
    """libc's ``renameat2`` (glibc 2.28+), or None."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc's
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()


def rename_noreplace(source: str, target: str) -> None:
    """Rename ``source`` to ``target`` unless ``target`` exists (FileExistsError then).

    Raises OSError(EINVAL/ENOSYS/ENOTSUP) where the file system or kernel cannot.
    """
    if _renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    if _renameat2(
        _AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE
    ):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), source, None, target)
