"""The public log API as a type: what every log, local or remote, offers.

:class:`WalrusLog` names the calls an application makes on a log. :class:`~walrus_core.Walrus`
satisfies it, and so must any other implementation (a log served by a remote system, a test
double), so that code written against ``WalrusLog`` runs on any of them unchanged. It is a
:class:`typing.Protocol`: nothing has to inherit from it; a type checker verifies the match.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Protocol, runtime_checkable

from walrus_core.entry import Entry, Payload

__all__ = ["WalrusLog"]


@runtime_checkable
class WalrusLog(Protocol):
    """Topics of byte entries with offsets and durable cursors (see :class:`Walrus` for the
    semantics every implementation keeps)."""

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        ...

    def append_for_topic(self, topic: str, data: Payload) -> int:
        """Append one entry; returns its offset."""
        ...

    def batch_append_for_topic(self, topic: str, entries: Iterable[Payload]) -> range:
        """Append entries atomically (all or nothing); returns their offsets."""
        ...

    def read_next(
        self, topic: str, checkpoint: bool = True, *, consumer: str | None = None
    ) -> Entry | None:
        """The consumer's next entry, or None; ``checkpoint=False`` peeks."""
        ...

    def batch_read_for_topic(
        self,
        topic: str,
        max_bytes: int,
        checkpoint: bool = True,
        start_offset: int | None = None,
        *,
        consumer: str | None = None,
    ) -> list[Entry]:
        """Entries in order, up to ``max_bytes`` of payload (at least one when any is there);
        from ``start_offset`` without touching a cursor when it is given."""
        ...

    def seek(self, topic: str, offset: int, *, consumer: str | None = None) -> None:
        """Move the consumer's cursor to ``offset`` (durably)."""
        ...

    def topic_entry_count(self, topic: str, *, consumer: str | None = None) -> int:
        """Entries the consumer has not read."""
        ...

    def topic_entry_counts(self) -> dict[str, int]:
        """Unread entries of every topic, for the default consumer."""
        ...

    def topics(self) -> list[str]:
        """Every topic that has entries."""
        ...

    def flush(self) -> None:
        """Make everything appended and checkpointed so far durable."""
        ...

    def close(self) -> None:
        """Persist cursors, make data durable, release resources (idempotent)."""
        ...

    def __enter__(self) -> WalrusLog: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
