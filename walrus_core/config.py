"""Configuration value types: frozen attrs classes, validated when they are built."""

from __future__ import annotations

import enum
import sys
from typing import Any

import attrs

from walrus_core.errors import InvalidConfigError

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TIB = 1024 * GIB

#: The largest payload a single entry may carry, whatever the block size.
MAX_ENTRY_BYTES = 1 * GIB

#: The longest interval of ``FsyncSchedule.milliseconds``. Data left unsynced for longer than a
#: day is no schedule anyone relies on (``no_fsync`` says so honestly), and the flusher waits
#: with ``threading.Event.wait``, which overflows beyond ``threading.TIMEOUT_MAX`` (under 50
#: days on Windows, under 300 years elsewhere); one day is far below that everywhere.
MAX_FSYNC_INTERVAL_MS = 24 * 60 * 60 * 1000

#: The largest data file (``block_size * blocks_per_file``) a geometry may ask for. Common
#: filesystems cap a file well below what the two factors allow (ext4 with 4 KiB blocks at
#: 16 TiB, FAT32 at 4 GiB); past its cap every append fails with EFBIG. 1 TiB stays under the
#: cap of every filesystem a log is normally kept on and is far beyond any useful file size.
MAX_DATA_FILE_BYTES = 1 * TIB

#: The largest ``Limits.max_batch_entries``. A batch is collected into a list with one item
#: more than the limit (to tell that it is too long), and a list holds at most
#: ``sys.maxsize`` items, so a higher limit would make every batch fail.
MAX_BATCH_ENTRIES_LIMIT = sys.maxsize - 1


def _positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise InvalidConfigError(f"{name} must be >= {minimum}, got {value}")


class _Consistency(enum.Enum):
    STRICTLY_AT_ONCE = "strictly_at_once"
    AT_LEAST_ONCE = "at_least_once"


@attrs.frozen(repr=False)
class ReadConsistency:
    """When a checkpointing read makes the consumer's cursor durable.

    Build it with :meth:`strictly_at_once` or :meth:`at_least_once`.
    """

    mode: _Consistency
    persist_every: int = 1

    @classmethod
    def strictly_at_once(cls) -> ReadConsistency:
        """Persist the cursor before each checkpointing read returns: no redelivery."""
        return cls(_Consistency.STRICTLY_AT_ONCE, 1)

    @classmethod
    def at_least_once(cls, persist_every: int = 1000) -> ReadConsistency:
        """Persist once ``persist_every`` (N < 1 means 1) entries were consumed since the last."""
        if isinstance(persist_every, bool) or not isinstance(persist_every, int):
            raise TypeError(f"persist_every must be an int, not {type(persist_every).__name__}")
        return cls(_Consistency.AT_LEAST_ONCE, max(1, persist_every))

    @property
    def is_strict(self) -> bool:
        """True for strictly-at-once."""
        return self.mode is _Consistency.STRICTLY_AT_ONCE

    def __repr__(self) -> str:  # the public constructor, not the private enum
        if self.is_strict:
            return "ReadConsistency.strictly_at_once()"
        return f"ReadConsistency.at_least_once(persist_every={self.persist_every})"


class _Fsync(enum.Enum):
    MILLISECONDS = "milliseconds"
    SYNC_EACH = "sync_each"
    NO_FSYNC = "no_fsync"


@attrs.frozen(repr=False)
class FsyncSchedule:
    """When appended data and persisted cursors are forced to stable storage.

    Whatever the schedule, an append that returned survives a kill -9 of the process (the data is
    in the kernel's page cache). ``sync_each`` also survives power loss.
    """

    kind: _Fsync
    interval_ms: int = 0

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.kind, _Fsync):
            raise TypeError(
                "build an FsyncSchedule with milliseconds(), sync_each() or no_fsync(), not"
                f" from a {type(self.kind).__name__}"
            )
        if self.kind is _Fsync.MILLISECONDS:
            _positive_int("milliseconds", self.interval_ms)
            if self.interval_ms > MAX_FSYNC_INTERVAL_MS:
                raise InvalidConfigError(
                    f"milliseconds must be <= {MAX_FSYNC_INTERVAL_MS} (one day), got"
                    f" {self.interval_ms}; use FsyncSchedule.no_fsync() to never sync on a timer"
                )

    @classmethod
    def milliseconds(cls, n: int) -> FsyncSchedule:
        """A background flusher syncs dirty files every ``n`` milliseconds (0 < n <= one day,
        86 400 000)."""
        return cls(_Fsync.MILLISECONDS, n)

    @classmethod
    def sync_each(cls) -> FsyncSchedule:
        """Every append, batch and cursor persist is durable before the call returns."""
        return cls(_Fsync.SYNC_EACH)

    @classmethod
    def no_fsync(cls) -> FsyncSchedule:
        """Never sync on our own (``flush()`` and ``close()`` still do)."""
        return cls(_Fsync.NO_FSYNC)

    @property
    def is_sync_each(self) -> bool:
        """True for :meth:`sync_each`."""
        return self.kind is _Fsync.SYNC_EACH

    @property
    def is_periodic(self) -> bool:
        """True for :meth:`milliseconds`."""
        return self.kind is _Fsync.MILLISECONDS

    def __repr__(self) -> str:  # the public constructor, not the private enum
        if self.kind is _Fsync.MILLISECONDS:
            return f"FsyncSchedule.milliseconds({self.interval_ms})"
        return f"FsyncSchedule.{self.kind.value}()"

    @property
    def is_none(self) -> bool:
        """True for :meth:`no_fsync`."""
        return self.kind is _Fsync.NO_FSYNC


