"""The on-disk format: directory layout, block headers, seal records, entry headers, cursor slots.

Everything is little-endian and versioned. See the README's "On-disk format" section for the
picture; the constants below are the single source of truth.

Directory::

    <root>/walrus.json          geometry and format version, written once at creation
    <root>/LOCK                 flock()ed by the one open instance
    <root>/cursors.dat          one 1 KiB slot per (topic, consumer), updated in place
    <root>/data-0000000001.wal  data files of block_size * blocks_per_file bytes (sparse)

A data file is a row of slots of ``block_size`` bytes. A block takes one slot, or several
contiguous slots for an entry larger than a block (a file grows past ``blocks_per_file`` slots
only for such a block). Every block starts with a 512-byte header region::

    0    fixed header (32 B): magic "WALB", version, flags, topic_len, block_seq, first_offset,
         slots, crc32c(fixed[0:28] + topic)
    32   topic name (<= 255 B)
    384  seal record (48 B), written when the block is full (SEALED) or at a clean close (CLOSED)
    512  entries, back to back

An entry is a 16-byte header followed by the payload, verbatim::

    crc u32 | length u32 | seq u32 | version u8 | flags u8 | 0 u16

``crc`` is the crc32c of the payload with an initial value mixed from the other header
fields (:func:`entry_seed`). A different initial value always yields a different crc for the
same bytes, so damage to the header is caught like damage to the payload, at the cost of one
checksum call per entry instead of two.

``seq`` is the low 32 bits of the entry's offset in its topic: it lets recovery resynchronise
after a damaged header and refuse bytes that belong to another position. ``flags`` has
``BATCH_OPEN`` on every entry of a batch but its last, which is how a crash in the middle of a
batch is rolled back to the batch's start.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Final

import attrs
from crc32c import crc32c

from walrus_core.config import Geometry
from walrus_core.errors import InvalidConfigError

FORMAT_VERSION: Final = 1
META_NAME: Final = "walrus.json"
LOCK_NAME: Final = "LOCK"
CURSORS_NAME: Final = "cursors.dat"
DATA_PREFIX: Final = "data-"
DATA_SUFFIX: Final = ".wal"

# --- entries -------------------------------------------------------------------------------
ENTRY_HEADER: Final = struct.Struct("<IIIBBH")
ENTRY_HEADER_SIZE: Final = ENTRY_HEADER.size  # 16
ENTRY_VERSION: Final = 1
FLAG_BATCH_OPEN: Final = 0x01
SEQ_MASK: Final = 0xFFFFFFFF

# --- blocks --------------------------------------------------------------------------------
BLOCK_MAGIC: Final = b"WALB"
BLOCK_VERSION: Final = 1
BLOCK_FIXED: Final = struct.Struct("<4sBBHQQII")  # 32 bytes
BLOCK_FLAG_DEAD: Final = 0x01
BLOCK_HEADER_SIZE: Final = 512
SEAL_AT: Final = 384
SEAL_MAGIC: Final = b"SEAL"
SEAL: Final = struct.Struct("<4sIIIQQQQ")  # magic, crc, kind, pad, count, end, committed, last
SEAL_SIZE: Final = SEAL.size  # 48
SEAL_SEALED: Final = 1
SEAL_CLOSED: Final = 2

# --- cursors -------------------------------------------------------------------------------
CURSOR_SLOT_SIZE: Final = 1024
CURSOR_NAMES: Final = struct.Struct("<4sIHH")
CURSOR_MAGIC: Final = b"CSR1"
CURSOR_COPY: Final = struct.Struct("<IIQQQQ")  # crc, pad, seq, offset, block_seq, pos
CURSOR_COPY_AT: Final = (896, 960)
CURSOR_INITIAL_SLOTS: Final = 64


def entry_size(payload_len: int) -> int:
    """Bytes an entry of ``payload_len`` takes on disk."""
    return ENTRY_HEADER_SIZE + payload_len


def data_file_name(number: int) -> str:
    """Name of data file ``number`` (1-based, increasing, never reused)."""
    return f"{DATA_PREFIX}{number:010d}{DATA_SUFFIX}"


def parse_data_file_name(name: str) -> int | None:
    """The number of a data file name, or None if ``name`` is not one of ours."""
    if not (name.startswith(DATA_PREFIX) and name.endswith(DATA_SUFFIX)):
        return None
    digits = name[len(DATA_PREFIX) : -len(DATA_SUFFIX)]
    if len(digits) != 10 or not digits.isdigit():
        return None
    return int(digits)


def slots_for_entry(geometry: Geometry, payload_len: int) -> int:
    """Slots a block needs so that one entry of ``payload_len`` fits after the header."""
    need = BLOCK_HEADER_SIZE + entry_size(payload_len)
    return max(1, -(-need // geometry.block_size))


def entry_seed(length: int, seq: int, flags: int) -> int:
    """The crc32c initial value of an entry: its header fields mixed into 32 bits."""
    return (length * 0x9E3779B1 ^ seq * 0x85EBCA77 ^ (flags << 8 | ENTRY_VERSION)) & 0xFFFFFFFF


def pack_entry_header(payload: bytes | memoryview, length: int, offset: int, flags: int) -> bytes:
    """The 16-byte header of an entry whose payload is ``payload`` (a buffer)."""
    seq = offset & SEQ_MASK
    crc = crc32c(payload, entry_seed(length, seq, flags))
    return ENTRY_HEADER.pack(crc, length, seq, ENTRY_VERSION, flags, 0)


def entry_crc(length: int, seq: int, flags: int, payload: bytes | memoryview) -> int:
    """The crc an entry with these header fields and payload must carry."""
    return int(crc32c(payload, entry_seed(length, seq, flags)))


@attrs.frozen
class BlockHeader:
    """The fixed header at the start of every block."""

    topic: str
    block_seq: int
    first_offset: int
    slots: int
    flags: int = 0

    def pack(self) -> bytes:
        """The header bytes (fixed part plus topic name)."""
        raw = self.topic.encode("utf-8")
        fixed = BLOCK_FIXED.pack(
            BLOCK_MAGIC,
            BLOCK_VERSION,
            self.flags,
            len(raw),
            self.block_seq,
            self.first_offset,
            self.slots,
            0,
        )
        crc = crc32c(raw, crc32c(fixed[:28]))
        return fixed[:28] + struct.pack("<I", crc) + raw

    @classmethod
    def unpack(cls, buf: bytes | memoryview) -> BlockHeader | None:
        """Parse a header region; None if it is empty, damaged or not ours."""
        if len(buf) < BLOCK_FIXED.size:
            return None
        magic, version, flags, tlen, seq, first, slots, crc = BLOCK_FIXED.unpack_from(buf, 0)
        if magic != BLOCK_MAGIC or version != BLOCK_VERSION or slots < 1 or tlen < 1:
            return None
        if BLOCK_FIXED.size + tlen > SEAL_AT:
            return None
        raw = bytes(buf[BLOCK_FIXED.size : BLOCK_FIXED.size + tlen])
        if crc32c(raw, crc32c(bytes(buf[:28]))) != crc:
            return None
        try:
            topic = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return cls(topic=topic, block_seq=seq, first_offset=first, slots=slots, flags=flags)


@attrs.frozen
class SealRecord:
    """What recovery needs to trust a block without scanning it.

    ``count`` entries end at in-block byte ``end``; ``committed`` is how many of them are outside
    an unfinished batch; ``last`` is where the last entry starts (for a cheap verification), or
    0 when recovery sealed a block whose last entry is damaged.
    """

    kind: int
    count: int
    end: int
    committed: int
    last: int

    def pack(self) -> bytes:
        """The 48-byte record."""
        body = SEAL.pack(
            SEAL_MAGIC, 0, self.kind, 0, self.count, self.end, self.committed, self.last
        )
        crc = crc32c(body[8:])
        return body[:4] + struct.pack("<I", crc) + body[8:]

    @classmethod
    def unpack(cls, buf: bytes | memoryview) -> SealRecord | None:
        """Parse the record at ``SEAL_AT`` of a header region; None if absent or damaged."""
        if len(buf) < SEAL_AT + SEAL_SIZE:
            return None
        magic, crc, kind, _pad, count, end, committed, last = SEAL.unpack_from(buf, SEAL_AT)
        if magic != SEAL_MAGIC or kind not in (SEAL_SEALED, SEAL_CLOSED):
            return None
        if crc32c(bytes(buf[SEAL_AT + 8 : SEAL_AT + SEAL_SIZE])) != crc:
            return None
        if committed > count or end < BLOCK_HEADER_SIZE:
            return None
        return cls(kind=kind, count=count, end=end, committed=committed, last=last)


CLEARED_SEAL: Final = bytes(SEAL_SIZE)


def pack_cursor_names(topic: bytes, consumer: bytes) -> bytes:
    """The names part of a cursor slot."""
    head = CURSOR_NAMES.pack(CURSOR_MAGIC, 0, len(topic), len(consumer))
    crc = crc32c(topic + consumer, crc32c(head[8:]))
    return head[:4] + struct.pack("<I", crc) + head[8:] + topic + consumer


def unpack_cursor_names(buf: bytes | memoryview) -> tuple[str, str] | None:
    """(topic, consumer) of a slot, None if the slot is empty or damaged."""
    magic, crc, tlen, clen = CURSOR_NAMES.unpack_from(buf, 0)
    if magic != CURSOR_MAGIC or tlen < 1:
        return None
    start = CURSOR_NAMES.size
    names = bytes(buf[start : start + tlen + clen])
    if len(names) != tlen + clen or start + tlen + clen > CURSOR_COPY_AT[0]:
        return None
    if crc32c(names, crc32c(bytes(buf[8:start]))) != crc:
        return None
    try:
        return names[:tlen].decode("utf-8"), names[tlen:].decode("utf-8")
    except UnicodeDecodeError:
        return None


def pack_cursor_copy(seq: int, offset: int, block_seq: int, pos: int) -> bytes:
    """One copy of a cursor value (slots hold two, written alternately)."""
    body = CURSOR_COPY.pack(0, 0, seq, offset, block_seq, pos)
    return struct.pack("<I", crc32c(body[4:])) + body[4:]


def unpack_cursor_copy(buf: bytes | memoryview, at: int) -> tuple[int, int, int, int] | None:
    """(seq, offset, block_seq, pos) of a copy, None if it never was written or is damaged."""
    crc, _pad, seq, offset, block_seq, pos = CURSOR_COPY.unpack_from(buf, at)
    if seq == 0:
        return None
    if crc32c(bytes(buf[at + 4 : at + CURSOR_COPY.size])) != crc:
        return None
    return seq, offset, block_seq, pos


def write_meta(root: str, geometry: Geometry) -> None:
    """Record the geometry of a new directory (atomically: temp file, fsync, rename)."""
    doc = {
        "format": "walrus-python",
        "version": FORMAT_VERSION,
        "block_size": geometry.block_size,
        "blocks_per_file": geometry.blocks_per_file,
    }
    path = os.path.join(root, META_NAME)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(root)


class DamagedMetaError(InvalidConfigError):
    """``walrus.json`` exists but cannot be read (recovery infers the geometry instead)."""


def read_meta(root: str) -> Geometry | None:
    """The recorded geometry, None if there is none.

    Raises :class:`DamagedMetaError` if the file is damaged, and :class:`InvalidConfigError`
    for a format version this code does not know (never guess at a newer format).
    """
    path = os.path.join(root, META_NAME)
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DamagedMetaError(f"{path} is unreadable: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != "walrus-python":
        raise DamagedMetaError(f"{path} is not a Walrus metadata file")
    if doc.get("version") != FORMAT_VERSION:
        raise InvalidConfigError(f"{path}: unsupported format version {doc.get('version')!r}")
    try:
        return Geometry(block_size=doc["block_size"], blocks_per_file=doc["blocks_per_file"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DamagedMetaError(f"{path} holds no valid geometry: {exc}") from exc


def fsync_dir(path: str) -> None:
    """Make a directory's entries (new or renamed files) durable, where the OS allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
