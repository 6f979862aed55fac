"""What the server can do, learned once at connect: the limits and guarantees this package
then enforces with the core's errors."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import urllib.request
from typing import Any

import attrs
from nats.aio.client import Client

from walrus_core import BackendUnavailableError
from walrus_nats import wire

#: The oldest server with atomic batches (ADR-50) and direct batch gets.
MIN_VERSION = (2, 12, 0)
#: The batch limit this package asks the server about: more than the core's largest batch.
PROBE_BATCH = 2001
#: Bytes of every published message kept for headers (ours and the server's count against
#: ``max_payload`` too), so that the largest entry accepted always fits.
HEADER_ALLOWANCE = 1024


@attrs.frozen
class ServerFacts:
    """One server's answers at connect.

    Attributes:
        version: the server's release, e.g. ``(2, 15, 1)``.
        max_payload: the largest message the server takes, headers included.
        batch_limit: the most messages of one atomic batch (1000 unless the server raises it).
        sync_always: whether the server syncs every write to disk before acknowledging it
            (its ``sync_interval: always``); None when it could not be asked (no monitoring
            URL).
        sync_interval_ms: the server's sync interval in milliseconds when known (0: always).
    """

    version: tuple[int, int, int]
    max_payload: int
    batch_limit: int
    sync_always: bool | None
    sync_interval_ms: int | None

    @property
    def max_entry_bytes(self) -> int:
        """The largest entry that fits in one message with our headers."""
        return max(0, self.max_payload - HEADER_ALLOWANCE)


def parse_version(text: str) -> tuple[int, int, int]:
    """``"2.15.1"`` (or ``"v2.12.0-beta"``) as a tuple; (0, 0, 0) when unreadable."""
    match = re.match(r"v?(\d+)\.(\d+)\.(\d+)", text or "")
    if match is None:
        return (0, 0, 0)
    return (int(match.group(1)), int(match.group(2)), int(match.group(3)))


def check_version(info: dict[str, Any]) -> tuple[int, int, int]:
    """The server's version from its INFO, or BackendUnavailableError when it cannot serve."""
    version = parse_version(str(info.get("version", "")))
    if version < MIN_VERSION:
        raise BackendUnavailableError(
            f"the NATS server is version {info.get('version')!r}; walrus-nats needs"
            f" {'.'.join(map(str, MIN_VERSION))} or newer (atomic batches). Older servers,"
            " such as the 2.9 of Debian 12, store an 'atomic' batch message by message."
        )
    if not info.get("jetstream"):
        raise BackendUnavailableError(
            "the NATS server runs without JetStream: start it with -js (or a jetstream block)"
        )
    if not info.get("headers", False):
        raise BackendUnavailableError("the NATS server does not support message headers")
    return version


async def probe_batch_limit(nc: Client, timeout: float) -> int:
    """The server's batch limit, asked by a batch one larger than any we send, to a throwaway
    in-memory stream: the refusal names the limit; a server that stored it has a larger one.

    It also proves that the server really treats batches atomically (``allow_atomic`` echoed
    back, and a too-large batch refused as a whole)."""
    name = f"WALRUS_PROBE_{secrets.token_hex(8)}"
    config = {
        "name": name,
        "subjects": [f"walrus.probe.{name}"],
        "storage": "memory",
        "num_replicas": 1,
        "max_msgs": 1,
        "allow_atomic": True,
    }
    created = await wire.api(nc, f"$JS.API.STREAM.CREATE.{name}", config, timeout)
    try:
        if created.get("config", {}).get("allow_atomic") is not True:
            raise BackendUnavailableError(
                "the NATS server does not keep allow_atomic on a stream: it has no atomic batches"
            )
        subject = f"walrus.probe.{name}"
        try:
            await wire.publish_batch(
                nc, subject, [b""] * PROBE_BATCH, {}, secrets.token_hex(8), timeout
            )
        except wire.ApiError as exc:
            if exc.code in (500, 503):
                raise  # not ready: asked again
            if exc.batch_limit is None:
                raise BackendUnavailableError(
                    f"the NATS server refused a probe batch: {exc}"
                ) from exc
            return exc.batch_limit
        return PROBE_BATCH
    finally:
        try:
            await wire.api(nc, f"$JS.API.STREAM.DELETE.{name}", None, timeout)
        except wire.FAILED:
            pass  # an in-memory stream of at most one message: harmless if it stays


def _read_jsz(url: str, timeout: float) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url.rstrip('/')}/jsz?config=1", timeout=timeout) as reply:
        data: dict[str, Any] = json.load(reply)
        return data


async def read_sync_setting(
    monitoring: tuple[str, ...], timeout: float
) -> tuple[bool | None, int | None]:
    """(sync_always, sync_interval_ms) from the servers' monitoring endpoints: every server
    must sync always for a write to be on disk everywhere that acknowledged it."""
    if not monitoring:
        return None, None
    always = True
    longest = 0
    for url in monitoring:
        try:
            jsz = await asyncio.to_thread(_read_jsz, url, timeout)
        except (OSError, ValueError) as exc:
            raise BackendUnavailableError(f"cannot read {url}/jsz?config=1: {exc}") from exc
        config = jsz.get("config", {})
        if config.get("sync_always"):
            continue
        always = False
        interval_ns = int(config.get("sync_interval", 0) or 120_000_000_000)
        longest = max(longest, interval_ns // 1_000_000)
    return always, (0 if always else longest)


async def inspect(nc: Client, monitoring: tuple[str, ...], timeout: float) -> ServerFacts:
    """Ask the connected server everything :class:`ServerFacts` holds."""
    info = dict(nc._server_info)
    version = check_version(info)
    try:
        await wire.api(nc, "$JS.API.INFO", None, timeout)
    except wire.ApiError as exc:
        if exc.code in (500, 503):
            raise  # not ready: asked again
        raise BackendUnavailableError(f"JetStream is not available to this account: {exc}") from exc
    batch_limit = await probe_batch_limit(nc, timeout)
    sync_always, interval = await read_sync_setting(monitoring, timeout)
    return ServerFacts(
        version=version,
        max_payload=int(info.get("max_payload", 1 << 20)),
        batch_limit=batch_limit,
        sync_always=sync_always,
        sync_interval_ms=interval,
    )
