"""The settings of a connection to JetStream, validated when they are made."""

from __future__ import annotations

import math
from typing import Any

import attrs

from walrus_core import InvalidConfigError


def _servers(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    servers = tuple(value)
    if not servers:
        raise InvalidConfigError("servers must name at least one server")
    for server in servers:
        if not isinstance(server, str) or not server:
            raise InvalidConfigError(f"a server must be a non-empty URL string, got {server!r}")
    return servers


def _urls(value: Any) -> tuple[str, ...]:
    urls = tuple(value)
    for url in urls:
        if not isinstance(url, str) or not url:
            raise InvalidConfigError(f"a monitoring URL must be a non-empty string, got {url!r}")
    return urls


def _positive_seconds(_inst: Any, attribute: attrs.Attribute[float], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{attribute.name} must be a number of seconds, not {type(value).__name__}")
    if not (value > 0 and math.isfinite(value)):
        raise InvalidConfigError(
            f"{attribute.name} must be a positive number of seconds, got {value}"
        )


def _replicas(_inst: Any, _attribute: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"replicas must be an int, not {type(value).__name__}")
    if value not in (1, 3, 5):
        raise InvalidConfigError(f"replicas must be 1, 3 or 5 (a Raft group), got {value}")


@attrs.frozen
class NatsSettings:
    """Where the servers are and how hard to try.

    Attributes:
        servers: URLs of one or more servers of the cluster (``nats://host:port``).
        replicas: copies the server keeps of every stream and cursor bucket this creates
            (1, or 3 or 5 on a cluster). Existing streams keep what they were created with.
        timeout: seconds to wait for one answer from the server.
        retry_for: seconds an append (or a cursor write) keeps retrying after timeouts or a
            lost leader before it gives up with an error.
        monitoring: HTTP monitoring URLs of the servers (``http://host:8222``), read at connect
            to learn whether the server syncs every write; optional.
        trust_server_sync: honour ``fsync=FsyncSchedule.sync_each()`` without being able to
            confirm it through ``monitoring`` (you vouch for the server's ``sync_interval``).
        connect_options: passed to ``nats.connect`` (credentials, TLS, names, ...).
    """

    servers: tuple[str, ...] = attrs.field(converter=_servers)
    replicas: int = attrs.field(default=1, validator=_replicas)
    timeout: float = attrs.field(default=5.0, validator=_positive_seconds)
    retry_for: float = attrs.field(default=15.0, validator=_positive_seconds)
    monitoring: tuple[str, ...] = attrs.field(default=(), converter=_urls)
    trust_server_sync: bool = False
    connect_options: dict[str, Any] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        reserved = {"servers", "allow_reconnect"} & set(self.connect_options)
        if reserved:
            raise InvalidConfigError(f"connect_options must not set {sorted(reserved)}")
