"""``walrus_core.connect("nats://...")``: the factory behind the ``nats`` URL scheme.

``nats://host1:4222,host2:4222/?key=orders&replicas=3&consistency=at_least_once:1000`` opens a
:class:`~walrus_nats.NatsWalrus` on those servers; keyword options passed to ``connect()`` win
over the query. ``tls://`` URLs work the same way (nats-py's TLS scheme).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from walrus_core import InvalidConfigError, ReadConsistency
from walrus_nats.sync import NatsWalrus

_INT_OPTIONS = {"replicas"}
_FLOAT_OPTIONS = {"timeout", "retry_for"}
_KNOWN = {"key", "consistency", *_INT_OPTIONS, *_FLOAT_OPTIONS}


def _consistency(text: str) -> ReadConsistency:
    if text in ("strict", "strictly_at_once"):
        return ReadConsistency.strictly_at_once()
    name, _, every = text.partition(":")
    if name == "at_least_once":
        try:
            return ReadConsistency.at_least_once(int(every) if every else 1000)
        except ValueError:
            pass
    raise InvalidConfigError(
        f"consistency={text!r}: use strictly_at_once, at_least_once or at_least_once:N"
    )


def parse_url(url: str) -> tuple[list[str], dict[str, Any]]:
    """The server URLs and the options a ``nats://`` URL names."""
    parts = urllib.parse.urlsplit(url)
    if not parts.netloc:
        raise InvalidConfigError(f"{url!r} names no server")
    if parts.path not in ("", "/"):
        raise InvalidConfigError(f"{url!r}: a nats: URL has no path (the namespace is ?key=...)")
    servers = [f"{parts.scheme}://{host}" for host in parts.netloc.split(",") if host]
    options: dict[str, Any] = {}
    for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if name not in _KNOWN:
            raise InvalidConfigError(f"{url!r}: unknown option {name!r} (known: {sorted(_KNOWN)})")
        try:
            if name in _INT_OPTIONS:
                options[name] = int(value)
            elif name in _FLOAT_OPTIONS:
                options[name] = float(value)
            elif name == "consistency":
                options[name] = _consistency(value)
            else:
                options[name] = value
        except ValueError:
            raise InvalidConfigError(f"{url!r}: {name}={value!r} is not a number") from None
    return servers, options


def open_url(url: str, **options: Any) -> NatsWalrus:
    """Open the log a ``nats://`` URL names (the ``walrus.remotes`` entry point)."""
    servers, from_query = parse_url(url)
    return NatsWalrus(servers, **{**from_query, **options})