def _validate_block_size(_inst: Any, _attr: Any, value: Any) -> None:
    _positive_int("block_size", value, 4 * KIB)
    if value % (4 * KIB):
        raise InvalidConfigError(f"block_size must be a multiple of 4096, got {value}")
    if value > 1 * GIB:
        raise InvalidConfigError(f"block_size must be <= 1 GiB, got {value}")


def _validate_blocks_per_file(_inst: Any, _attr: Any, value: Any) -> None:
    _positive_int("blocks_per_file", value)
    if value > 1_000_000:
        raise InvalidConfigError(f"blocks_per_file must be <= 1000000, got {value}")


@attrs.frozen
class Geometry:
    """How data files are cut into blocks. Recorded in the directory when it is created.

    ``block_size`` is a multiple of 4 KiB up to 1 GiB, ``blocks_per_file`` at most 1 000 000,
    and a data file (their product) at most 1 TiB.
    """

    block_size: int = attrs.field(default=10 * MIB, validator=_validate_block_size)
    blocks_per_file: int = attrs.field(default=100, validator=_validate_blocks_per_file)

    def __attrs_post_init__(self) -> None:
        if self.file_size > MAX_DATA_FILE_BYTES:
            raise InvalidConfigError(
                f"data files of block_size * blocks_per_file = {self.file_size} bytes exceed"
                f" the limit of {MAX_DATA_FILE_BYTES} (1 TiB); lower blocks_per_file"
            )

    @property
    def file_size(self) -> int:
        """Bytes of a regular data file."""
        return self.block_size * self.blocks_per_file


def _validate_limit(_inst: Any, attribute: attrs.Attribute[int], value: Any) -> None:
    _positive_int(attribute.name, value)


@attrs.frozen
class Limits:
    """Caps on batches and reads; beyond them calls raise instead of doing unbounded work."""

    max_batch_entries: int = attrs.field(default=2000, validator=_validate_limit)
    max_batch_bytes: int = attrs.field(default=10 * GIB, validator=_validate_limit)
    max_entry_bytes: int = attrs.field(default=MAX_ENTRY_BYTES, validator=_validate_limit)

    def __attrs_post_init__(self) -> None:
        if self.max_entry_bytes > MAX_ENTRY_BYTES:
            raise InvalidConfigError(f"max_entry_bytes must be <= {MAX_ENTRY_BYTES}")
        if self.max_batch_entries > MAX_BATCH_ENTRIES_LIMIT:
            raise InvalidConfigError(
                f"max_batch_entries must be <= {MAX_BATCH_ENTRIES_LIMIT},"
                f" got {self.max_batch_entries}"
            )


def log_settings(
    consistency: ReadConsistency | None, fsync: FsyncSchedule | None, limits: Limits | None
) -> tuple[ReadConsistency, FsyncSchedule, Limits]:
    """The settings every log takes, local or remote, with the defaults filled in
    (strictly-at-once, ``milliseconds(200)``, ``Limits()``); a wrong type is a TypeError."""
    consistency = ReadConsistency.strictly_at_once() if consistency is None else consistency
    fsync = FsyncSchedule.milliseconds(200) if fsync is None else fsync
    limits = Limits() if limits is None else limits
    if not isinstance(consistency, ReadConsistency):
        raise TypeError(f"consistency must be a ReadConsistency, not {type(consistency).__name__}")
    if not isinstance(fsync, FsyncSchedule):
        raise TypeError(f"fsync must be an FsyncSchedule, not {type(fsync).__name__}")
    if not isinstance(limits, Limits):
        raise TypeError(f"limits must be a Limits, not {type(limits).__name__}")
    return consistency, fsync, limits
