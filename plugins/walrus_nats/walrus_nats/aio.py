"""The log API on NATS JetStream, for asyncio code: :class:`AsyncNatsWalrus`.

One stream per topic (``naming`` derives the names), offset = stream sequence - 1. Every append
is positional: it carries the stream's last sequence as this process knows it
(``Nats-Expected-Last-Sequence``), so the server stores it only at that place. A refusal names
the real end, and the append is tried again there; an answer that never came is settled by
looking at the expected place for this append's id. So retries never store an entry twice, and
when they run out the caller learns the offset the entry would have
(:class:`~walrus_core.AppendOutcomeUnknownError`), never a silent duplicate or loss.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterable
from itertools import islice
from types import TracebackType
from typing import Any

import attrs
import nats.errors
from nats.aio.client import Client

from walrus_core import (
    AppendOutcomeUnknownError,
    BatchTooLargeError,
    Entry,
    EntryTooLargeError,
    FsyncSchedule,
    InvalidConfigError,
    Limits,
    OffsetOutOfRangeError,
    Payload,
    ReadConsistency,
    RemoteUnavailableError,
    StorageError,
    WalrusClosedError,
    WalrusValueError,
)
from walrus_core.config import log_settings
from walrus_core.names import encode_name
from walrus_nats import naming, server, wire
from walrus_nats.config import NatsSettings
from walrus_nats.cursors import CursorState, CursorStore

#: read_next fetches this many entries at once (entries never change once stored, so what it
#: fetched ahead stays true) and at most about this many payload bytes.
AHEAD_ENTRIES = 256
AHEAD_BYTES = 1 << 20
#: Bytes a stored message carries besides its payload, for the server's ``max_bytes``.
MESSAGE_OVERHEAD = 256
_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 0.5


@attrs.define(eq=False)
class _Stream:
    """What this process knows of one topic's stream."""

    topic: str
    name: str
    subject: str
    last: int  # the highest sequence known to exist (the topic's end offset)
    lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)  # one append at a time
    ahead_first: int = 0
    ahead: list[Entry] = attrs.field(factory=list)


def _payload(data: Any) -> bytes:
    if type(data) is bytes:
        return data
    if isinstance(data, str):
        raise TypeError("an entry is bytes-like, not str: encode it first")
    try:
        return bytes(memoryview(data))
    except TypeError:
        raise TypeError(f"an entry must be bytes-like, not {type(data).__name__}") from None


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value


def _check_consumer(consumer: Any) -> None:
    if consumer is not None:
        encode_name(consumer, "consumer")


