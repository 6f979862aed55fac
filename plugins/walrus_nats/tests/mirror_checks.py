"""Comparing a local log with its remote copy, group by group."""

from __future__ import annotations

import asyncio

from walrus_nats import NatsWalrus, naming, wire

from walrus_core import Walrus


def local_groups(wal: Walrus, topic: str) -> list[list[bytes]]:
    """Every group (one append call) of a local topic, as payloads."""
    out: list[list[bytes]] = []
    offset = 0
    end = wal.topic_info(topic).end_offset
    while offset < end:
        for group in wal.read_batches(topic, offset, 1 << 24):
            out.append([e.data for e in group])
            offset += len(group)
    return out


def remote_groups(url: str, key: str, topic: str) -> list[list[bytes]]:
    """Every group of the remote copy: a group starts at each message carrying an append id
    (the first message of an append or atomic batch)."""

    async def read() -> list[list[bytes]]:
        import nats

        nc = await nats.connect(url)
        try:
            stream = naming.stream_name(naming.namespace_token(key), topic)
            groups: list[list[bytes]] = []
            seq = 1
            while True:
                got = await wire.direct_get(nc, stream, seq, 1000, 1 << 24, 5.0)
                if not got.messages:
                    return groups
                for message in got.messages:
                    assert message.seq == seq, (message.seq, seq)
                    if wire.APPEND_ID in message.headers or not groups:
                        groups.append([])
                    groups[-1].append(message.data)
                    seq += 1
        finally:
            await nc.close()

    return asyncio.run(read())


def assert_same(wal: Walrus, url: str, key: str) -> int:
    """The remote copy equals the local log topic by topic, entry by entry, batch by batch;
    returns how many entries were compared."""
    topics = wal.topics()
    with NatsWalrus([url], key=key) as remote:
        assert remote.topics() == topics
    compared = 0
    for topic in topics:
        local = local_groups(wal, topic)
        assert remote_groups(url, key, topic) == local, topic
        compared += sum(len(g) for g in local)
    return compared
