"""How topics, consumers and namespaces become JetStream names.

JetStream stream names exclude ``.``, ``*``, ``>``, ``/``, ``\\`` and white space, and subjects
split on ``.``; a topic is any UTF-8 name of up to 255 bytes. So every name on the server is
derived from a hash of the real one (base32 of SHA-256: letters and digits only), and the real
names are kept in the stream's metadata (``walrus.topic``, ``walrus.key``) and in each cursor's
value. 26 base32 characters are 130 bits: two topics never share a stream by accident, and the
metadata check on open turns even that into an error instead of mixed data.
"""

from __future__ import annotations

import base64
import hashlib

from walrus_core import InvalidConfigError
from walrus_core.names import encode_name

#: Every stream this package creates starts with this.
STREAM_PREFIX = "WALRUS_"
#: Stream metadata fields holding the real names.
TOPIC_FIELD = "walrus.topic"
KEY_FIELD = "walrus.key"
#: The namespace of ``key=None``.
NO_KEY = "D"
_HASH_CHARS = 26
_KEY_CHARS = 12


def _digest(kind: bytes, raw: bytes, chars: int) -> str:
    digest = hashlib.sha256(kind + b"\x00" + raw).digest()
    return base64.b32encode(digest).decode("ascii")[:chars]


def namespace_token(key: str | None) -> str:
    """The part of every server-side name that stands for the namespace ``key``."""
    if key is None:
        return NO_KEY
    if not isinstance(key, str):
        raise TypeError(f"key must be a str or None, not {type(key).__name__}")
    if not key or "\x00" in key:
        raise InvalidConfigError(f"key must be a non-empty string without NUL, got {key!r}")
    return _digest(b"key", key.encode("utf-8", "surrogatepass"), _KEY_CHARS)


def topic_token(topic: str) -> str:
    """The hash standing for ``topic`` (validated as a local topic name is)."""
    return _digest(b"topic", encode_name(topic), _HASH_CHARS)


def stream_name(namespace: str, topic: str) -> str:
    """The stream holding ``topic`` in the namespace token ``namespace``."""
    return f"{stream_prefix(namespace)}{topic_token(topic)}"


def stream_prefix(namespace: str) -> str:
    """What every stream of a namespace's topics starts with."""
    return f"{STREAM_PREFIX}{namespace}_"


def subject(namespace: str, topic: str) -> str:
    """The one subject a topic's stream captures."""
    return f"walrus.{namespace}.{topic_token(topic)}"


def cursor_bucket(namespace: str) -> str:
    """The key-value bucket holding a namespace's cursors."""
    return f"WALRUS_CURSORS_{namespace}"


def cursor_key(topic: str, consumer: str | None) -> str:
    """The key of the cursor of ``consumer`` (None: the default one) on ``topic``."""
    who = (
        "default"
        if consumer is None
        else _digest(b"consumer", encode_name(consumer, "consumer"), _HASH_CHARS)
    )
    return f"{topic_token(topic)}.{who}"