class AsyncNatsWalrus:
    """Topics of byte entries with durable cursors, stored in NATS JetStream.

    The same calls, return types and errors as :class:`walrus_core.Walrus`, as coroutines.
    Open it with ``await AsyncNatsWalrus.connect(servers=[...])``, or as
    ``async with await AsyncNatsWalrus.connect(...) as log:``. One instance belongs to one
    event loop; :class:`walrus_nats.NatsWalrus` is the synchronous API.

    Attributes:
        settings: the :class:`NatsSettings` in force.
        server: the :class:`ServerFacts` learned at connect (version, limits, sync).
        limits: the limits enforced: the ones asked for, lowered to what the server takes
            (batch limit; ``max_payload`` less room for headers).
        consistency: when a checkpointing read makes its cursor durable.
        fsync: the schedule asked for (the server decides when it writes to disk; see
            ``server.sync_always``).
        key: the namespace (None: the default one).
    """

    def __init__(
        self,
        nc: Client,
        settings: NatsSettings,
        facts: server.ServerFacts,
        cursors: CursorStore,
        *,
        key: str | None,
        consistency: ReadConsistency,
        fsync: FsyncSchedule,
        limits: Limits,
    ) -> None:
        """Use :meth:`connect`; this wires what it made."""
        self._nc = nc
        self.settings = settings
        self.server = facts
        self._cursors = cursors
        self.key = key
        self._namespace = naming.namespace_token(key)
        self.consistency = consistency
        self.fsync = fsync
        self.limits = limits
        self._streams: dict[str, _Stream] = {}
        self._closed = False

    @classmethod
    async def connect(
        cls,
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
    ) -> AsyncNatsWalrus:
        """Connect, check what the server can do, and open the namespace ``key``.

        Parameters are those of :class:`NatsSettings` plus ``key``, ``consistency``, ``fsync``
        and ``limits`` as for :class:`walrus_core.Walrus`.

        Raises:
            RemoteUnavailableError: no server answered.
            BackendUnavailableError: the server is too old, runs without JetStream, or does not
                keep batches atomic.
            InvalidConfigError: ``fsync=FsyncSchedule.sync_each()`` against a server that does
                not sync every write (or whose setting cannot be read), without
                ``trust_server_sync=True``; a setting out of range.
        """
        settings = NatsSettings(
            servers=servers,
            replicas=replicas,
            timeout=timeout,
            retry_for=retry_for,
            monitoring=tuple(monitoring),
            trust_server_sync=trust_server_sync,
            connect_options=dict(connect_options or {}),
        )
        consistency, fsync, limits = log_settings(consistency, fsync, limits)
        namespace = naming.namespace_token(key)
        nc = Client()
        try:
            # Reconnects go on forever once connected (a restarted server is found again);
            # the first connect is bounded by retry_for.
            await asyncio.wait_for(
                nc.connect(
                    servers=list(settings.servers),
                    connect_timeout=max(1, int(settings.timeout)),
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.2,  # type: ignore[arg-type] # nats-py sleeps it
                    **settings.connect_options,
                ),
                settings.retry_for,
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            await nc.close()
            raise RemoteUnavailableError(
                f"cannot connect to NATS at {', '.join(settings.servers)}: {exc!r}"
            ) from exc
        try:
            facts, cursors = await _inspect(nc, namespace, settings)
            _check_fsync(fsync, facts, settings)
        except BaseException:
            await nc.close()
            raise
        except_limits = Limits(
            max_batch_entries=min(limits.max_batch_entries, facts.batch_limit),
            max_batch_bytes=limits.max_batch_bytes,
            max_entry_bytes=min(limits.max_entry_bytes, facts.max_entry_bytes),
        )
        return cls(
            nc,
            settings,
            facts,
            cursors,
            key=key,
            consistency=consistency,
            fsync=fsync,
            limits=except_limits,
        )

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise WalrusClosedError("this NatsWalrus instance is closed")

    async def flush(self) -> None:
        """Persist the cursors moved by at-least-once reads. Appends are already on the
        servers when they return (on disk as the server's ``sync_interval`` says)."""
        self._check_open()
        await self._persist_all()

    async def _persist_all(self) -> None:
        for state in self._cursors.cached():
            if state.pending:
                async with state.lock:
                    await self._persist(state)

    async def close(self) -> None:
        """Persist cursors and disconnect (idempotent)."""
        if self._closed:
            return
        try:
            await self._persist_all()
        finally:
            self._closed = True
            await self._nc.close()

    async def __aenter__(self) -> AsyncNatsWalrus:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- streams ----------------------------------------------------------------------------
    async def _api(self, subject: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """A JetStream API call, retried while answers are lost (API calls read or are
        idempotent), as RemoteUnavailableError when they stay lost."""
        deadline = time.monotonic() + self.settings.retry_for
        delay = _FIRST_BACKOFF
        while True:
            try:
                return await wire.api(self._nc, subject, body, self.settings.timeout)
            except wire.NO_ANSWER as exc:
                if time.monotonic() + delay >= deadline:
                    raise RemoteUnavailableError(f"{subject}: no answer ({exc!r})") from exc
            except wire.ApiError as exc:
                if exc.code not in (500, 503):
                    raise
                if time.monotonic() + delay >= deadline:
                    raise RemoteUnavailableError(f"{subject}: {exc}") from exc
            await asyncio.sleep(delay)
            delay = min(_MAX_BACKOFF, delay * 2)

    async def _stream(self, topic: str, create: bool) -> _Stream | None:
        found = self._streams.get(topic) if type(topic) is str else None
        if found is not None:
            return found
        name = naming.stream_name(self._namespace, topic)  # validates the topic name
        try:
            info: dict[str, Any] | None = await self._api(f"$JS.API.STREAM.INFO.{name}", None)
        except wire.ApiError as exc:
            if exc.err_code != wire.STREAM_NOT_FOUND:
                raise StorageError(f"reading stream {name} of topic {topic!r}: {exc}") from exc
            info = None
        if info is None:
            if not create:
                return None
            info = await self._create_stream(topic, name)
        return self._adopt(topic, info)

    async def _create_stream(self, topic: str, name: str) -> dict[str, Any]:
        config = {
            "name": name,
            "subjects": [naming.subject(self._namespace, topic)],
            "retention": "limits",
            "storage": "file",
            "num_replicas": self.settings.replicas,
            "discard": "old",
            "allow_direct": True,
            "allow_atomic": True,
            "metadata": {naming.TOPIC_FIELD: topic, naming.KEY_FIELD: self.key or ""},
        }
        try:
            return await self._api(f"$JS.API.STREAM.CREATE.{name}", config)
        except wire.ApiError as exc:
            if exc.err_code == wire.REPLICAS_UNSUPPORTED:
                raise InvalidConfigError(
                    f"replicas={self.settings.replicas}: the NATS server is not part of a"
                    f" cluster ({exc.description})"
                ) from exc
            try:  # created meanwhile by another process?
                return await self._api(f"$JS.API.STREAM.INFO.{name}", None)
            except wire.ApiError:
                raise StorageError(f"creating stream {name} of topic {topic!r}: {exc}") from exc

    def _adopt(self, topic: str, info: dict[str, Any]) -> _Stream:
        config = info.get("config", {})
        name = str(config.get("name"))
        held = config.get("metadata", {}).get(naming.TOPIC_FIELD)
        if held != topic:
            raise StorageError(
                f"stream {name} holds topic {held!r}, not {topic!r}: it was not made by"
                " walrus-nats for this namespace"
            )
        if config.get("allow_atomic") is not True:
            raise StorageError(f"stream {name} of topic {topic!r} has no atomic batches")
        stream = _Stream(
            topic,
            name,
            naming.subject(self._namespace, topic),
            int(info.get("state", {}).get("last_seq", 0)),
        )
        return self._streams.setdefault(topic, stream)  # another call may have adopted it

    async def _end(self, stream: _Stream) -> int:
        """The topic's end offset as the stream's leader says now."""
        try:
            info = await self._api(f"$JS.API.STREAM.INFO.{stream.name}", None)
        except wire.ApiError as exc:
            if exc.err_code == wire.STREAM_NOT_FOUND:
                self._streams.pop(stream.topic, None)
                raise StorageError(
                    f"the stream {stream.name} of topic {stream.topic!r} was deleted on the server"
                ) from exc
            raise StorageError(f"reading stream {stream.name}: {exc}") from exc
        stream.last = max(stream.last, int(info.get("state", {}).get("last_seq", 0)))
        return stream.last

    # -- appends ----------------------------------------------------------------------------
    async def append_for_topic(self, topic: str, data: Payload) -> int:
        """Append one entry; returns its offset (0, 1, 2, ... per topic).

        Raises :class:`EntryTooLargeError` beyond ``limits.max_entry_bytes`` (the server's
        ``max_payload`` less room for headers), :class:`AppendOutcomeUnknownError` when every
        retry lost its answer, :class:`RemoteUnavailableError` when the servers could not take
        it (then it was not stored).
        """
        self._check_open()
        payload = _payload(data)
        if len(payload) > self.limits.max_entry_bytes:
            raise EntryTooLargeError(
                f"entry of {len(payload)} bytes exceeds the limit of {self.limits.max_entry_bytes}"
                f" (the server's max_payload is {self.server.max_payload})"
            )
        stream = await self._stream(topic, create=True)
        assert stream is not None
        async with stream.lock:
            return (await self._append(stream, [payload])).start

    async def batch_append_for_topic(self, topic: str, entries: Iterable[Payload]) -> range:
        """Append ``entries`` atomically (one JetStream atomic batch: all stored or none, and
        readers never see part of it); returns their offsets. An empty batch is a no-op."""
        self._check_open()
        if isinstance(entries, (str, bytes, bytearray, memoryview)):
            raise TypeError(
                f"entries must be an iterable of payloads, not a single {type(entries).__name__}"
            )
        try:
            iterator = iter(entries)
        except TypeError:
            raise TypeError(
                f"entries must be an iterable of payloads, not {type(entries).__name__}"
            ) from None
        payloads = self._checked_batch(list(islice(iterator, self.limits.max_batch_entries + 1)))
        if not payloads:
            stream = await self._stream(topic, create=False)
            end = 0 if stream is None else await self._end(stream)
            return range(end, end)
        stream = await self._stream(topic, create=True)
        assert stream is not None
        async with stream.lock:
            return await self._append(stream, payloads)

    def _checked_batch(self, items: list[Any]) -> list[bytes]:
        """The payloads of a batch within the limits, or the core's error."""
        limit = self.limits.max_batch_entries
        if len(items) > limit:
            raise BatchTooLargeError(
                f"batch exceeds the limit of {limit} entries (the server's batch limit is"
                f" {self.server.batch_limit})"
            )
        payloads = [_payload(item) for item in items]
        longest = max((len(p) for p in payloads), default=0)
        if longest > self.limits.max_entry_bytes:
            raise EntryTooLargeError(
                f"an entry of the batch exceeds the limit of {self.limits.max_entry_bytes}"
                f" (the server's max_payload is {self.server.max_payload})"
            )
        total = sum(len(p) for p in payloads)
        if total > self.limits.max_batch_bytes:
            raise BatchTooLargeError(
                f"batch of {total} bytes exceeds the limit of {self.limits.max_batch_bytes} bytes"
            )
        return payloads

    async def append_at(self, topic: str, offset: int, entries: list[bytes]) -> range:
        """Append ``entries`` (one entry, or one atomic batch) only if ``offset`` is the
        topic's end: a copy of another log keeps its offsets this way.

        Raises :class:`TopicEndMismatchError` (with the real end) when the topic ends
        elsewhere, and what :meth:`batch_append_for_topic` raises otherwise.
        """
        self._check_open()
        _check_int("offset", offset)
        if offset < 0:
            raise OffsetOutOfRangeError(f"offset must be >= 0, got {offset}")
        payloads = self._checked_batch(list(entries))
        if not payloads:
            raise WalrusValueError("append_at needs at least one entry")
        stream = await self._stream(topic, create=True)
        assert stream is not None
        async with stream.lock:
            return await self._append(stream, payloads, at=offset)

    async def append_each_at(self, topic: str, offset: int, payloads: list[bytes]) -> int:
        """Append each payload as an entry of its own at ``offset``, ``offset + 1``, ...,
        pipelined: every request is sent before the first answer is awaited, so a run of
        single entries costs about one round trip instead of one each.

        Each entry is stored only at its own offset, so nothing is ever stored twice. Returns
        how many were confirmed in order from ``offset``; the rest may or may not be stored
        (:meth:`end_offset` tells). A copy of another log uses this to keep up with it.
        """
        self._check_open()
        _check_int("offset", offset)
        for payload in payloads:
            if len(payload) > self.limits.max_entry_bytes:
                raise EntryTooLargeError(
                    f"an entry of {len(payload)} bytes exceeds the limit of"
                    f" {self.limits.max_entry_bytes}"
                )
        stream = await self._stream(topic, create=True)
        assert stream is not None
        async with stream.lock:
            append_id = secrets.token_hex(12)
            # Tasks start in creation order and each queues its message before it first
            # waits, so the messages leave in offset order on the one connection.
            sent = [
                asyncio.ensure_future(
                    wire.publish(
                        self._nc,
                        stream.subject,
                        payload,
                        {
                            wire.EXPECTED_LAST_SEQUENCE: str(offset + i),
                            wire.APPEND_ID: f"{append_id}-{i}",
                        },
                        self.settings.timeout,
                    )
                )
                for i, payload in enumerate(payloads)
            ]
            answers = await asyncio.gather(*sent, return_exceptions=True)
            for answer in answers:
                if isinstance(answer, BaseException) and not isinstance(
                    answer, (*wire.FAILED, nats.errors.Error)
                ):
                    raise answer
            confirmed = 0
            for i, answer in enumerate(answers):
                if not isinstance(answer, wire.Stored) or answer.seq != offset + i + 1:
                    break
                confirmed += 1
            stream.last = max(stream.last, offset + confirmed)
            return confirmed

    async def _append(self, stream: _Stream, payloads: list[bytes], at: int | None = None) -> range:
        """Store ``payloads`` at the stream's end (or only at ``at``), exactly once.

        The position a try expects is this call's own: it changes only when the server names
        the real end in a refusal, after the tries whose answer was lost were settled there.
        Reads and other calls update the shared ``stream.last`` meanwhile; a retry that took
        its position from it could store an entry twice.
        """
        append_id = secrets.token_hex(12)
        unsure: set[int] = set()  # expected ends of the tries whose answer was lost
        deadline = time.monotonic() + self.settings.retry_for
        delay = _FIRST_BACKOFF
        count = len(payloads)
        positional = at is not None
        expected = stream.last if at is None else at
        while True:
            if self._closed and unsure:  # closed while an answer is missing: say so
                self._give_up(stream, unsure, count, WalrusClosedError("closed during the append"))
            self._check_open()
            headers = {wire.EXPECTED_LAST_SEQUENCE: str(expected), wire.APPEND_ID: append_id}
            failure: BaseException
            try:
                if count == 1:
                    stored = await wire.publish(
                        self._nc, stream.subject, payloads[0], headers, self.settings.timeout
                    )
                else:
                    stored = await wire.publish_batch(
                        self._nc,
                        stream.subject,
                        payloads,
                        headers,
                        secrets.token_hex(11),
                        self.settings.timeout,
                    )
            except wire.ApiError as exc:
                actual = exc.actual_last
                if actual is not None:
                    mine = await self._settle(stream, unsure, append_id, actual, count)
                    stream.last = max(stream.last, actual)
                    if mine is not None:
                        return range(mine, mine + count)
                    if positional:
                        if any(try_at >= actual for try_at in unsure):
                            # A lost try ahead of the end could still land there later.
                            self._give_up(stream, unsure, count, exc)
                        raise TopicEndMismatchError(stream.topic, expected, actual) from None
                    # Another writer appended. Every unsure try expected an end below the
                    # real one, and the end never goes back: none of them can land now.
                    unsure.clear()
                    expected = actual
                    continue
                self._refused(stream, exc)
                failure = exc
            except nats.errors.MaxPayloadError as exc:
                raise EntryTooLargeError(f"the server refused the entry's size: {exc}") from exc
            except nats.errors.NoRespondersError as exc:  # nobody took it: not stored
                failure = exc
            except wire.LOST_ANSWER as exc:
                unsure.add(expected)
                failure = exc
            else:
                if stored.seq != expected + count:
                    raise StorageError(
                        f"the server stored entries of {stream.topic!r} at {stored.seq - count},"
                        f" not at {expected}"
                    )
                stream.last = max(stream.last, stored.seq)
                return range(expected, stored.seq)
            if time.monotonic() + delay >= deadline:
                self._give_up(stream, unsure, count, failure)
            await asyncio.sleep(delay)
            delay = min(_MAX_BACKOFF, delay * 2)

    def _refused(self, stream: _Stream, exc: wire.ApiError) -> None:
        """Raise the core's error for a definite refusal; return for the retryable ones."""
        if exc.err_code == wire.BATCH_TOO_LARGE:
            raise BatchTooLargeError(f"the server refused the batch: {exc.description}") from exc
        if exc.err_code == wire.MESSAGE_TOO_LARGE:
            raise EntryTooLargeError(f"the server refused the entry: {exc.description}") from exc
        if exc.code in (500, 503) or exc.code == 0:
            return  # no leader, or a batch that lost messages on the way: try again
        raise StorageError(f"the server refused an append to {stream.topic!r}: {exc}") from exc

    def _give_up(
        self, stream: _Stream, unsure: set[int], count: int, failure: BaseException
    ) -> None:
        seconds = self.settings.retry_for
        if unsure:
            expected = max(unsure)
            raise AppendOutcomeUnknownError(
                f"appending {count} entr{'y' if count == 1 else 'ies'} to {stream.topic!r}: no"
                f" answer for {seconds} s ({failure!r}). It may have been stored at offset"
                f" {expected}; read that offset to know before appending it again",
                topic=stream.topic,
                expected_offset=expected,
                count=count,
            ) from failure
        raise RemoteUnavailableError(
            f"appending to {stream.topic!r}: the servers did not take it for {seconds} s"
            f" ({failure!r}); nothing was stored"
        ) from failure

    async def _settle(
        self, stream: _Stream, unsure: set[int], append_id: str, actual: int, count: int
    ) -> int | None:
        """Where an earlier try of this append was stored, if one was: only at its expected
        place (a positional append lands nowhere else), seen by our id there."""
        for expected in sorted(unsure):
            if expected >= actual:
                continue
            message = await self._message(stream, expected + 1)
            if message is None:
                # The entry there exists but cannot be read now: whose it is stays unknown,
                # and appending elsewhere could store this append twice.
                raise AppendOutcomeUnknownError(
                    f"appending to {stream.topic!r}: an answer was lost, and offset {expected},"
                    " where it would be, cannot be read now; read that offset later to know",
                    topic=stream.topic,
                    expected_offset=expected,
                    count=count,
                )
            if message.headers.get(wire.APPEND_ID) == append_id:
                return expected
        return None

    async def _message(self, stream: _Stream, seq: int) -> wire.Message | None:
        """The stored message ``seq`` (known to exist), or None when no server hands it out
        within ``retry_for``."""
        deadline = time.monotonic() + self.settings.retry_for
        while True:
            try:
                got = await self._direct(stream, seq, 1, self.server.max_payload + MESSAGE_OVERHEAD)
            except (RemoteUnavailableError, StorageError):
                return None
            if got.messages and got.messages[0].seq == seq:
                return got.messages[0]
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.05)  # a replica behind the leader, or no leader: ask again

    # -- reads ------------------------------------------------------------------------------
    async def _direct(self, stream: _Stream, seq: int, batch: int, max_bytes: int) -> wire.Messages:
        deadline = time.monotonic() + self.settings.retry_for
        while True:
            try:
                return await wire.direct_get(
                    self._nc, stream.name, seq, batch, max_bytes, self.settings.timeout
                )
            except wire.NO_ANSWER as exc:
                if time.monotonic() >= deadline:
                    raise RemoteUnavailableError(
                        f"reading {stream.topic!r} at {seq - 1}: no answer ({exc!r})"
                    ) from exc
            except wire.ApiError as exc:
                if time.monotonic() >= deadline:
                    raise StorageError(f"reading {stream.topic!r} at {seq - 1}: {exc}") from exc
            await asyncio.sleep(0.05)

    async def _read(
        self, stream: _Stream, offset: int, max_entries: int, max_bytes: int
    ) -> list[Entry]:
        """Entries from ``offset`` on, contiguous: at most ``max_entries``, stopping before
        the payload total would exceed ``max_bytes`` but at least one when any is there."""
        out: list[Entry] = []
        total = 0
        seq = offset + 1
        deadline = time.monotonic() + self.settings.retry_for
        while len(out) < max_entries:
            want = max_entries - len(out)
            budget = max(1, max_bytes - total) + want * MESSAGE_OVERHEAD
            got = await self._direct(stream, seq, want, min(budget, 1 << 30))
            for message in got.messages:
                if message.seq != seq:
                    if out or message.seq < seq:
                        return out  # a gap: what follows is for the next read
                    seq = message.seq  # the front was trimmed: begin at the oldest kept
                size = len(message.data)
                if out and total + size > max_bytes:
                    return out
                out.append(Entry(message.data, seq - 1))
                total += size
                seq += 1
                if len(out) >= max_entries:
                    return out
            if got.last_seq is not None:
                stream.last = max(stream.last, got.last_seq + (got.pending or 0))
            if got.messages and got.pending:
                continue  # cut by the server's byte budget: more is there
            if seq <= stream.last and time.monotonic() < deadline:
                await asyncio.sleep(0.005)  # this replica lags behind what we know exists
                continue
            return out
        return out

    async def _entry_at(self, stream: _Stream, offset: int) -> Entry | None:
        index = offset - stream.ahead_first
        if 0 <= index < len(stream.ahead):
            return stream.ahead[index]
        ahead = await self._read(stream, offset, AHEAD_ENTRIES, AHEAD_BYTES)
        stream.ahead, stream.ahead_first = ahead, offset
        if ahead and ahead[0].offset != offset:
            stream.ahead_first = ahead[0].offset
        return ahead[0] if ahead else None

    async def read_next(
        self, topic: str, checkpoint: bool = True, *, consumer: str | None = None
    ) -> Entry | None:
        """The consumer's next entry, or None; ``checkpoint=False`` peeks.

        Under strictly-at-once the cursor is moved on the server (compare-and-set) before
        the entry is returned: a reader in another process never gets it too, and no crash
        hands it out again. Under at-least-once the move is persisted every
        ``persist_every`` entries (and by :meth:`flush` and :meth:`close`).
        """
        self._check_open()
        _check_consumer(consumer)
        stream = await self._stream(topic, create=False)
        if stream is None:
            return None
        state = await self._cursors.state(topic, consumer)
        async with state.lock:
            while True:
                entry = await self._entry_at(stream, state.offset)
                if entry is None or not checkpoint:
                    return entry
                if await self._consumed(state, entry.offset + 1, 1):
                    return entry

    async def _consumed(self, state: CursorState, offset: int, count: int) -> bool:
        """Move the cursor past what was read; False when another reader moved it first (the
        entries are not ours then: read again at the new position)."""
        if self.consistency.is_strict:
            return await self._cursors.move(state, offset)
        state.offset = offset
        state.pending += count
        if state.pending >= self.consistency.persist_every:
            await self._persist(state)
        return True

    async def _persist(self, state: CursorState) -> None:
        ours = state.offset
        while not await self._cursors.move(state, ours):
            if state.stored >= ours:
                return  # another reader is further: keep its position

    async def batch_read_for_topic(
        self,
        topic: str,
        max_bytes: int,
        checkpoint: bool = True,
        start_offset: int | None = None,
        *,
        consumer: str | None = None,
    ) -> list[Entry]:
        """Entries in order: at most ``limits.max_batch_entries``, stopping before the payload
        total would exceed ``max_bytes``, but at least one when any is available.
        ``start_offset=N`` reads from entry N without touching any cursor."""
        self._check_open()
        _check_int("max_bytes", max_bytes)
        if max_bytes < 1:
            raise WalrusValueError(f"max_bytes must be >= 1, got {max_bytes}")
        _check_consumer(consumer)
        if start_offset is not None:
            _check_int("start_offset", start_offset)
            if start_offset < 0:
                raise OffsetOutOfRangeError(f"start_offset must be >= 0, got {start_offset}")
        stream = await self._stream(topic, create=False)
        max_entries = self.limits.max_batch_entries
        if start_offset is not None:
            end = 0 if stream is None else stream.last
            if stream is not None and start_offset > end:
                end = await self._end(stream)
            if start_offset > end:
                raise OffsetOutOfRangeError(
                    f"start_offset {start_offset} is past the end of topic {topic!r} ({end})"
                )
            if stream is None or start_offset == end:
                return []
            return await self._read(stream, start_offset, max_entries, max_bytes)
        if stream is None:
            return []
        state = await self._cursors.state(topic, consumer)
        async with state.lock:
            while True:
                entries = await self._read(stream, state.offset, max_entries, max_bytes)
                if not entries or not checkpoint:
                    return entries
                if await self._consumed(state, entries[-1].offset + 1, len(entries)):
                    return entries

    async def seek(self, topic: str, offset: int, *, consumer: str | None = None) -> None:
        """Move the consumer's cursor to ``offset`` (0..end); persisted at once."""
        self._check_open()
        _check_int("offset", offset)
        _check_consumer(consumer)
        stream = await self._stream(topic, create=False)
        end = 0 if stream is None else await self._end(stream)
        if not 0 <= offset <= end:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside topic {topic!r} (entries 0..{end})"
            )
        if stream is None:
            return
        state = await self._cursors.state(topic, consumer)
        async with state.lock:
            await self._cursors.put(state, offset)

    async def topic_entry_count(self, topic: str, *, consumer: str | None = None) -> int:
        """Entries of ``topic`` the consumer has not read (as the servers say now)."""
        self._check_open()
        _check_consumer(consumer)
        stream = await self._stream(topic, create=False)
        if stream is None:
            return 0
        end = await self._end(stream)
        state = await self._cursors.state(topic, consumer)
        async with state.lock:
            if not state.pending:
                await self._cursors.refresh(state)
            return max(0, end - state.offset)

    async def topic_entry_counts(self) -> dict[str, int]:
        """:meth:`topic_entry_count` of the default consumer, for every topic."""
        return {topic: await self.topic_entry_count(topic) for topic in await self.topics()}

    async def topics(self) -> list[str]:
        """Topics of this namespace with at least one entry, sorted."""
        self._check_open()
        prefix = naming.stream_prefix(self._namespace)
        found: list[str] = []
        offset = 0
        while True:
            try:
                page = await self._api(
                    "$JS.API.STREAM.LIST",
                    {"offset": offset, "subject": f"walrus.{self._namespace}.*"},
                )
            except wire.ApiError as exc:
                raise StorageError(f"listing the streams: {exc}") from exc
            streams = page.get("streams") or []
            for info in streams:
                config = info.get("config", {})
                topic = config.get("metadata", {}).get(naming.TOPIC_FIELD)
                if not str(config.get("name", "")).startswith(prefix) or not isinstance(topic, str):
                    continue
                if int(info.get("state", {}).get("last_seq", 0)) == 0:
                    continue
                if topic not in self._streams:
                    self._adopt(topic, info)
                found.append(topic)
            offset += len(streams)
            if not streams or offset >= int(page.get("total", 0)):
                return sorted(found)

    async def end_offset(self, topic: str) -> int:
        """The offset the next append to ``topic`` gets (0 for a topic without entries)."""
        self._check_open()
        stream = await self._stream(topic, create=False)
        return 0 if stream is None else await self._end(stream)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<AsyncNatsWalrus {', '.join(self.settings.servers)} key={self.key!r} {state}>"


