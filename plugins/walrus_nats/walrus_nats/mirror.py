"""Shipping a local log's topics to JetStream exactly once: :class:`Mirror`.

Appends keep local speed; a background thread copies every topic of the local
:class:`~walrus_core.Walrus` to the stream :class:`~walrus_nats.NatsWalrus` reads for that
topic, entry for entry at the same offsets. It reads the local log as it was written
(``Walrus.read_batches``: one group per append call) and publishes each group positionally:
a single append as one message, a batch as one atomic batch, each accepted by the server only
at the offset it has locally. The server's end of each stream is therefore the truth about
what was shipped: after a crash, a restart or a lost answer the mirror asks it and goes on from
there, so nothing is skipped and nothing is stored twice, however long it was down.

The local log keeps a named consumer, ``__walrus_nats_mirror``, at what the server confirmed,
so that space reclamation never gives back entries the mirror has not shipped yet.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import attrs

from walrus_core import (
    BatchTooLargeError,
    Entry,
    EntryTooLargeError,
    OffsetOutOfRangeError,
    StorageError,
    Walrus,
    WalrusClosedError,
    WalrusError,
)
from walrus_nats.aio import AsyncNatsWalrus, TopicEndMismatchError
from walrus_nats.loop import EventLoopThread

#: The local named consumer holding the mirror's position.
MIRROR_CONSUMER = "__walrus_nats_mirror"
#: Payload bytes read from the local log per round (whole groups; a larger batch is read whole).
READ_BYTES = 8 << 20


class MirrorDivergedError(StorageError):
    """The remote stream does not hold what the local log holds at the same offsets (it has
    more entries, or other bytes, or ends inside a local batch). The mirror stops shipping
    that topic rather than mix the two."""


class MirrorLimitError(StorageError):
    """A local batch or entry is larger than the server takes (its batch limit, or
    ``max_payload``): the topic cannot be copied past it, so the mirror stops shipping it."""


class MirrorGapError(StorageError):
    """Local entries were dropped (retention, or a deleted topic) before they were shipped:
    the remote copy cannot be made whole. The mirror stops shipping that topic."""


@attrs.frozen
class TopicMirror:
    """One topic's progress: ``lag`` entries are local only; ``error`` says why the mirror
    stopped shipping the topic, or why the last round failed (it retries those)."""

    local_end: int
    remote_end: int | None
    lag: int
    error: str | None


class Mirror:
    """Copies every topic of ``wal`` to JetStream, in the background or on demand.

    ``Mirror(wal, servers=[...])`` connects; :meth:`start` (or ``with Mirror(...)``) starts
    the background thread, which polls the local log every ``poll_interval`` seconds when
    there is nothing to ship; :meth:`sync` ships everything appended so far and returns;
    :meth:`status` and :meth:`lag` say how far behind the copy is. Stop the mirror before
    closing ``wal``.

    Parameters:
        wal: the local log.
        servers, key, replicas, timeout, retry_for, connect_options: as for
            :class:`~walrus_nats.NatsWalrus` (``key`` names the remote namespace readers open).
        poll_interval: seconds between looks at an idle local log.
    """

    def __init__(
        self,
        wal: Walrus,
        servers: str | Iterable[str],
        *,
        key: str | None = None,
        replicas: int = 1,
        timeout: float = 5.0,
        retry_for: float = 15.0,
        poll_interval: float = 0.05,
        connect_options: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(wal, Walrus):
            raise TypeError(f"wal must be a walrus_core.Walrus, not {type(wal).__name__}")
        if (
            isinstance(poll_interval, bool)
            or not isinstance(poll_interval, (int, float))
            or not poll_interval > 0
        ):
            raise ValueError(
                f"poll_interval must be a positive number of seconds, got {poll_interval!r}"
            )
        self._wal = wal
        self._poll = float(poll_interval)
        self._loop = EventLoopThread("walrus-nats-mirror")
        try:
            self._remote = self._loop.run(
                AsyncNatsWalrus.connect(
                    servers,
                    key=key,
                    replicas=replicas,
                    timeout=timeout,
                    retry_for=retry_for,
                    connect_options=connect_options,
                )
            )
        except BaseException:
            self._loop.stop()
            raise
        self._remote_end: dict[str, int] = {}
        self._stopped_topics: dict[str, str] = {}  # topic -> why it is not shipped any more
        self._last_error: dict[str, str] = {}
        self._round = asyncio.Lock()
        self._task: concurrent.futures.Future[None] | None = None
        self._stop = threading.Event()
        self.shipped_entries = 0
        self.shipped_groups = 0

    # -- control ----------------------------------------------------------------------------
    def start(self) -> Mirror:
        """Start shipping in the background (idempotent); returns the mirror."""
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.run_coroutine_threadsafe(self._run(), self._loop._loop)
        return self

    def sync(self) -> int:
        """Ship everything the local log holds now; returns how many entries were shipped.

        Raises the first error of the round (the topic's entry in :meth:`status` keeps it)."""
        shipped, errors = self._loop.run(self._one_round())
        if errors:
            raise errors[0]
        return shipped

    def stop(self) -> None:
        """Stop shipping, disconnect (idempotent). What was not shipped yet is shipped by the
        next mirror of the same log, from the server's answer."""
        if not self._loop.running:
            return
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                task.result()
            except Exception:
                pass
        try:
            self._loop.run(self._remote.close())
        finally:
            self._loop.stop()

    def __enter__(self) -> Mirror:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- reports ----------------------------------------------------------------------------
    def status(self) -> dict[str, TopicMirror]:
        """Every local topic: local end, confirmed remote end, lag, error."""
        out: dict[str, TopicMirror] = {}
        for topic in self._wal.topics():
            local_end = self._wal.topic_info(topic).end_offset
            remote_end = self._remote_end.get(topic)
            error = self._stopped_topics.get(topic) or self._last_error.get(topic)
            lag = local_end - (remote_end or 0)
            out[topic] = TopicMirror(local_end, remote_end, max(0, lag), error)
        return out

    def lag(self) -> dict[str, int]:
        """Entries of each local topic not yet confirmed by the server."""
        return {topic: state.lag for topic, state in self.status().items()}

    # -- shipping ---------------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                shipped, _errors = await self._one_round()
            except WalrusClosedError:
                return  # the local log was closed under the mirror
            except Exception:
                shipped = 0
            if not shipped:
                await asyncio.sleep(self._poll)

    async def _one_round(self) -> tuple[int, list[WalrusError]]:
        async with self._round:
            shipped = 0
            errors: list[WalrusError] = []
            for topic in self._wal.topics():
                if topic in self._stopped_topics:
                    continue
                try:
                    shipped += await self._ship(topic)
                    self._last_error.pop(topic, None)
                except (MirrorDivergedError, MirrorGapError) as exc:
                    self._stopped_topics[topic] = str(exc)
                    errors.append(exc)
                except (BatchTooLargeError, EntryTooLargeError) as exc:
                    # The server cannot take this local batch or entry, ever: shipping the
                    # rest would break the copy's offsets, so the topic stops here.
                    stopped = MirrorLimitError(
                        f"topic {topic!r} cannot be shipped past offset"
                        f" {self._remote_end.get(topic)}: {exc}"
                    )
                    self._stopped_topics[topic] = str(stopped)
                    errors.append(stopped)
                except WalrusClosedError:
                    raise
                except WalrusError as exc:  # the servers are away: next round asks them again
                    self._remote_end.pop(topic, None)
                    self._last_error[topic] = f"{type(exc).__name__}: {exc}"
                    errors.append(exc)
                except Exception as exc:
                    self._remote_end.pop(topic, None)
                    self._last_error[topic] = f"{type(exc).__name__}: {exc}"
                    errors.append(StorageError(f"shipping {topic!r} failed: {exc!r}"))
            return shipped, errors

    async def _ship(self, topic: str) -> int:
        end = self._remote_end.get(topic)
        if end is None:
            end = await self._remote.end_offset(topic)
            await self._check_same(topic, end)
            self._remote_end[topic] = end
            self._wal.seek(
                topic, min(end, self._wal.topic_info(topic).end_offset), consumer=MIRROR_CONSUMER
            )
        shipped = 0
        started = end
        local_end = self._wal.topic_info(topic).end_offset
        if end > local_end:
            raise MirrorDivergedError(
                f"the remote copy of {topic!r} has {end} entries, the local log {local_end}"
            )
        while end < local_end and not self._stop.is_set():
            try:
                groups = self._wal.read_batches(topic, end, READ_BYTES)
            except OffsetOutOfRangeError as exc:
                raise MirrorDivergedError(
                    f"the remote copy of {topic!r} ends at {end}, inside a local batch"
                ) from exc
            if not groups:
                break
            if groups[0][0].offset != end:
                raise MirrorGapError(
                    f"local entries {end}..{groups[0][0].offset - 1} of {topic!r} were dropped"
                    " before the mirror shipped them"
                )
            for run in _runs(groups):
                if run.singles:
                    # Single appends go pipelined; each only fits at its own offset.
                    payloads = [group[0].data for group in run.groups]
                    confirmed = await self._remote.append_each_at(topic, end, payloads)
                    end += confirmed
                    shipped += confirmed
                    self.shipped_groups += confirmed
                    self._remote_end[topic] = end
                    if confirmed < len(payloads):  # ask the server where it stands
                        actual = await self._remote.end_offset(topic)
                        await self._check_same(topic, actual)
                        shipped += max(0, actual - end)
                        end = actual
                        break
                    continue
                group = run.groups[0]
                try:
                    await self._remote.append_at(topic, end, [entry.data for entry in group])
                except TopicEndMismatchError as exc:  # another copy of the mirror ran: follow it
                    await self._check_same(topic, exc.end)
                    end = exc.end
                    break
                end += len(group)
                shipped += len(group)
                self.shipped_groups += 1
                self._remote_end[topic] = end
            self._remote_end[topic] = end
        if end != started:
            self._wal.seek(topic, end, consumer=MIRROR_CONSUMER)
        self.shipped_entries += shipped
        return shipped

    async def _check_same(self, topic: str, end: int) -> None:
        """The remote entry before ``end`` must be the local one: the same log, not another
        one written into the same namespace."""
        if end == 0:
            return
        info = self._wal.topic_info(topic)
        if end > info.end_offset:
            raise MirrorDivergedError(
                f"the remote copy of {topic!r} has {end} entries, the local log {info.end_offset}"
            )
        if end - 1 < info.first_offset:
            return  # reclaimed locally: nothing to compare with
        local = self._wal.batch_read_for_topic(topic, 1, start_offset=end - 1)
        remote = await self._remote.batch_read_for_topic(topic, 1, start_offset=end - 1)
        if not local or not remote or local[0] != remote[0]:
            raise MirrorDivergedError(
                f"entry {end - 1} of {topic!r} differs between the local log and the remote copy"
            )


@attrs.frozen
class _Run:
    """Consecutive groups shipped the same way: single entries (pipelined), or one batch."""

    singles: bool
    groups: list[list[Entry]]


def _runs(groups: list[list[Entry]], window: int = 256) -> list[_Run]:
    runs: list[_Run] = []
    for group in groups:
        if len(group) == 1 and runs and runs[-1].singles and len(runs[-1].groups) < window:
            runs[-1].groups.append(group)
        else:
            runs.append(_Run(len(group) == 1, [group]))
    return runs


def wait_until_shipped(mirror: Mirror, timeout: float) -> bool:
    """Poll ``mirror.lag()`` until every topic is shipped (True) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(mirror.lag().values()):
            return True
        time.sleep(0.02)
    return not any(mirror.lag().values())
