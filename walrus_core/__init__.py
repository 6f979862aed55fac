"""Walrus for Python: an embedded, topic-based write-ahead log with pluggable storage backends.

>>> from walrus_core import Walrus
>>> with Walrus(data_dir="/tmp/wal") as wal:          # doctest: +SKIP
...     wal.append_for_topic("events", b"hello")
...     wal.read_next("events")
"""

from walrus_core.api import Walrus
from walrus_core.config import FsyncSchedule, Geometry, Limits, ReadConsistency
from walrus_core.connect import connect
from walrus_core.entry import Entry, Payload
from walrus_core.errors import (
    AppendOutcomeUnknownError,
    BackendUnavailableError,
    BatchTooLargeError,
    CorruptionError,
    DirectoryLockedError,
    EntryTooLargeError,
    ForkedInstanceError,
    InvalidConfigError,
    InvalidTopicError,
    OffsetOutOfRangeError,
    RemoteUnavailableError,
    StorageError,
    UnknownTopicError,
    UnsupportedFormatError,
    WalrusClosedError,
    WalrusError,
    WalrusValueError,
)
from walrus_core.info import (
    ConsumerInfo,
    Latency,
    LogInfo,
    ReclaimResult,
    Retention,
    Stats,
    TopicInfo,
)
from walrus_core.log import WalrusLog
from walrus_core.plugins import available_backends, disable_fd_backend, enable_fd_backend
from walrus_core.readonly import WalrusReader

__all__ = [
    "AppendOutcomeUnknownError",
    "BackendUnavailableError",
    "BatchTooLargeError",
    "ConsumerInfo",
    "CorruptionError",
    "DirectoryLockedError",
    "Entry",
    "EntryTooLargeError",
    "ForkedInstanceError",
    "FsyncSchedule",
    "Geometry",
    "InvalidConfigError",
    "InvalidTopicError",
    "Latency",
    "Limits",
    "LogInfo",
    "OffsetOutOfRangeError",
    "Payload",
    "ReadConsistency",
    "ReclaimResult",
    "RemoteUnavailableError",
    "Retention",
    "Stats",
    "StorageError",
    "TopicInfo",
    "UnknownTopicError",
    "UnsupportedFormatError",
    "Walrus",
    "WalrusClosedError",
    "WalrusError",
    "WalrusLog",
    "WalrusReader",
    "WalrusValueError",
    "available_backends",
    "connect",
    "disable_fd_backend",
    "enable_fd_backend",
]
__version__ = "0.1.0"