class TopicEndMismatchError(OffsetOutOfRangeError):
    """A positional append (:meth:`AsyncNatsWalrus.append_at`) found the topic ending
    elsewhere; nothing was stored. ``end`` is where the topic really ends."""

    def __init__(self, topic: str, expected: int, end: int) -> None:
        super().__init__(f"topic {topic!r} ends at {end}, not at {expected}")
        self.topic = topic
        self.expected = expected
        self.end = end


def _check_fsync(fsync: FsyncSchedule, facts: server.ServerFacts, settings: NatsSettings) -> None:
    if not fsync.is_sync_each or settings.trust_server_sync or facts.sync_always:
        return
    if facts.sync_always is None:
        raise InvalidConfigError(
            "fsync=FsyncSchedule.sync_each() asks that every acknowledged append be on disk,"
            " and whether the NATS servers sync every write cannot be read without their"
            " monitoring URLs: pass monitoring=['http://host:8222', ...], or"
            " trust_server_sync=True if you configured sync_interval: always yourself"
        )
    raise InvalidConfigError(
        "fsync=FsyncSchedule.sync_each() asks that every acknowledged append be on disk, but"
        f" the NATS servers sync every {facts.sync_interval_ms} ms: set"
        " 'jetstream { sync_interval: always }' on every server, or use another FsyncSchedule"
    )


