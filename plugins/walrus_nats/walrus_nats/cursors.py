"""Cursors as offsets in a replicated key-value bucket, moved by compare-and-set.

Why not JetStream's durable consumers: a consumer has no peek (a fetch counts as a delivery),
no read from an arbitrary offset without a second consumer, and each R3 consumer is a Raft
group of its own. A cursor here is one key of one bucket per namespace (one Raft group for all
of them): its value is the offset of the next entry, written only if nobody wrote it since it
was read (the bucket's revision), so concurrent readers in several processes never both
consume an entry, and peeks, seeks and reads from any offset are plain reads of the stream.

Every write carries a random operation id in the value. When a write's answer is lost, the
key is read again: our id there means the write happened; the old revision means it did not
and is tried again; anything else means another reader moved the cursor.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time

import attrs
import nats.js.errors
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from walrus_core import RemoteUnavailableError, StorageError
from walrus_nats import naming, wire
from walrus_nats.config import NatsSettings

#: A cursor write that may be tried again: no answer, or a refusal other than a conflict.
_RETRYABLE: tuple[type[Exception], ...] = (*wire.NO_ANSWER, nats.js.errors.APIError)


@attrs.define(eq=False)
class CursorState:
    """What this process knows of one cursor.

    ``offset`` is the next entry to read (what this process consumed, persisted or not);
    ``stored`` the offset the bucket held at ``revision`` (0 and None: never written);
    ``pending`` how many consumed entries are not persisted yet (at-least-once reads).
    """

    topic: str
    consumer: str | None
    key: str
    offset: int = 0
    stored: int = 0
    revision: int | None = None
    pending: int = 0
    lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)


class CursorStore:
    """The cursors of one namespace, one key each in the bucket ``WALRUS_CURSORS_<ns>``."""

    def __init__(self, kv: KeyValue, settings: NatsSettings) -> None:
        self._kv = kv
        self._settings = settings
        self._states: dict[tuple[str, str | None], CursorState] = {}

    @classmethod
    async def open(
        cls, js: JetStreamContext, namespace: str, settings: NatsSettings
    ) -> CursorStore:
        """The namespace's bucket, created on first use with ``settings.replicas`` copies."""
        bucket = naming.cursor_bucket(namespace)
        try:
            kv = await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            kv = await js.create_key_value(
                bucket=bucket, history=1, replicas=settings.replicas, description="walrus cursors"
            )
        return cls(kv, settings)

    def cached(self) -> list[CursorState]:
        """Every cursor this process has used."""
        return list(self._states.values())

    async def state(self, topic: str, consumer: str | None) -> CursorState:
        """The cursor, read from the bucket the first time this process uses it."""
        state = self._states.get((topic, consumer))
        if state is None:
            fresh = CursorState(topic, consumer, naming.cursor_key(topic, consumer))
            await self.refresh(fresh)
            # Another call may have made it while this one waited: one state per cursor.
            state = self._states.setdefault((topic, consumer), fresh)
        return state

    async def refresh(self, state: CursorState) -> None:
        """Read the stored value again (after a conflict, or to see other readers' moves)."""
        offset, revision, _op = await self._read(state.key)
        state.stored, state.revision = offset, revision
        state.offset, state.pending = offset, 0

    async def _read(self, key: str) -> tuple[int, int | None, str | None]:
        deadline = time.monotonic() + self._settings.retry_for
        while True:
            try:
                entry = await self._kv.get(key)
            except nats.js.errors.KeyDeletedError as exc:  # deleted outside: write over it
                marker = getattr(exc, "entry", None)
                return 0, getattr(marker, "revision", None), None
            except nats.js.errors.KeyNotFoundError:
                return 0, None, None
            except wire.NO_ANSWER as exc:
                if time.monotonic() >= deadline:
                    raise RemoteUnavailableError(f"reading cursor {key}: {exc!r}") from exc
                await asyncio.sleep(0.05)
                continue
            except nats.js.errors.APIError as exc:
                if time.monotonic() >= deadline:
                    raise StorageError(f"reading cursor {key}: {exc}") from exc
                await asyncio.sleep(0.05)
                continue
            value = json.loads(entry.value or b"{}")
            return int(value.get("offset", 0)), entry.revision, value.get("op")

    async def move(self, state: CursorState, offset: int) -> bool:
        """Write ``offset`` if the cursor is still where ``state`` saw it; False (and
        ``state`` refreshed) when another reader moved it first."""
        op = secrets.token_hex(8)
        value = json.dumps(
            {"offset": offset, "op": op, "topic": state.topic, "consumer": state.consumer}
        ).encode()
        deadline = time.monotonic() + self._settings.retry_for
        while True:
            try:
                revision = await self._kv.update(state.key, value, last=state.revision or 0)
            except nats.js.errors.KeyWrongLastSequenceError:
                stored, revision_now, stored_op = await self._read(state.key)
                if stored_op == op:  # an earlier try of this write went through
                    state.stored, state.revision, state.offset, state.pending = (
                        offset,
                        revision_now,
                        offset,
                        0,
                    )
                    return True
                state.stored, state.revision = stored, revision_now
                state.offset, state.pending = stored, 0
                return False
            except _RETRYABLE as exc:
                if time.monotonic() >= deadline:
                    raise RemoteUnavailableError(
                        f"moving cursor {state.consumer!r} of {state.topic!r} to {offset}:"
                        f" no answer for {self._settings.retry_for} s ({exc!r}); it is at"
                        f" {state.stored} or {offset}"
                    ) from exc
                await asyncio.sleep(0.05)
                stored, revision_now, stored_op = await self._read(state.key)
                if stored_op == op:
                    state.stored, state.revision, state.offset, state.pending = (
                        offset,
                        revision_now,
                        offset,
                        0,
                    )
                    return True
                if revision_now != state.revision:
                    state.stored, state.revision = stored, revision_now
                    state.offset, state.pending = stored, 0
                    return False
                continue
            state.stored, state.revision, state.offset, state.pending = offset, revision, offset, 0
            return True

    async def put(self, state: CursorState, offset: int) -> None:
        """Set the cursor to ``offset`` whatever it holds (a seek)."""
        while not await self.move(state, offset):
            pass  # someone moved it meanwhile: a seek wins, so write over it
