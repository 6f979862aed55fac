"""The on-disk format: directory layout, block headers, seal records, entry headers, cursor slots.

Everything is little-endian and versioned. This module only converts records to bytes and back
(no file I/O); the README's "On-disk format" section has the picture, the constants below are
the single source of truth.

Directory::

    <root>/walrus.json          geometry and format version, written once at creation
    <root>/LOCK                 flock()ed by the one open instance
    <root>/cursors.dat          one 1 KiB slot per (topic, consumer), updated in place
    <root>/data-0000000001.wal  data files of block_size * blocks_per_file bytes (sparse)

A data file is a row of slots of ``block_size`` bytes. A block takes one slot, or several
contiguous slots for an entry larger than a block. Every block starts with a 1 KiB header
region::

    0    block header, copy A: magic "WALB", version, flags, topic_len, block_seq, first_offset,
         slots, block_size, blocks_per_file, file_no, slot, nonce, crc32c; then the topic name
    320  block header, copy B (the same bytes): one damaged copy never loses a block
    640  seal record (48 B), written when the block is full (SEALED) or at a clean close (CLOSED)
    1024 entries, back to back

The header says where it belongs (``file_no``, ``slot``) and with which geometry it was written,
so a block copied elsewhere, or read with another ``block_size``, is recognised as foreign.
``nonce`` is random per block: it seeds the checksum of the seal record and of every entry.

An entry is a 16-byte header followed by the payload, verbatim::

    crc u32 | length u32 | seq u32 | version u8 | flags u8 | tag u16

``crc`` is the crc32c of the payload with an initial value (:func:`entry_seed`) mixed from the
block's nonce, the entry's position in its block, its full offset in the topic, its length and
flags. Bytes are therefore an entry only in the block, at the position and for the offset they
were written for: another block's entries, an earlier occupant of a slot, another geometry and
entries embedded in a payload do not validate. ``seq`` (the low 32 bits of the offset) and
``tag`` (16 bits of the block's nonce) make resynchronising after damage a search for one
needle. ``flags`` has ``BATCH_OPEN`` on every entry of a batch but its last, which is how a crash
in the middle of a batch is rolled back to the batch's start.
"""

from __future__ import annotations

import struct
from typing import Final

import attrs
from crc32c import crc32c

FORMAT_VERSION: Final = 2
META_NAME: Final = "walrus.json"
LOCK_NAME: Final = "LOCK"
CURSORS_NAME: Final = "cursors.dat"
DATA_PREFIX: Final = "data-"
DATA_SUFFIX: Final = ".wal"
MASK32: Final = 0xFFFFFFFF

# --- entries -------------------------------------------------------------------------------
ENTRY_HEADER: Final = struct.Struct("<IIIBBH")
ENTRY_HEADER_SIZE: Final = ENTRY_HEADER.size  # 16
ENTRY_VERSION: Final = 2
FLAG_BATCH_OPEN: Final = 0x01
SEQ_MASK: Final = MASK32
#: Where ``version | flags | tag`` sit in an entry header (the resync needle).
ENTRY_NEEDLE_AT: Final = 12
# The multipliers of entry_seed (odd, so that each field changes the seed; the hot paths in
# reader.py and writer.py inline the same expression, kept equal by the format tests).
MIX_POS: Final = 0xC2B2AE3D
MIX_SEQ: Final = 0x85EBCA77
MIX_LEN: Final = 0x9E3779B1

# --- blocks --------------------------------------------------------------------------------
BLOCK_MAGIC: Final = b"WALB"
BLOCK_VERSION: Final = 2
# magic, version, flags, topic_len, block_seq, first_offset, slots, block_size,
# blocks_per_file, file_no, slot, nonce, crc
BLOCK_FIXED: Final = struct.Struct("<4sBBHQQIIIIIQI")  # 56 bytes
BLOCK_FLAG_DEAD: Final = 0x01
BLOCK_HEADER_SIZE: Final = 1024
HEADER_COPY_AT: Final = (0, 320)
SEAL_AT: Final = 640
SEAL_MAGIC: Final = b"SEAL"
# magic, crc, kind, sealed_at (Unix seconds; 0: unknown), count, end, committed, last
SEAL: Final = struct.Struct("<4sIIIQQQQ")
SEAL_SIZE: Final = SEAL.size  # 48
SEAL_SEALED: Final = 1
SEAL_CLOSED: Final = 2
MAX_TOPIC_BYTES: Final = 255