#: What connection setup retries while JetStream gets ready.
_SETUP_FAILURES: tuple[type[Exception], ...] = (*wire.FAILED, nats.errors.Error)


async def _inspect(
    nc: Client, namespace: str, settings: NatsSettings
) -> tuple[server.ServerFacts, CursorStore]:
    """The server's facts and the namespace's cursor bucket, asked again while JetStream is
    not ready (a cluster electing its leaders answers "unavailable", or not at all)."""
    deadline = time.monotonic() + settings.retry_for
    while True:
        try:
            facts = await server.inspect(nc, settings.monitoring, settings.timeout)
            cursors = await CursorStore.open(
                nc.jetstream(timeout=settings.timeout), namespace, settings
            )
            return facts, cursors
        except _SETUP_FAILURES as exc:
            if getattr(exc, "err_code", None) == wire.REPLICAS_UNSUPPORTED:
                raise InvalidConfigError(
                    f"replicas={settings.replicas}: the NATS server is not part of a cluster"
                    f" ({exc})"
                ) from exc
            if isinstance(exc, wire.ApiError) and exc.code not in (500, 503):
                raise StorageError(f"JetStream refused the connection's setup: {exc}") from exc
            if time.monotonic() >= deadline:
                raise RemoteUnavailableError(
                    f"JetStream at {', '.join(settings.servers)} did not become ready in"
                    f" {settings.retry_for} s: {exc!r}"
                ) from exc
            await asyncio.sleep(0.2)
