"""What a log reports about itself: topic and consumer info, reclamation results, stats.

These are plain frozen attrs classes, returned by :meth:`Walrus.info`,
:meth:`Walrus.topic_info`, :meth:`Walrus.consumers`, :meth:`Walrus.reclaim` and
:meth:`Walrus.stats` (and by the read-only reader), and turned into JSON by the command line
with :func:`as_dict`.
"""

from __future__ import annotations

from typing import Any

import attrs

from walrus_core.errors import InvalidConfigError


def _optional_positive(kinds: tuple[type, ...], what: str) -> Any:
    def check(_inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise TypeError(f"{attribute.name} must be {what} or None, not {type(value).__name__}")
        number: Any = value
        if not number > 0:  # also refuses NaN
            raise InvalidConfigError(f"{attribute.name} must be > 0, got {value!r}")

    return check


@attrs.frozen
class Retention:
    """How much of a topic to keep, even when it is not consumed yet.

    ``max_bytes`` bounds the bytes written to the topic's blocks (payloads, 16-byte entry
    headers and each block's 1 KiB header); ``max_age_seconds`` drops data once its newest entry
    is older than that. Either, both or neither may be set. Data goes whole blocks at a time,
    oldest first; the block being written is kept, so a topic may hold up to one block more
    than ``max_bytes``. Ages are tracked per block (see the README, "Operating Walrus").
    """

    max_bytes: int | None = attrs.field(
        default=None, validator=_optional_positive((int,), "an int")
    )
    max_age_seconds: float | None = attrs.field(
        default=None, validator=_optional_positive((int, float), "a number")
    )

    @property
    def unlimited(self) -> bool:
        """True when nothing is dropped for retention."""
        return self.max_bytes is None and self.max_age_seconds is None


@attrs.frozen
class ConsumerInfo:
    """One consumer of a topic (``name`` None: the topic's default cursor)."""

    name: str | None
    offset: int  # the next entry it will read
    lag: int  # entries it has not read yet
    skipped: int  # entries retention dropped before it read them (since this process opened)


@attrs.frozen
class TopicInfo:
    """One topic: its retained range, its space and its consumers."""

    name: str
    first_offset: int  # the oldest retained entry (entries below it were reclaimed)
    end_offset: int  # the offset the next append gets
    entries: int  # end_offset - first_offset
    blocks: int
    bytes_on_disk: int  # bytes written to its blocks, in whole 4 KiB pages
    consumers: tuple[ConsumerInfo, ...]
    retention: Retention


@attrs.frozen
class LogInfo:
    """A whole directory."""

    data_dir: str
    format_version: int
    block_size: int
    blocks_per_file: int
    backend_chain: tuple[str, ...]
    files: int  # data files
    bytes_on_disk: int  # allocated bytes of every file of the directory (st_blocks * 512)
    retention: Retention
    read_only: bool
    topics: tuple[TopicInfo, ...]


@attrs.frozen
class ReclaimResult:
    """What one reclamation pass gave back to the operating system."""

    files_deleted: int = 0
    blocks_punched: int = 0
    bytes_freed: int = 0  # allocated bytes (st_blocks) before minus after
    entries_dropped: int = 0  # unconsumed entries retention dropped
    blocks_dropped: int = 0  # blocks that left the topics' indexes in this pass


@attrs.frozen
class Latency:
    """Count, total and maximum of an operation's duration, and a histogram.

    ``buckets`` pairs an upper bound in seconds with how many calls took at most that long and
    more than the previous bound; the last bound is ``inf``.
    """

    count: int
    total_seconds: float
    max_seconds: float
    buckets: tuple[tuple[float, int], ...]


@attrs.frozen
class Stats:
    """Counters since the log was opened."""

    appends: int  # append_for_topic calls that returned
    batches: int  # batch_append_for_topic calls that returned with entries
    entries_appended: int  # entries, single and batched
    # Under sync_each: durable writes that served single appends. Concurrent appends to a
    # topic share one (group commit): appends / sync_groups is the appends per device flush.
    sync_groups: int
    bytes_appended: int  # payload bytes
    reads: int  # entries returned by read_next and batch reads
    bytes_read: int
    fsyncs: Latency
    reclaimed_bytes: int
    files_deleted: int
    blocks_punched: int
    backend_chain: tuple[str, ...]


def as_dict(value: Any) -> Any:
    """``value`` (an info class, or lists/tuples of them) as JSON-ready dicts and lists."""
    if attrs.has(type(value)):
        return {k: as_dict(v) for k, v in attrs.asdict(value, recurse=False).items()}
    if isinstance(value, (list, tuple)):
        return [as_dict(v) for v in value]
    if isinstance(value, float) and value == float("inf"):
        return "inf"
    return value
