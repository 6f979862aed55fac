"""Validation of topic and consumer names, and the mapping of namespace keys to directories."""

from __future__ import annotations

import os
from typing import Any

from walrus_core.errors import InvalidConfigError, InvalidTopicError

MAX_NAME_BYTES = 255
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x00000100000001B3
_KEY_KEEP = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
_MAX_KEY_DIR = 200


def encode_name(name: Any, what: str = "topic") -> bytes:
    """Return the UTF-8 bytes of a topic or consumer name, or raise :class:`InvalidTopicError`.

    Names are non-empty ``str`` of at most 255 UTF-8 bytes without NUL. They never become file
    names, so any other character is fine.
    """
    if not isinstance(name, str):
        raise TypeError(f"{what} name must be str, not {type(name).__name__}")
    if not name:
        raise InvalidTopicError(f"{what} name must not be empty")
    if "\x00" in name:
        raise InvalidTopicError(f"{what} name must not contain NUL: {name!r}")
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidTopicError(f"{what} name is not encodable as UTF-8: {name!r}") from exc
    if len(raw) > MAX_NAME_BYTES:
        raise InvalidTopicError(
            f"{what} name is {len(raw)} UTF-8 bytes; the limit is {MAX_NAME_BYTES}"
        )
    return raw


def fnv1a64(data: bytes) -> int:
    """FNV-1a 64-bit hash, as the original uses for keys that sanitize to nothing."""
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def sanitize_key(key: str) -> str:
    """Map a namespace key to one safe directory name.

    ASCII letters, digits, ``-``, ``_`` and ``.`` are kept; every other character becomes ``_``
    (``prod/payments::v1`` becomes ``prod_payments__v1``). A key that leaves nothing but
    underscores or dots (``""``, ``.``, ``..``) becomes ``ns_<fnv1a64 hex>``, so no key can name
    the data directory itself or its parent. Very long keys are shortened with a hash suffix.
    """
    if not isinstance(key, str):
        raise TypeError(f"key must be str, not {type(key).__name__}")
    out = "".join(ch if ch in _KEY_KEEP else "_" for ch in key)
    digest = format(fnv1a64(key.encode("utf-8", "surrogatepass")), "x")
    if not out.strip("_."):
        return "ns_" + digest
    if len(out) > _MAX_KEY_DIR:
        out = out[: _MAX_KEY_DIR - len(digest) - 1] + "_" + digest
    return out


def namespace_dir(data_dir: str | os.PathLike[str], key: str | None) -> str:
    """The directory an instance uses: ``data_dir`` or ``data_dir/<sanitize(key)>``."""
    base = os.path.abspath(os.fspath(data_dir))
    if key is None:
        return base
    root = os.path.join(base, sanitize_key(key))
    if os.path.dirname(root) != base:  # defence in depth: sanitize_key never yields a separator
        raise InvalidConfigError(f"key {key!r} would leave the data directory")
    return root
