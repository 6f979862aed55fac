"""Validation of topic and consumer names, and the mapping of namespace keys to directories."""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Any

from walrus_core.errors import InvalidConfigError, InvalidTopicError

MAX_NAME_BYTES = 255

#: Characters a key may consist of to be its own directory name. Upper-case letters are
#: missing on purpose: on a case-insensitive filesystem (the macOS and Windows defaults)
#: ``Prod`` and ``prod`` would otherwise name the same directory.
_SAFE_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
#: Characters the readable part of a changed key keeps (everything else becomes ``_``).
_READABLE_KEY_CHARS = _SAFE_KEY_CHARS | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
#: Separates the readable part of a changed key from its hash. It is in neither set above, so
#: an unchanged key never contains it and a changed key contains it exactly once. A name never
#: starts with it (the readable part is never empty), so shells do not take it for a home.
KEY_HASH_SEPARATOR = "~"
#: Hex digits of the key's hash. 64 bits of BLAKE2b: finding another key with the same hash
#: as a given key (a second preimage) takes about 2**64 tries, so neither chance nor a tenant
#: choosing keys on purpose can land in another tenant's directory.
_KEY_HASH_HEX = 16
#: Longest directory name a key maps to. Names are limited to 255 bytes; the margin leaves
#: room for filesystems that store names longer than they look (encrypting or compressing
#: layers) and for tools that append to a name. Every produced name is ASCII, so characters
#: are bytes.
MAX_KEY_DIR_BYTES = 200
#: Readable part of a key with nothing readable in it ("", "." and the like).
_EMPTY_READABLE = "ns"


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


def _is_safe_key(key: str) -> bool:
    return (
        0 < len(key) <= MAX_KEY_DIR_BYTES
        and all(ch in _SAFE_KEY_CHARS for ch in key)
        and bool(key.strip("."))  # ".", ".." and "..." name no directory of their own
    )


def _key_hash(key: str) -> str:
    # Over UTF-8 with surrogatepass: every str encodes, lone surrogates included, and distinct
    # strs to distinct bytes. Lower-case hex, so case folding cannot make two hashes equal.
    raw = key.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(raw, digest_size=_KEY_HASH_HEX // 2).hexdigest()


def sanitize_key(key: str) -> str:
    """Map a namespace key to one directory name, distinct for distinct keys.

    A key that is already a safe directory name is kept as it is: 1 to 200 lower-case ASCII
    letters, digits, ``-``, ``_`` and ``.``, not only dots (``tenant-a`` stays ``tenant-a``).
    Every other key becomes a readable form of itself followed by ``~`` and 16 hex digits of a
    hash of the key: letters, digits, ``-``, ``_`` and ``.`` are kept, any other character
    becomes ``_``, a readable form without anything but dots becomes ``ns``, and the readable
    form is cut so that the whole name fits in 200 bytes (``prod/payments::v1`` becomes
    ``prod_payments__v1~<hash>``, ``Prod`` becomes ``Prod~<hash>``, ``..`` becomes
    ``ns~<hash>``).

    An unchanged key never contains ``~`` and contains no upper-case letter, and a changed key
    ends in the hash of exactly itself, so no two keys share a directory, also where the
    filesystem ignores case. No key names ``data_dir`` itself, its parent or anything outside.
    """
    if not isinstance(key, str):
        raise TypeError(f"key must be str, not {type(key).__name__}")
    if _is_safe_key(key):
        return key
    readable = "".join(ch if ch in _READABLE_KEY_CHARS else "_" for ch in key)
    if not readable.strip("."):
        readable = _EMPTY_READABLE
    room = MAX_KEY_DIR_BYTES - len(KEY_HASH_SEPARATOR) - _KEY_HASH_HEX
    return readable[:room] + KEY_HASH_SEPARATOR + _key_hash(key)


def _check_data_dir(data_dir: str | os.PathLike[str]) -> str:
    path = os.fspath(data_dir)
    if not isinstance(path, str):
        raise TypeError(f"data_dir must be a str path, not {type(path).__name__}")
    if not path:
        raise InvalidConfigError(
            "data_dir must not be empty (pass '.' to use the current directory)"
        )
    if "\x00" in path:
        raise InvalidConfigError(f"data_dir must not contain NUL: {path!r}")
    try:
        os.fsencode(path)
    except UnicodeEncodeError as exc:
        raise InvalidConfigError(
            f"data_dir {path!r} cannot be encoded as a file name"
            f" ({sys.getfilesystemencoding()}): {exc.reason}"
        ) from exc
    return path


def namespace_dir(data_dir: str | os.PathLike[str], key: str | None) -> str:
    """The directory an instance uses: ``data_dir``, or ``data_dir/<sanitize_key(key)>``.

    Raises :class:`InvalidConfigError` for a ``data_dir`` that names no directory (empty,
    containing NUL, not encodable as a file name) and ``TypeError`` for a ``bytes`` one. The
    result is absolute; nothing is created.
    """
    base = os.path.abspath(_check_data_dir(data_dir))
    if key is None:
        return base
    name = sanitize_key(key)
    root = os.path.join(base, name)
    if os.path.dirname(root) != base:  # defence in depth: sanitize_key never yields a separator
        raise InvalidConfigError(f"key {key!r} would leave the data directory")
    return root
