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
    """Create ``root`` (and parents) or explain why it cannot be used."""
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
        raise InvalidConfigError(f"data directory {root!r} is not writable")


class DirectoryLock:
    """An exclusive, non-blocking lock on ``<root>/LOCK``.

    ``flock`` locks belong to an open file description, so a second instance in the same
    process conflicts just like one in another process. The kernel drops the lock when the
    holder dies, so a crashed process never leaves the directory locked.
    """

    def __init__(self, root: str) -> None:
        self.path = os.path.join(root, LOCK_NAME)
        self._fd: int | None = None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise StorageError(f"cannot open lock file {self.path!r}: {exc}") from exc
        try:
            _lock(fd)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise DirectoryLockedError(
                    f"{root!r} is already open in another Walrus instance (lock {self.path!r})"
                ) from None
            raise StorageError(f"cannot lock {self.path!r}: {exc}") from exc
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass  # the pid is informational only

    def release(self) -> None:
        """Unlock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the description releases the flock


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
