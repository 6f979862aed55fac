"""Walrus for Python: an embedded, topic-based write-ahead log with pluggable storage backends.

>>> from walrus_core import Walrus
>>> with Walrus(data_dir="/tmp/wal") as wal:          # doctest: +SKIP
...     wal.append_for_topic("events", b"hello")
...     wal.read_next("events")
"""

from walrus_core.api import Walrus
from walrus_core.config import FsyncSchedule, Geometry, Limits, ReadConsistency
from walrus_core.entry import Entry
from walrus_core.errors import (
    BackendUnavailableError,
    BatchTooLargeError,
    CorruptionError,
    DirectoryLockedError,
    EntryTooLargeError,
    ForkedInstanceError,
    InvalidConfigError,
    InvalidTopicError,
    OffsetOutOfRangeError,
    StorageError,
    UnsupportedFormatError,
    WalrusClosedError,
    WalrusError,
    WalrusValueError,
)
from walrus_core.plugins import available_backends, disable_fd_backend, enable_fd_backend

__all__ = [
    "BackendUnavailableError",
    "BatchTooLargeError",
    "CorruptionError",
    "DirectoryLockedError",
    "Entry",
    "EntryTooLargeError",
    "ForkedInstanceError",
    "FsyncSchedule",
    "Geometry",
    "InvalidConfigError",
    "InvalidTopicError",
    "Limits",
    "OffsetOutOfRangeError",
    "ReadConsistency",
    "StorageError",
    "UnsupportedFormatError",
    "Walrus",
    "WalrusClosedError",
    "WalrusError",
    "WalrusValueError",
    "available_backends",
    "disable_fd_backend",
    "enable_fd_backend",
]
__version__ = "0.1.0"
