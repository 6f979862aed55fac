"""The data directory: creating it, its metadata file, and the lock that allows one open
instance at a time."""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import sys
import weakref

from walrus_core.config import Geometry
from walrus_core.errors import (
    DirectoryLockedError,
    InvalidConfigError,
    StorageError,
    UnsupportedFormatError,
)
from walrus_core.format import FORMAT_VERSION, LOCK_NAME, META_NAME

FORMAT_NAME = "walrus-python"


def prepare_root(root: str) -> None:
    """Create ``root`` (and parents) or explain why it cannot be used.

    A path that cannot name a directory raises :class:`InvalidConfigError`; a directory this
    process may not create or write (permissions, a read-only file system) raises
    :class:`StorageError` whose ``errno`` says why (``EACCES``, ``EROFS``), whichever directory
    on the path is at fault.
    """
    if os.path.exists(root) and not os.path.isdir(root):
        raise InvalidConfigError(f"data directory {root!r} exists and is not a directory")
    try:
        os.makedirs(root, exist_ok=True)
    except FileExistsError as exc:
        raise InvalidConfigError(f"data directory {root!r} cannot be created: {exc}") from exc
    except NotADirectoryError as exc:
        raise InvalidConfigError(f"data directory {root!r}: a parent is a file") from exc
    except OSError as exc:
        raise StorageError(f"data directory {root!r} cannot be created: {exc}") from exc
    if not os.access(root, os.W_OK | os.X_OK):
        code = errno.EROFS if _read_only_file_system(root) else errno.EACCES
        cause = OSError(code, os.strerror(code), root)
        raise StorageError(
            f"data directory {root!r} is not writable by this process: {os.strerror(code)}"
        ) from cause


def _read_only_file_system(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & getattr(os, "ST_RDONLY", 0))
    except (OSError, AttributeError):  # no statvfs on Windows
        return False


