"""walrus-nats: the Walrus log API on NATS JetStream, and a mirror of a local log to it.

>>> from walrus_nats import NatsWalrus                       # doctest: +SKIP
>>> with NatsWalrus(["nats://127.0.0.1:4222"], key="orders") as log:
...     log.append_for_topic("events", b"hello")
...     log.read_next("events")

``walrus_core.connect("nats://host:4222/?key=orders")`` opens the same.
"""

from walrus_nats.aio import AsyncNatsWalrus, TopicEndMismatchError
from walrus_nats.config import NatsSettings
from walrus_nats.mirror import (
    MIRROR_CONSUMER,
    Mirror,
    MirrorDivergedError,
    MirrorGapError,
    MirrorLimitError,
    TopicMirror,
)
from walrus_nats.server import ServerFacts
from walrus_nats.sync import NatsWalrus
from walrus_nats.url import open_url

__all__ = [
    "MIRROR_CONSUMER",
    "AsyncNatsWalrus",
    "Mirror",
    "MirrorDivergedError",
    "MirrorGapError",
    "MirrorLimitError",
    "NatsSettings",
    "NatsWalrus",
    "ServerFacts",
    "TopicEndMismatchError",
    "TopicMirror",
    "open_url",
]
__version__ = "0.1.0"
