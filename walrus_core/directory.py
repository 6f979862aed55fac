"""The data directory: creating it, and the lock that allows one open instance at a time."""

from __future__ import annotations

import errno
import os
import sys

from walrus_core.errors import DirectoryLockedError, InvalidConfigError, StorageError
from walrus_core.format import LOCK_NAME


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
