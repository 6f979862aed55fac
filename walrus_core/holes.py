"""Giving a byte range of a file back to the file system (``fallocate(PUNCH_HOLE)``).

Backends call :func:`punch_hole` from their ``walrus_discard`` hook. The file keeps its size;
the range reads as zeros afterwards and no longer occupies disk blocks.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys
from typing import Any

#: fallocate(2) mode bits (linux/falloc.h).
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


def _load_fallocate() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    fn.restype = ctypes.c_int
    return fn


_fallocate = _load_fallocate()


def punch_hole(fd: int, offset: int, size: int) -> None:
    """Deallocate ``size`` bytes at ``offset`` of the open file ``fd``; they read as zeros.

    Raises ``OSError``: ``EOPNOTSUPP`` where the platform or file system cannot punch holes
    (the caller then keeps the space), or the error fallocate reported.
    """
    if size <= 0:
        return
    if _fallocate is None:
        raise OSError(errno.EOPNOTSUPP, f"punching holes is not supported on {sys.platform}")
    while True:
        if _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, size) == 0:
            return
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise OSError(err, os.strerror(err))
