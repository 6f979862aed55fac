"""The data directory: creating it, its metadata file, and the lock that allows one open
instance at a time."""

from __future__ import annotations

import errno
import json
import os
import sys

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
    file contains the holder's pid (so a refused opener can name it); a clean release empties
    it again.
    """

    def __init__(self, root: str) -> None:
        self.path = os.path.join(root, LOCK_NAME)
        self._fd: int | None = None
        self._owner = os.getpid()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise StorageError(f"cannot open lock file {self.path!r}: {exc}") from exc
        try:
            _lock(fd)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                holder = _recorded_pid(fd)
                os.close(fd)
                raise DirectoryLockedError(_held_message(root, self.path, holder), holder) from None
            os.close(fd)
            raise StorageError(f"cannot lock {self.path!r}: {exc}") from exc
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{self._owner}\n".encode(), 0)
        except OSError:
            pass  # the pid is informational only

    def release(self) -> None:
        """Unlock (idempotent). The holder's own release empties the file first, so no stale
        pid stays behind; a forked child's copy only closes its descriptor (the parent still
        holds the lock and its pid stays recorded)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if os.getpid() == self._owner:
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass  # informational, as when it was written
        os.close(fd)  # closing the description releases the flock


def _recorded_pid(fd: int) -> int | None:
    """The pid the holder wrote into the lock file, if it is a live process."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        pid = int(text)
    except (OSError, ValueError):
        return None  # empty while the holder is between locking and writing it
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # a holder that died before writing: the lock is someone else's
    except (PermissionError, OSError):
        pass  # alive, owned by another user (or no way to tell): still the best answer
    return pid


def _held_message(root: str, lock_path: str, holder: int | None) -> str:
    if holder is None:
        by = "another Walrus instance"
    elif holder == os.getpid():
        by = f"another Walrus instance in this process (pid {holder}); close it first"
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