class DirectoryLock:
    """An exclusive, non-blocking lock on ``<root>/LOCK``.

    ``flock`` locks belong to an open file description, so a second instance in the same
    process conflicts just like one in another process. The kernel drops the lock when the
    holder dies, so a crashed process never leaves the directory locked. While it is held the
    file says who holds it (pid, host and pid namespace, so that a refused opener names the
    holder only when that pid means the same process for it); a clean release empties it.
    """

    def __init__(self, root: str) -> None:
        self.path = os.path.join(root, LOCK_NAME)
        self._fd: int | None = None
        self._owner = os.getpid()
        self._identity: tuple[int, int] | None = None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise StorageError(f"cannot open lock file {self.path!r}: {exc}") from exc
        _opening.add(fd)  # a child forked from here on does not keep it (see _after_fork)
        try:
            try:
                _lock(fd)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    here = _file_identity(fd) in _held_here
                    holder = None if here else _recorded_holder(fd)
                    message = _held_message(root, self.path, holder, here)
                    raise DirectoryLockedError(message, os.getpid() if here else holder) from None
                raise StorageError(f"cannot lock {self.path!r}: {exc}") from exc
        except BaseException:
            _opening.discard(fd)
            os.close(fd)
            raise
        self._fd = fd
        _live.add(self)
        _opening.discard(fd)
        self._identity = _file_identity(fd)
        if self._identity is not None:
            _held_here.add(self._identity)
        _record_holder(fd)

    def release(self) -> None:
        """Unlock (idempotent). The holder's own release empties the file first, so no stale
        pid stays behind; a forked child's copy only closes its descriptor (the parent still
        holds the lock and its pid stays recorded)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if os.getpid() == self._owner:
            if self._identity is not None:
                _held_here.discard(self._identity)
            if _RECORDS_HOLDER:
                try:
                    os.ftruncate(fd, 0)
                except OSError:
                    pass  # informational, as when it was written
        os.close(fd)  # closing the description releases the flock


#: (st_dev, st_ino) of the lock files this process holds: "held by this process" is decided
#: from these, never by comparing pids (a pid may mean another process in another namespace).
_held_here: set[tuple[int, int]] = set()
#: Windows locks byte 0 of the file, where the holder would be written, and has no pread.
_RECORDS_HOLDER = sys.platform != "win32"
_PID_LINE = re.compile(r"^[1-9][0-9]{0,9}$")
#: Lock descriptors being opened, and the locks holding one: a forked child closes its copies,
#: since a copy of the descriptor would keep the parent's flock alive for as long as the child
#: runs, also when the fork came from another thread while an instance was opening.
_opening: set[int] = set()
_live: weakref.WeakSet[DirectoryLock] = weakref.WeakSet()


def _after_fork() -> None:
    """In a forked child: hold none of the parent's locks."""
    _held_here.clear()
    for fd in list(_opening):
        try:
            os.close(fd)
        except OSError:
            pass
    _opening.clear()
    for lock in list(_live):
        held, lock._fd = lock._fd, None
        if held is not None:
            try:
                os.close(held)  # the child's copy only: the parent's flock stays
            except OSError:
                pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _file_identity(fd: int) -> tuple[int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _namespace() -> str:
    """This process's host and pid namespace: where a pid names one process."""
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = ""
    return f"{socket.gethostname()} {pid_ns}".strip()


def _record_holder(fd: int) -> None:
    if not _RECORDS_HOLDER:
        return
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n{_namespace()}\n".encode(), 0)
    except Exception:
        pass  # informational only: the lock is what matters


def _recorded_holder(fd: int) -> int | None:
    """The pid the holder wrote into the lock file, when it is a live process of this host and
    pid namespace; None when unknown."""
    if not _RECORDS_HOLDER:
        return None
    try:
        lines = os.pread(fd, 512, 0).decode("ascii").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    # Empty while the holder is between locking and writing; the pid is a plain decimal.
    if len(lines) < 2 or not _PID_LINE.match(lines[0]) or lines[1] != _namespace():
        return None
    pid = int(lines[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # a holder that died before writing: the lock is someone else's
    except (OSError, OverflowError):
        pass  # alive, owned by another user (or no way to tell): still the best answer
    return pid


def _held_message(root: str, lock_path: str, holder: int | None, here: bool) -> str:
    if here:
        by = f"another Walrus instance in this process (pid {os.getpid()}); close it first"
    elif holder is None:
        by = "another Walrus instance"
    else:
        by = f"another Walrus instance in process {holder}"
    return f"{root!r} is already open in {by} (lock {lock_path!r})"


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock(fd: int) -> None:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            raise OSError(errno.EACCES, str(exc)) from exc

else:
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


# --- the metadata file ---------------------------------------------------------------------


class DamagedMetaError(InvalidConfigError):
    """``walrus.json`` exists but cannot be read (opening infers the geometry instead)."""


def write_meta(root: str, geometry: Geometry) -> None:
    """Record the geometry of a directory (atomically: temp file, fsync, rename; raises
    OSError)."""
    doc = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "block_size": geometry.block_size,
        "blocks_per_file": geometry.blocks_per_file,
    }
    path = os.path.join(root, META_NAME)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(root)


def read_meta(root: str) -> Geometry | None:
    """The recorded geometry, None if there is none.

    Raises :class:`DamagedMetaError` if the file is damaged, and
    :class:`UnsupportedFormatError` for a format version this code does not read (never guess
    at another format).
    """
    path = os.path.join(root, META_NAME)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return None
    except PermissionError as exc:  # intact but not ours to read: not damage
        raise StorageError(f"{path} cannot be read by this process: {exc}") from exc
    except (OSError, ValueError) as exc:
        raise DamagedMetaError(f"{path} is unreadable: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise DamagedMetaError(f"{path} is not a Walrus metadata file")
    version = doc.get("version")
    if version != FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"{path}: the directory is in on-disk format version {version!r}; this version of"
            f" walrus-core reads format version {FORMAT_VERSION} only"
        )
    try:
        return Geometry(block_size=doc["block_size"], blocks_per_file=doc["blocks_per_file"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DamagedMetaError(f"{path} holds no valid geometry: {exc}") from exc


def fsync_dir(path: str) -> None:
    """Make a directory's entries (new or renamed files) durable, where the OS allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
