"""The synchronous log API on JetStream: :class:`NatsWalrus`, a drop-in for ``Walrus``.

Every call runs the matching coroutine of :class:`~walrus_nats.AsyncNatsWalrus` on a
background event loop (:class:`~walrus_nats.loop.EventLoopThread`) and waits for it; this
class only forwards.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any

from walrus_core import Entry, FsyncSchedule, Limits, Payload, ReadConsistency
from walrus_nats.aio import AsyncNatsWalrus
from walrus_nats.config import NatsSettings
from walrus_nats.loop import EventLoopThread
from walrus_nats.server import ServerFacts


class NatsWalrus:
    """Topics of byte entries with durable cursors, stored in NATS JetStream.

    The API, return types and errors of :class:`walrus_core.Walrus` (it satisfies
    :class:`walrus_core.WalrusLog`), safe to call from any thread. Each topic is a stream with
    ``replicas`` copies; cursors (the default one and named consumers) are offsets in a
    replicated key-value bucket, moved by compare-and-set.

    Parameters:
        servers: one URL or a list of URLs of the cluster's servers (``nats://host:4222``).
        key: a namespace: topics and cursors of different keys never meet.
        consistency: ``ReadConsistency.strictly_at_once()`` (default) or ``at_least_once(N)``.
        fsync: ``FsyncSchedule.sync_each()`` is accepted only when the servers sync every
            write (read through ``monitoring``) or with ``trust_server_sync=True``; any other
            schedule leaves it to the servers' ``sync_interval``.
        limits: caps on batches and entries, lowered to what the server accepts.
        replicas: 1, or 3 (or 5) on a cluster, for streams and cursor buckets it creates.
        timeout: seconds to wait for one answer.
        retry_for: seconds an append keeps retrying before it raises
            :class:`~walrus_core.AppendOutcomeUnknownError` (if an answer was lost) or
            :class:`~walrus_core.RemoteUnavailableError` (if nothing was stored).
        monitoring: the servers' HTTP monitoring URLs, to read their sync setting.
        trust_server_sync: honour ``sync_each`` without confirming it.
        connect_options: passed to ``nats.connect`` (user, password, tls, name, ...).

    Raises:
        RemoteUnavailableError: no server answered.
        BackendUnavailableError: a server too old for atomic batches, or without JetStream.
        InvalidConfigError: a setting out of range, or ``sync_each`` that cannot be honoured.
    """

    def __init__(
        self,
        servers: str | Iterable[str],
        *,
        key: str | None = None,
        consistency: ReadConsistency | None = None,
        fsync: FsyncSchedule | None = None,
        limits: Limits | None = None,
        replicas: int = 1,
        timeout: float = 5.0,
        retry_for: float = 15.0,
        monitoring: Iterable[str] = (),
        trust_server_sync: bool = False,
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        self._loop = EventLoopThread("walrus-nats")
        try:
            self._log = self._loop.run(
                AsyncNatsWalrus.connect(
                    servers,
                    key=key,
                    consistency=consistency,
                    fsync=fsync,
                    limits=limits,
                    replicas=replicas,
                    timeout=timeout,
                    retry_for=retry_for,
                    monitoring=monitoring,
                    trust_server_sync=trust_server_sync,
                    connect_options=connect_options,
                )
            )
        except BaseException:
            self._loop.stop()
            raise

    @property
    def settings(self) -> NatsSettings:
        """The connection settings in force."""
        return self._log.settings

    @property
    def server(self) -> ServerFacts:
        """What the server said at connect: version, limits, sync setting."""
        return self._log.server

    @property
    def limits(self) -> Limits:
        """The limits enforced (the server's, where they are lower)."""
        return self._log.limits

    @property
    def consistency(self) -> ReadConsistency:
        """When a checkpointing read makes its cursor durable."""
        return self._log.consistency

    @property
    def fsync(self) -> FsyncSchedule:
        """The schedule asked for (the servers decide when they write to disk)."""
        return self._log.fsync

    @property
    def key(self) -> str | None:
        """The namespace."""
        return self._log.key

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._log.closed

    def append_for_topic(self, topic: str, data: Payload) -> int:
        """Append one entry; returns its offset. See :meth:`AsyncNatsWalrus.append_for_topic`."""
        return self._loop.run(self._log.append_for_topic(topic, data))

    def batch_append_for_topic(self, topic: str, entries: Iterable[Payload]) -> range:
        """Append entries atomically; returns their offsets."""
        return self._loop.run(self._log.batch_append_for_topic(topic, entries))

    def append_at(self, topic: str, offset: int, entries: list[bytes]) -> range:
        """Append only if the topic ends at ``offset``. See :meth:`AsyncNatsWalrus.append_at`."""
        return self._loop.run(self._log.append_at(topic, offset, entries))

    def append_each_at(self, topic: str, offset: int, payloads: list[bytes]) -> int:
        """Pipelined single appends at their own offsets; see
        :meth:`AsyncNatsWalrus.append_each_at`."""
        return self._loop.run(self._log.append_each_at(topic, offset, payloads))

    def read_next(
        self, topic: str, checkpoint: bool = True, *, consumer: str | None = None
    ) -> Entry | None:
        """The consumer's next entry, or None; ``checkpoint=False`` peeks."""
        return self._loop.run(self._log.read_next(topic, checkpoint, consumer=consumer))

    def batch_read_for_topic(
        self,
        topic: str,
        max_bytes: int,
        checkpoint: bool = True,
        start_offset: int | None = None,
        *,
        consumer: str | None = None,
    ) -> list[Entry]:
        """Entries in order up to ``max_bytes`` (at least one when any is there); from
        ``start_offset`` without touching a cursor when it is given."""
        return self._loop.run(
            self._log.batch_read_for_topic(
                topic, max_bytes, checkpoint, start_offset, consumer=consumer
            )
        )

    def seek(self, topic: str, offset: int, *, consumer: str | None = None) -> None:
        """Move the consumer's cursor to ``offset``; persisted at once."""
        self._loop.run(self._log.seek(topic, offset, consumer=consumer))

    def topic_entry_count(self, topic: str, *, consumer: str | None = None) -> int:
        """Entries the consumer has not read."""
        return self._loop.run(self._log.topic_entry_count(topic, consumer=consumer))

    def topic_entry_counts(self) -> dict[str, int]:
        """Unread entries of every topic, for the default consumer."""
        return self._loop.run(self._log.topic_entry_counts())

    def topics(self) -> list[str]:
        """Every topic of the namespace that has entries, sorted."""
        return self._loop.run(self._log.topics())

    def end_offset(self, topic: str) -> int:
        """The offset the next append to ``topic`` gets."""
        return self._loop.run(self._log.end_offset(topic))

    def flush(self) -> None:
        """Persist cursors moved by at-least-once reads."""
        self._loop.run(self._log.flush())

    def close(self) -> None:
        """Persist cursors, disconnect and stop the loop thread (idempotent)."""
        if not self._loop.running:
            return
        try:
            self._loop.run(self._log.close())
        finally:
            self._loop.stop()

    def __enter__(self) -> NatsWalrus:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<NatsWalrus {', '.join(self.settings.servers)} key={self.key!r} {state}>"
