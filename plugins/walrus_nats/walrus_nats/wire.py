"""The JetStream requests this package makes, one function each, on nats-py's core client.

Publishes and reads go through raw requests rather than nats-py's JetStream helpers: the
positional and atomic-batch headers, and the direct batch get, have no helper there, and the
raw answer keeps the server's error code (``err_code``), which is what tells a refused
positional append from a lost one.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from typing import Any

import attrs
import nats.errors
import nats.js.errors
from nats.aio.client import Client

#: The stream's last sequence is not the one a positional publish expected.
WRONG_LAST_SEQUENCE = 10071
#: A batch has more messages than the server's batch limit.
BATCH_TOO_LARGE = 10199
#: A message is larger than the stream or the server accepts.
MESSAGE_TOO_LARGE = 10054
#: The stream does not exist.
STREAM_NOT_FOUND = 10059
#: More than one replica asked of a server that is not part of a cluster.
REPLICAS_UNSUPPORTED = 10074

EXPECTED_LAST_SEQUENCE = "Nats-Expected-Last-Sequence"
BATCH_ID = "Nats-Batch-Id"
BATCH_SEQUENCE = "Nats-Batch-Sequence"
BATCH_COMMIT = "Nats-Batch-Commit"
#: Our header on an append's first message: the id of the append, so that after a lost answer
#: the entry at the expected position tells whether it is this append's.
APPEND_ID = "Walrus-Append-Id"

_WRONG_LAST = re.compile(r"wrong last sequence: (\d+)")
_BATCH_LIMIT = re.compile(r"too large: (\d+)")

#: What nats-py raises when an answer did not come: the request may or may not have been
#: carried out.
LOST_ANSWER: tuple[type[Exception], ...] = (
    nats.errors.TimeoutError,
    asyncio.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.FlushTimeoutError,
)


#: No answer, or nobody to answer (no stream leader yet): a request not known to be refused.
NO_ANSWER: tuple[type[Exception], ...] = (
    *LOST_ANSWER,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,
)


class ApiError(Exception):
    """The server refused a request; ``err_code`` is JetStream's code for why."""

    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"{description} (JetStream error {err_code})")
        self.code = code
        self.err_code = err_code
        self.description = description

    @property
    def actual_last(self) -> int | None:
        """The stream's real last sequence, from a refused positional publish."""
        match = _WRONG_LAST.search(self.description)
        return int(match.group(1)) if match and self.err_code == WRONG_LAST_SEQUENCE else None

    @property
    def batch_limit(self) -> int | None:
        """The server's batch limit, from a refused batch."""
        match = _BATCH_LIMIT.search(self.description)
        return int(match.group(1)) if match and self.err_code == BATCH_TOO_LARGE else None


def _answer(data: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(data) if data else {}
    except ValueError as exc:
        raise ApiError(0, 0, f"unreadable answer from the server: {data[:200]!r}") from exc
    if not isinstance(answer, dict):
        raise ApiError(0, 0, f"unexpected answer from the server: {data[:200]!r}")
    error = answer.get("error")
    if error:
        raise ApiError(
            int(error.get("code", 0)), int(error.get("err_code", 0)), str(error.get("description"))
        )
    return answer


async def api(
    nc: Client, subject: str, body: dict[str, Any] | None, timeout: float
) -> dict[str, Any]:
    """A JetStream API request (``$JS.API...``); raises :class:`ApiError` on a refusal."""
    payload = json.dumps(body).encode() if body is not None else b""
    reply = await nc.request(subject, payload, timeout=timeout)
    return _answer(reply.data)


#: Any failure of a request: refused, or not answered.
FAILED: tuple[type[Exception], ...] = (ApiError, *NO_ANSWER)


@attrs.frozen
class Stored:
    """Where the server stored a publish (or the last message of a batch) and how many."""

    seq: int
    count: int


async def publish(
    nc: Client, subject: str, payload: bytes, headers: dict[str, str], timeout: float
) -> Stored:
    """One message, stored or refused (:class:`ApiError`); a lost answer raises from
    :data:`LOST_ANSWER`."""
    reply = await nc.request(subject, payload, timeout=timeout, headers=headers)
    answer = _answer(reply.data)
    return Stored(int(answer["seq"]), 1)


async def publish_batch(
    nc: Client,
    subject: str,
    payloads: Sequence[bytes],
    first_headers: dict[str, str],
    batch_id: str,
    timeout: float,
) -> Stored:
    """An atomic batch (all messages stored, or none): the first message is a request that
    opens it, the middle ones are plain publishes, the last one commits it and brings the
    answer. ``first_headers`` go on the first message only."""
    first = {**first_headers, BATCH_ID: batch_id, BATCH_SEQUENCE: "1"}
    if len(payloads) == 1:
        first[BATCH_COMMIT] = "1"
        reply = await nc.request(subject, payloads[0], timeout=timeout, headers=first)
        answer = _answer(reply.data)
        return Stored(int(answer["seq"]), int(answer.get("count", 1)))
    reply = await nc.request(subject, payloads[0], timeout=timeout, headers=first)
    if reply.data:  # an empty answer means "batch opened"; anything else is a refusal
        _answer(reply.data)
        raise ApiError(0, 0, f"unexpected answer opening a batch: {reply.data[:200]!r}")
    for number, payload in enumerate(payloads[1:-1], start=2):
        await nc.publish(
            subject, payload, headers={BATCH_ID: batch_id, BATCH_SEQUENCE: str(number)}
        )
    last = {BATCH_ID: batch_id, BATCH_SEQUENCE: str(len(payloads)), BATCH_COMMIT: "1"}
    reply = await nc.request(subject, payloads[-1], timeout=timeout, headers=last)
    answer = _answer(reply.data)
    count = int(answer.get("count", 0))
    if count != len(payloads):
        raise ApiError(0, 0, f"the server committed {count} of a batch of {len(payloads)}")
    return Stored(int(answer["seq"]), count)


@attrs.frozen
class Message:
    """A stored message as a direct get returns it."""

    seq: int
    data: bytes
    headers: dict[str, str]


@attrs.frozen
class Messages:
    """What a direct batch get returned: the messages, the last sequence it delivered and how
    many more the stream holds after it (None when the server did not say)."""

    messages: list[Message]
    last_seq: int | None
    pending: int | None = None


async def direct_get(
    nc: Client, stream: str, seq: int, batch: int, max_bytes: int, timeout: float
) -> Messages:
    """Up to ``batch`` messages from sequence ``seq`` on, about ``max_bytes`` in all, from any
    server holding the stream (``allow_direct``): a replica may lag behind the leader, so it
    may return fewer than exist."""
    body = {"seq": seq, "batch": batch, "max_bytes": max_bytes}
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    try:
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}", json.dumps(body).encode(), reply=inbox)
        out: list[Message] = []
        while True:
            msg = await sub.next_msg(timeout=timeout)
            headers = dict(msg.headers or {})
            status = headers.get("Status")
            if status is not None:
                if status in ("204", "404"):  # end of batch; nothing there
                    last = headers.get("Nats-Last-Sequence")
                    pending = headers.get("Nats-Num-Pending")
                    return Messages(
                        out,
                        int(last) if last is not None else None,
                        int(pending) if pending is not None else None,
                    )
                raise ApiError(int(status), 0, f"direct get: {headers.get('Description', status)}")
            out.append(Message(int(headers["Nats-Sequence"]), msg.data or b"", headers))
    finally:
        await sub.unsubscribe()