# --- cursors -------------------------------------------------------------------------------
CURSOR_SLOT_SIZE: Final = 1024
CURSOR_NAMES: Final = struct.Struct("<4sIHH")
CURSOR_MAGIC: Final = b"CSR2"
CURSOR_COPY: Final = struct.Struct("<IIQQQQ")  # crc, pad, seq, offset, block_seq, pos
CURSOR_COPY_AT: Final = (896, 960)
CURSOR_INITIAL_SLOTS: Final = 64
#: The consumer name of a topic's start mark: a cursors.dat slot whose offset is the topic's
#: first retained entry (everything below it was reclaimed on purpose, not lost). Consumer
#: names never contain NUL, so no consumer can take it.
START_MARK_CONSUMER: Final = "\x00start"
#: Flag in the ``pos`` field of a start mark: the topic was deleted at that offset, so it is
#: not listed until something is appended again (it continues at the mark's offset).
START_MARK_DELETED: Final = 1


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


def slots_for_entry(block_size: int, payload_len: int) -> int:
    """Slots a block needs so that one entry of ``payload_len`` fits after the header."""
    need = BLOCK_HEADER_SIZE + entry_size(payload_len)
    return max(1, -(-need // block_size))


# --- entries -------------------------------------------------------------------------------


def block_salt(nonce: int) -> int:
    """The 32 bits of a block's nonce that seed its checksums."""
    return nonce & MASK32


def block_tag(nonce: int) -> int:
    """The 16 bits of a block's nonce that every entry header of the block carries."""
    return (nonce >> 32) & 0xFFFF


def entry_seed(salt: int, pos: int, offset: int, length: int, flags: int) -> int:
    """The crc32c initial value of the entry at in-block byte ``pos`` with topic ``offset``."""
    return (
        salt ^ pos * MIX_POS ^ offset * MIX_SEQ ^ length * MIX_LEN ^ (flags << 8 | ENTRY_VERSION)
    ) & MASK32


def pack_entry_header(
    payload: bytes | memoryview, salt: int, tag: int, pos: int, offset: int, flags: int
) -> bytes:
    """The 16-byte header of an entry whose payload is ``payload`` (a buffer)."""
    length = len(payload)
    crc = crc32c(payload, entry_seed(salt, pos, offset, length, flags))
    return ENTRY_HEADER.pack(crc, length, offset & SEQ_MASK, ENTRY_VERSION, flags, tag)


def entry_needles(tag: int) -> tuple[bytes, bytes]:
    """The bytes at ``ENTRY_NEEDLE_AT`` of every entry header of a block with this ``tag``."""
    return (
        struct.pack("<BBH", ENTRY_VERSION, 0, tag),
        struct.pack("<BBH", ENTRY_VERSION, FLAG_BATCH_OPEN, tag),
    )


@attrs.frozen
class EntryAt:
    """A valid entry found in a buffer: where it starts, its offset, length and flags."""

    rel: int  # position in the buffer
    offset: int
    length: int
    flags: int


def check_entry(
    buf: bytes | memoryview, rel: int, salt: int, tag: int, pos: int, offset: int
) -> EntryAt | None:
    """The entry for ``offset`` at ``buf[rel:]`` (in-block byte ``pos``), if it is valid there:
    header structure, tag, sequence number and the bound checksum all agree."""
    if rel < 0 or rel + ENTRY_HEADER_SIZE > len(buf):
        return None
    crc, length, seq, version, flags, got_tag = ENTRY_HEADER.unpack_from(buf, rel)
    if version != ENTRY_VERSION or got_tag != tag or seq != offset & SEQ_MASK:
        return None
    lo = rel + ENTRY_HEADER_SIZE
    if lo + length > len(buf):
        return None
    if crc32c(buf[lo : lo + length], entry_seed(salt, pos, offset, length, flags)) != crc:
        return None
    return EntryAt(rel, offset, length, flags)


def find_entry(
    buf: bytes,
    start: int,
    salt: int,
    tag: int,
    base_pos: int,
    first: int,
    last: int,
) -> EntryAt | None:
    """Resynchronise: the valid entry nearest to ``buf[start:]`` whose offset lies in
    ``first..last`` (``buf[0]`` is in-block byte ``base_pos``).

    One pass over the buffer per needle (the block's tag in both flag variants); every hit is
    checked with :func:`check_entry`, so only bytes written as that entry, at that position of
    this block, are accepted. An entry takes at least 16 bytes, which bounds how many offsets
    can lie between ``start`` and a hit.
    """
    best: EntryAt | None = None
    for needle in entry_needles(tag):
        search = start + ENTRY_NEEDLE_AT
        while True:
            hit = buf.find(needle, search)
            if hit < 0 or (best is not None and hit - ENTRY_NEEDLE_AT >= best.rel):
                break
            search = hit + 1
            rel = hit - ENTRY_NEEDLE_AT
            seq = struct.unpack_from("<I", buf, rel + 8)[0]
            ahead = (seq - first) & SEQ_MASK
            offset = first + ahead
            if offset > last or ahead > (rel - start) // ENTRY_HEADER_SIZE:
                continue
            found = check_entry(buf, rel, salt, tag, base_pos + rel, offset)
            if found is not None:
                best = found
                break
    return best


# --- blocks --------------------------------------------------------------------------------


@attrs.frozen
class BlockHeader:
    """The header at the start of every block (stored twice)."""

    topic: str
    block_seq: int
    first_offset: int
    slots: int
    block_size: int
    blocks_per_file: int
    file_no: int
    slot: int
    nonce: int
    flags: int = 0

    def pack(self) -> bytes:
        """The whole header region: both copies and an empty seal record."""
        raw = self.topic.encode("utf-8")
        fixed = BLOCK_FIXED.pack(
            BLOCK_MAGIC,
            BLOCK_VERSION,
            self.flags,
            len(raw),
            self.block_seq,
            self.first_offset,
            self.slots,
            self.block_size,
            self.blocks_per_file,
            self.file_no,
            self.slot,
            self.nonce,
            0,
        )
        body = fixed[:-4]
        copy = body + struct.pack("<I", crc32c(raw, crc32c(body))) + raw
        region = bytearray(BLOCK_HEADER_SIZE)
        for at in HEADER_COPY_AT:
            region[at : at + len(copy)] = copy
        return bytes(region)

    @classmethod
    def unpack_copy(cls, buf: bytes | memoryview, at: int) -> BlockHeader | None:
        """Parse the copy at ``at`` of a header region; None if empty, damaged or not ours."""
        if len(buf) < at + BLOCK_FIXED.size:
            return None
        (magic, version, flags, tlen, seq, first, slots, bsize, bpf, file_no, slot, nonce, crc) = (
            BLOCK_FIXED.unpack_from(buf, at)
        )
        if magic != BLOCK_MAGIC or version != BLOCK_VERSION or slots < 1:
            return None
        if not 1 <= tlen <= MAX_TOPIC_BYTES or at + BLOCK_FIXED.size + tlen > len(buf):
            return None
        body = bytes(buf[at : at + BLOCK_FIXED.size - 4])
        raw = bytes(buf[at + BLOCK_FIXED.size : at + BLOCK_FIXED.size + tlen])
        if crc32c(raw, crc32c(body)) != crc:
            return None
        try:
            topic = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return cls(
            topic=topic,
            block_seq=seq,
            first_offset=first,
            slots=slots,
            block_size=bsize,
            blocks_per_file=bpf,
            file_no=file_no,
            slot=slot,
            nonce=nonce,
            flags=flags,
        )

    @classmethod
    def unpack(cls, buf: bytes | memoryview) -> BlockHeader | None:
        """Parse a header region from either copy; a copy flagged dead wins (the flag is only
        ever written on purpose, and a torn rewrite may have reached one copy only)."""
        copies = [cls.unpack_copy(buf, at) for at in HEADER_COPY_AT]
        valid = [c for c in copies if c is not None]
        if not valid:
            return None
        dead = [c for c in valid if c.flags & BLOCK_FLAG_DEAD]
        return dead[0] if dead else valid[0]

    def dead(self) -> BlockHeader:
        """This header with the dead flag set."""
        return attrs.evolve(self, flags=self.flags | BLOCK_FLAG_DEAD)


def header_damage(buf: bytes | memoryview) -> list[int]:
    """Which copies (0 = A, 1 = B) of a readable header region are damaged (for warnings)."""
    return [i for i, at in enumerate(HEADER_COPY_AT) if BlockHeader.unpack_copy(buf, at) is None]


@attrs.frozen
class SealRecord:
    """What recovery needs to trust a block without scanning it.

    ``count`` entries end at in-block byte ``end``; ``committed`` is how many of them are outside
    an unfinished batch; ``last`` is where the last entry starts (for a cheap verification), or
    0 when recovery sealed a block whose last entry is damaged. ``sealed_at`` is when it was
    written (Unix seconds, 0 when unknown): no entry of a SEALED block is newer, which is what
    age-based retention needs. The checksum is seeded with the block's salt, so a seal record
    left by an earlier occupant of the slot never validates.
    """

    kind: int
    count: int
    end: int
    committed: int
    last: int
    sealed_at: int = 0

    def pack(self, salt: int) -> bytes:
        """The 48-byte record of a block with this ``salt``."""
        body = SEAL.pack(
            SEAL_MAGIC,
            0,
            self.kind,
            self.sealed_at & MASK32,
            self.count,
            self.end,
            self.committed,
            self.last,
        )
        crc = crc32c(body[8:], salt)
        return body[:4] + struct.pack("<I", crc) + body[8:]

    @classmethod
    def unpack(cls, buf: bytes | memoryview, salt: int) -> SealRecord | None:
        """Parse the record at ``SEAL_AT`` of a header region; None if absent or damaged."""
        if len(buf) < SEAL_AT + SEAL_SIZE:
            return None
        magic, crc, kind, sealed_at, count, end, committed, last = SEAL.unpack_from(buf, SEAL_AT)
        if magic != SEAL_MAGIC or kind not in (SEAL_SEALED, SEAL_CLOSED):
            return None
        if crc32c(bytes(buf[SEAL_AT + 8 : SEAL_AT + SEAL_SIZE]), salt) != crc:
            return None
        if committed > count or end < BLOCK_HEADER_SIZE:
            return None
        return cls(
            kind=kind, count=count, end=end, committed=committed, last=last, sealed_at=sealed_at
        )


CLEARED_SEAL: Final = bytes(SEAL_SIZE)

# --- cursors -------------------------------------------------------------------------------


def pack_cursor_slot(topic: bytes, consumer: bytes) -> bytes:
    """A whole new cursor slot: the names, and both value copies cleared."""
    head = CURSOR_NAMES.pack(CURSOR_MAGIC, 0, len(topic), len(consumer))
    crc = crc32c(topic + consumer, crc32c(head[8:]))
    names = head[:4] + struct.pack("<I", crc) + head[8:] + topic + consumer
    return names + bytes(CURSOR_SLOT_SIZE - len(names))


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


def cursor_salt(slot: int, topic: bytes, consumer: bytes) -> int:
    """Seeds the checksum of a slot's value copies: a copy only validates in the slot and under
    the names it was written for."""
    return int(crc32c(topic + b"\x00" + consumer, slot & MASK32))


def pack_cursor_copy(salt: int, seq: int, offset: int, block_seq: int, pos: int) -> bytes:
    """One copy of a cursor value (slots hold two, written alternately)."""
    body = CURSOR_COPY.pack(0, 0, seq, offset, block_seq, pos)
    return struct.pack("<I", crc32c(body[4:], salt)) + body[4:]


def unpack_cursor_copy(
    buf: bytes | memoryview, at: int, salt: int
) -> tuple[int, int, int, int] | None:
    """(seq, offset, block_seq, pos) of a copy, None if it never was written or is damaged."""
    crc, _pad, seq, offset, block_seq, pos = CURSOR_COPY.unpack_from(buf, at)
    if seq == 0:
        return None
    if crc32c(bytes(buf[at + 4 : at + CURSOR_COPY.size]), salt) != crc:
        return None
    return seq, offset, block_seq, pos
