"""Read-only access to a log directory that another process may hold for writing.

:class:`WalrusReader` never takes the directory lock and never writes: every file is opened
``O_RDONLY`` and read with ``os.pread``, so it also works on read-only media. It learns what
the writer publishes by polling the files (:meth:`WalrusReader.refresh`):

* block headers appear in slot order (the allocator writes them under its lock), so only the
  newest data file can gain blocks, and only after the last header seen;
* entries are appended at the tail of a topic's head block; a block that has a successor, or a
  valid SEALED record, is final;
* a batch is visible once its last entry (the one without ``FLAG_BATCH_OPEN``) is valid, so the
  published end of a topic is the offset after the last such entry;
* start marks in ``cursors.dat`` say where each topic's retained range begins; the writer may
  delete or hole-punch anything below it at any moment, so a read whose bytes no longer
  validate refreshes and retries, or moves to the new start.

Every entry returned passed the checksum that binds it to its block, position and offset, so
it is exactly what was appended at that offset of that topic.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import stat
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Final, Protocol, TypeVar

import attrs

from walrus_core.config import Geometry, Limits
from walrus_core.directory import DamagedMetaError, read_meta
from walrus_core.entry import Entry, new_entry
from walrus_core.errors import (
    CorruptionError,
    InvalidConfigError,
    OffsetOutOfRangeError,
    StorageError,
    UnknownTopicError,
    WalrusClosedError,
    WalrusValueError,
)
from walrus_core.format import (
    BLOCK_FLAG_DEAD,
    BLOCK_HEADER_SIZE,
    CURSOR_COPY_AT,
    CURSOR_SLOT_SIZE,
    CURSORS_NAME,
    ENTRY_HEADER,
    ENTRY_HEADER_SIZE,
    ENTRY_VERSION,
    FLAG_BATCH_OPEN,
    FORMAT_VERSION,
    SEAL_SEALED,
    SEQ_MASK,
    START_MARK_CONSUMER,
    START_MARK_DELETED,
    BlockHeader,
    SealRecord,
    block_salt,
    block_tag,
    check_entry,
    cursor_salt,
    find_entry,
    parse_data_file_name,
    unpack_cursor_copy,
    unpack_cursor_names,
)
from walrus_core.info import ConsumerInfo, LogInfo, Retention, TopicInfo
from walrus_core.names import encode_name, namespace_dir

log = logging.getLogger("walrus_core")

DEFAULT_DATA_DIR: Final = "wal_files"
_READ_FLAGS: Final = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
#: Bytes read at once when scanning a tail (a small tail costs one small read).
_SCAN_WINDOW: Final = 256 * 1024
#: Linux transfers at most this much per pread.
_MAX_PREAD: Final = 0x7FFFF000
#: Payload bytes one step of :meth:`WalrusReader.follow` reads at most.
_FOLLOW_BYTES: Final = 1024 * 1024
#: How often a read whose bytes changed under it (reclaimed, or damaged) refreshes and tries
#: again before it reports damage.
_RETRIES: Final = 3
#: ``positions`` value of an entry whose bytes are damaged (its position is unknown).
_DAMAGED: Final = (1 << 64) - 1
_PAGE: Final = 4096
_unpack_header = ENTRY_HEADER.unpack_from


# --- the directory -------------------------------------------------------------------------


def resolve_root(data_dir: str | os.PathLike[str] | None, key: str | None) -> str:
    """The directory a reader of ``data_dir``/``key`` opens (defaults as for the writer:
    ``$WALRUS_DATA_DIR`` or ``wal_files``, ``$WALRUS_INSTANCE_KEY``); it must exist."""
    if data_dir is None:
        data_dir = os.environ.get("WALRUS_DATA_DIR") or DEFAULT_DATA_DIR
    if not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(f"data_dir must be a str or os.PathLike, not {type(data_dir).__name__}")
    if key is None:
        key = os.environ.get("WALRUS_INSTANCE_KEY") or None
    root = namespace_dir(data_dir, key)
    try:
        st = os.stat(root)
    except FileNotFoundError:
        raise InvalidConfigError(f"no Walrus directory at {root!r}: it does not exist") from None
    except OSError as exc:
        raise StorageError(f"cannot access the data directory {root!r}: {exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidConfigError(f"data directory {root!r} is not a directory")
    return root


def list_data_files(root: str) -> dict[int, str]:
    """The data files of ``root`` by number."""
    try:
        names = os.listdir(root)
    except OSError as exc:
        raise StorageError(f"listing {root!r} failed: {exc}") from exc
    found: dict[int, str] = {}
    for name in names:
        number = parse_data_file_name(name)
        if number is not None:
            found[number] = os.path.join(root, name)
    return found


def read_geometry(root: str) -> Geometry:
    """The geometry of ``root``: what ``walrus.json`` records, else what the data files' block
    headers say, else the default (a directory without data). Raises
    :class:`UnsupportedFormatError` for another on-disk format version."""
    # Imported here: opening.py pulls in the writer side, which a reader does not need.
    from walrus_core.opening import geometry_of_data

    try:
        try:
            recorded = read_meta(root)
        except DamagedMetaError as exc:
            log.warning("%s; using the geometry the data files record", exc)
            recorded = None
        if recorded is not None:
            return recorded
        found = geometry_of_data(root, sorted(list_data_files(root)))
    except OSError as exc:
        raise StorageError(f"reading the geometry of {root!r} failed: {exc}") from exc
    return found if found is not None else Geometry()


def header_belongs(
    header: BlockHeader, file_no: int, slot: int, slots: int, geometry: Geometry
) -> bool:
    """A header is trusted only where, and with the geometry, it was written for (the rule
    recovery applies)."""
    return (
        header.file_no == file_no
        and header.slot == slot
        and slot + header.slots <= slots
        and header.block_size == geometry.block_size
        and header.blocks_per_file == geometry.blocks_per_file
    )


def pread_all(fd: int, size: int, at: int) -> bytes:
    """Up to ``size`` bytes at ``at`` (fewer only at the end of the file); raises OSError."""
    if size <= 0:
        return b""
    first = os.pread(fd, min(size, _MAX_PREAD), at)
    if len(first) == size or not first:
        return first
    parts = [first]
    done = len(first)
    while done < size:
        more = os.pread(fd, min(size - done, _MAX_PREAD), at + done)
        if not more:
            break
        parts.append(more)
        done += len(more)
    return b"".join(parts)


@attrs.frozen
class SlotHeader:
    """A block header found in a slot of a data file, and the header region it came from."""

    slot: int
    header: BlockHeader
    region: bytes


def read_slot_headers(
    read: Callable[[int, int], bytes],
    file_no: int,
    first_slot: int,
    slots: int,
    geometry: Geometry,
    *,
    at_frontier: bool,
    next_data: Callable[[int], int] | None = None,
) -> tuple[list[SlotHeader], int]:
    """The block headers of data file ``file_no`` (read with ``read(at, size)``) from slot
    ``first_slot`` on, dead ones included, and the slot after the last one found.

    The allocator writes headers in slot order, so a slot read while its header was being
    written is complete once a later header is seen: such slots are read again. With
    ``at_frontier`` (continuing after the last header known, where a writer may be
    allocating), the scan stops at the last slot holding a header; ``next_data(at)`` (the
    first byte at or after ``at`` that may hold data, -1 for none) lets it skip holes when
    looking for one. Otherwise slots without a header are skipped (punched, or damaged).
    """
    block_size = geometry.block_size

    def header_at(slot: int) -> tuple[BlockHeader | None, bytes]:
        region = read(slot * block_size, BLOCK_HEADER_SIZE)
        header = BlockHeader.unpack(region)
        if header is not None and not header_belongs(header, file_no, slot, slots, geometry):
            header = None
        return header, region

    def next_header(slot: int) -> int | None:
        """The first slot after ``slot`` holding a valid header, if any (skipping holes)."""
        candidate = slot + 1
        while candidate < slots:
            at = next_data(candidate * block_size) if next_data is not None else None
            if at is not None:
                if at < 0:
                    return None  # only holes follow
                candidate = max(candidate, at // block_size)
                if candidate >= slots:
                    return None
            if header_at(candidate)[0] is not None:
                return candidate
            candidate += 1
        return None

    found: list[SlotHeader] = []
    skipped: list[int] = []
    slot = first_slot
    while slot < slots:
        header, region = header_at(slot)
        if header is None and at_frontier:
            # Zeros are a slot not handed out yet, or a block reclaimed (punched) before a
            # live one; other bytes may be a header being written. A valid header further on
            # decides: headers are written in slot order, so everything before it is final.
            later = next_header(slot)
            if later is None:
                break
            header, region = header_at(slot)
            if header is None:
                skipped.extend(range(slot, later))
                slot = later
                continue
        if header is None:
            skipped.append(slot)
            slot += 1
            continue
        found.append(SlotHeader(slot, header, region))
        slot += header.slots
    last = found[-1].slot if found else -1
    for again in [s for s in skipped if s < last]:
        header, region = header_at(again)
        if header is None:
            continue
        span = range(again, again + header.slots)
        if any(f.slot in span or again in range(f.slot, f.slot + f.header.slots) for f in found):
            continue
        found.append(SlotHeader(again, header, region))
    found.sort(key=lambda f: f.slot)
    end = max((f.slot + f.header.slots for f in found), default=first_slot)
    return found, end


@attrs.frozen
class StoredSlot:
    """One readable slot of ``cursors.dat``: a consumer's cursor or a topic's start mark."""

    topic: str
    consumer: str  # "" for the default consumer, START_MARK_CONSUMER for a start mark
    seq: int
    offset: int
    pos: int
    block_seq: int = 0  # a start mark: blocks of the topic numbered below it were reclaimed


def parse_cursor_slots(raw: bytes) -> list[StoredSlot]:
    """Every slot of a ``cursors.dat`` image holding a valid value (the copy with the higher
    sequence number wins; a name pair seen twice keeps its first slot, as the writer does)."""
    found: list[StoredSlot] = []
    seen: set[tuple[str, str]] = set()
    view = memoryview(raw)
    for slot in range(len(raw) // CURSOR_SLOT_SIZE):
        base = slot * CURSOR_SLOT_SIZE
        record = view[base : base + CURSOR_SLOT_SIZE]
        if not any(record[:8]):
            continue
        names = unpack_cursor_names(record)
        if names is None or names in seen:
            continue
        seen.add(names)
        salt = cursor_salt(slot, names[0].encode("utf-8"), names[1].encode("utf-8"))
        copies = [unpack_cursor_copy(record, at, salt) for at in CURSOR_COPY_AT]
        valid = [c for c in copies if c is not None]
        if not valid:
            continue
        seq, offset, block_seq, pos = max(valid)
        found.append(StoredSlot(names[0], names[1], seq, offset, pos, block_seq))
    return found


class _Chained(Protocol):
    @property
    def header(self) -> BlockHeader: ...


_C = TypeVar("_C", bound=_Chained)


def chain_blocks(items: Iterable[_C]) -> list[_C]:
    """A topic's blocks in chain order, as recovery orders them: by block sequence number, a
    second block claiming a number already seen ignored, and blocks that a later block starts
    before dropped (a failed write allocated them and the topic continued without them)."""
    ordered = sorted(items, key=lambda item: item.header.block_seq)
    unique: list[_C] = []
    seen: set[int] = set()
    for item in ordered:
        if item.header.block_seq not in seen:
            seen.add(item.header.block_seq)
            unique.append(item)
    kept: list[_C] = []
    lowest_later: int | None = None
    for item in reversed(unique):
        first = item.header.first_offset
        if lowest_later is not None and first > lowest_later:
            continue
        kept.append(item)
        lowest_later = first if lowest_later is None else min(lowest_later, first)
    kept.reverse()
    return kept


# --- blocks --------------------------------------------------------------------------------


class _File:
    """One data file, open for reading only."""

    __slots__ = ("complete", "fd", "frontier", "number", "path", "size")

    def __init__(self, number: int, path: str) -> None:
        self.number = number
        self.path = path
        self.fd = os.open(path, _READ_FLAGS)
        try:
            self.size = os.fstat(self.fd).st_size
        except OSError:
            os.close(self.fd)
            raise
        self.frontier = 0  # the first slot whose header has not been looked at
        self.complete = False  # no header can appear beyond the frontier any more

    def read(self, at: int, size: int) -> bytes:
        """Bytes of the file (raises StorageError)."""
        try:
            return pread_all(self.fd, size, at)
        except OSError as exc:
            raise StorageError(f"reading {self.path} failed: {exc}") from exc

    def next_data(self, at: int) -> int:
        """The first byte at or after ``at`` that may hold data (``SEEK_DATA``), -1 if only a
        hole follows; ``at`` itself where the OS cannot tell."""
        if not hasattr(os, "SEEK_DATA"):
            return at
        try:
            return os.lseek(self.fd, at, os.SEEK_DATA)
        except OSError as exc:
            return -1 if exc.errno == errno.ENXIO else at

    def close(self) -> None:
        """Release the descriptor."""
        try:
            os.close(self.fd)
        except OSError:
            pass


class _Block:
    """What the reader knows about one block: its header, seal and the entries validated."""

    __slots__ = (
        "base",
        "committed",
        "file",
        "first_offset",
        "flags",
        "gone",
        "header",
        "lengths",
        "limit",
        "positions",
        "resync_miss",
        "salt",
        "scan_end",
        "seal",
        "tag",
        "want",
    )

    def __init__(self, header: BlockHeader, file: _File, block_size: int) -> None:
        self.header = header
        self.file = file
        self.base = header.slot * block_size
        self.limit = header.slots * block_size
        self.first_offset = header.first_offset
        self.salt = block_salt(header.nonce)
        self.tag = block_tag(header.nonce)
        self.seal: SealRecord | None = None  # a valid SEALED record: the block's final count
        self.positions = array("Q")  # in-block position of entry i (_DAMAGED: damaged)
        self.lengths = array("Q")
        self.flags = bytearray()
        self.committed = 0  # entries up to the last valid one outside an open batch
        self.scan_end = BLOCK_HEADER_SIZE  # in-block byte after the last valid entry
        self.want: int | None = None  # the block's final entry count, once known
        self.gone = False  # reclaimed, marked dead or its file deleted
        self.resync_miss: bytes | None = None  # header bytes a fruitless resync started at

    @property
    def count(self) -> int:
        return len(self.positions)

    @property
    def complete(self) -> bool:
        return self.want is not None and self.count >= self.want

    @property
    def end_offset(self) -> int:
        return self.first_offset + self.count

    def read(self, pos: int, size: int) -> bytes:
        return self.file.read(self.base + pos, max(0, min(size, self.limit - pos)))

    def truncate(self, count: int) -> None:
        """Forget entries ``count..`` (a rollback, or what a successor says)."""
        if count >= self.count:
            return
        cut = self.positions[count]
        del self.positions[count:]
        del self.lengths[count:]
        del self.flags[count:]
        if cut != _DAMAGED:
            self.scan_end = cut
        self.committed = 0
        for i in range(count - 1, -1, -1):
            if self.positions[i] != _DAMAGED and not self.flags[i] & FLAG_BATCH_OPEN:
                self.committed = i + 1
                break

    def valid_at(self, buf: bytes, rel: int, pos: int, offset: int) -> tuple[int, int] | None:
        """(length, flags) of the entry for ``offset`` at ``buf[rel:]`` (in-block ``pos``)."""
        found = check_entry(buf, rel, self.salt, self.tag, pos, offset)
        if found is None or pos + ENTRY_HEADER_SIZE + found.length > self.limit:
            return None
        return found.length, found.flags

    def add(self, pos: int, length: int, flags: int) -> None:
        self.positions.append(pos)
        self.lengths.append(length)
        self.flags.append(flags)
        self.scan_end = pos + ENTRY_HEADER_SIZE + length
        if not flags & FLAG_BATCH_OPEN:
            self.committed = self.count

    def add_damaged(self, count: int) -> None:
        for _ in range(count):
            self.positions.append(_DAMAGED)
            self.lengths.append(0)
            self.flags.append(FLAG_BATCH_OPEN)

    def scan(self) -> None:
        """Validate entries after the last one known, up to ``want`` when that is known.

        Stops at the first entry that does not validate. Zeros there are "not yet" (the
        writer has not got that far); other bytes may be a write in flight, or damage: only
        when a valid entry of this block follows them (found by resynchronising, and still
        invalid when read again) are they recorded as damaged entries.
        """
        pos = self.scan_end
        offset = self.end_offset
        buf = b""
        buf_start = pos
        confirm_at = -1
        while pos + ENTRY_HEADER_SIZE <= self.limit and (
            self.want is None or self.count < self.want
        ):
            rel = pos - buf_start
            if rel < 0 or rel + ENTRY_HEADER_SIZE > len(buf):
                buf, buf_start, rel = self.read(pos, _SCAN_WINDOW), pos, 0
                if len(buf) < ENTRY_HEADER_SIZE:
                    return
            length = _unpack_header(buf, rel)[1]
            if (
                rel + ENTRY_HEADER_SIZE + length > len(buf)
                and pos + ENTRY_HEADER_SIZE + length <= self.limit
            ):
                buf = self.read(pos, max(_SCAN_WINDOW, ENTRY_HEADER_SIZE + length))
                buf_start, rel = pos, 0
            valid = self.valid_at(buf, rel, pos, offset)
            if valid is not None:
                self.add(pos, *valid)
                pos += ENTRY_HEADER_SIZE + valid[0]
                offset += 1
                continue
            header = buf[rel : rel + ENTRY_HEADER_SIZE]
            if (not any(header) and self.want is None) or header == self.resync_miss:
                # Zeros at the tail of an unfinished block: not written yet. Otherwise nothing
                # changed since the last fruitless search.
                return
            found = self._resync(pos, offset, header)
            if found is None:
                self.resync_miss = header
                return
            if confirm_at != pos:
                # The search read the bytes after ``buf`` was read: a write that was landing
                # then may be complete now. Damage is what a fresh read still shows.
                confirm_at = pos
                buf = b""
                continue
            next_pos, next_offset = found
            log.warning(
                "topic %r: entries %d..%d in %s at byte %d are damaged; reading them raises"
                " CorruptionError",
                self.header.topic,
                offset,
                next_offset - 1,
                self.file.path,
                self.base + pos,
            )
            self.add_damaged(next_offset - offset)
            pos, offset = next_pos, next_offset
            buf = b""

    def _resync(self, pos: int, offset: int, header: bytes) -> tuple[int, int] | None:
        """(position, offset) of the next valid entry after a bad one at ``pos``."""
        crc, length, seq, version, _flags, tag = _unpack_header(header)
        del crc
        if version == ENTRY_VERSION and tag == self.tag and seq == offset & SEQ_MASK:
            # Only the payload may be damaged: the next entry is where the length says.
            after = pos + ENTRY_HEADER_SIZE + length
            if after + ENTRY_HEADER_SIZE <= self.limit:
                head = self.read(after, ENTRY_HEADER_SIZE)
                if len(head) == ENTRY_HEADER_SIZE:
                    nxt_length = _unpack_header(head)[1]
                    data = self.read(after, ENTRY_HEADER_SIZE + nxt_length)
                    if self.valid_at(data, 0, after, offset + 1) is not None:
                        return after, offset + 1
        start = pos + 1
        rest = self.read(start, self.limit - start)
        last = offset + 1 + len(rest) // ENTRY_HEADER_SIZE
        if self.want is not None:
            last = min(last, self.first_offset + self.want - 1)
        found = find_entry(rest, 0, self.salt, self.tag, start, offset + 1, last)
        if found is None:
            return None
        return start + found.rel, found.offset


@attrs.define
class _Topic:
    """A topic as published: its chain of retained blocks, start and end."""

    name: str
    blocks: list[_Block] = attrs.Factory(list)
    firsts: list[int] = attrs.Factory(list)
    start: int = 0
    deleted: bool = False
    end: int = 0  # the published end: every offset in start..end-1 is committed

    @property
    def listed(self) -> bool:
        return self.end > 0 and not (self.deleted and self.end <= self.start)


class _Changed(Exception):
    """The bytes of an entry did not validate although it was validated before: reclaimed
    meanwhile (or damaged since)."""

    def __init__(self, offset: int, block: _Block) -> None:
        super().__init__(offset)
        self.offset = offset
        self.block = block


# --- the reader ----------------------------------------------------------------------------


class WalrusReader:
    """A read-only view of a log directory, safe to use while another process writes to it.

    Nothing is locked and nothing is written; call :meth:`refresh` (or use :meth:`follow`)
    to see what the writer published since. Thread-safe.
    """

    def __init__(
        self, data_dir: str | os.PathLike[str] | None = None, key: str | None = None
    ) -> None:
        self._closed = True
        self.root = resolve_root(data_dir, key)
        self.geometry = read_geometry(self.root)
        self.limits = Limits()
        self._lock = threading.RLock()
        self._files: dict[int, _File] = {}
        self._blocks: dict[str, list[_Block]] = {}
        self._topics: dict[str, _Topic] = {}
        self._marks: dict[str, tuple[int, bool, int]] = {}
        self._slots: list[StoredSlot] = []
        self._cursor_raw: bytes | None = None
        self._skipped: dict[str, int] = {}
        self._closed = False
        try:
            self.refresh()
        except BaseException:
            self.close()
            raise

    # -- lifetime ---------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Close every file (idempotent); later calls raise :class:`WalrusClosedError`."""
        with self._lock:
            self._closed = True
            for file in self._files.values():
                file.close()
            self._files.clear()
            self._blocks.clear()
            self._topics.clear()

    def __enter__(self) -> WalrusReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<WalrusReader {self.root!r} {'closed' if self._closed else 'open'}>"

    def _check_open(self) -> None:
        if self._closed:
            raise WalrusClosedError("this WalrusReader is closed")

    @property
    def skipped(self) -> dict[str, int]:
        """Per topic, entries :meth:`follow` could not yield because reclamation or retention
        removed them first."""
        with self._lock:
            return dict(self._skipped)

    # -- refreshing -------------------------------------------------------------------------
    def refresh(self) -> None:
        """Catch up with what the writer published: new data files and blocks, entries at the
        tail of unsealed blocks, seal records, start marks, reclaimed files and blocks.

        Cheap when nothing changed: one directory listing, one read of ``cursors.dat``, one
        header read per unsealed block and one read at each unsealed tail.
        """
        with self._lock:
            self._check_open()
            self._refresh_files()
            self._refresh_marks()
            for name in set(self._blocks) | set(self._marks):
                self._rebuild(name)

    def _refresh_files(self) -> None:
        listed = list_data_files(self.root)
        for number in [n for n in self._files if n not in listed]:
            # Deleted by reclamation: what it held is below its topics' starts.
            removed = self._files.pop(number)
            for blocks in self._blocks.values():
                for block in blocks:
                    if block.file is removed:
                        block.gone = True
            removed.close()
        newest = max(listed, default=0)
        for number in sorted(listed):
            file = self._files.get(number)
            if file is None:
                try:
                    file = _File(number, listed[number])
                except FileNotFoundError:
                    continue  # deleted between the listing and now
                except OSError as exc:
                    raise StorageError(f"opening {listed[number]} failed: {exc}") from exc
                self._files[number] = file
                self._scan_headers(file, first_time=True)
            elif not file.complete:
                self._scan_headers(file, first_time=False)
            # Only the newest file can gain blocks: the allocator moved on from the others
            # before this listing showed a newer one.
            if number < newest:
                file.complete = True
        for blocks in self._blocks.values():
            for block in blocks:
                if not block.gone and block.seal is None and not block.complete:
                    self._reread_header(block)

    def _scan_headers(self, file: _File, *, first_time: bool) -> None:
        """Read the block headers of ``file`` from its frontier on."""
        try:
            file.size = os.fstat(file.fd).st_size
        except OSError as exc:
            raise StorageError(f"reading {file.path} failed: {exc}") from exc
        found, file.frontier = read_slot_headers(
            file.read,
            file.number,
            file.frontier,
            file.size // self.geometry.block_size,
            self.geometry,
            at_frontier=not first_time,
            next_data=file.next_data,
        )
        for item in found:
            if not item.header.flags & BLOCK_FLAG_DEAD:
                block = _Block(item.header, file, self.geometry.block_size)
                self._note_seal(block, item.region)
                self._blocks.setdefault(item.header.topic, []).append(block)

    def _note_seal(self, block: _Block, region: bytes) -> None:
        seal = SealRecord.unpack(region, block.salt)
        if seal is not None and seal.kind == SEAL_SEALED:
            block.seal = seal

    def _reread_header(self, block: _Block) -> None:
        """An unsealed block may have been sealed, marked dead (a failed write) or punched."""
        region = block.file.read(block.base, BLOCK_HEADER_SIZE)
        header = BlockHeader.unpack(region)
        if header is None or header.flags & BLOCK_FLAG_DEAD or header.nonce != block.header.nonce:
            block.gone = True
            return
        self._note_seal(block, region)

    def _refresh_marks(self) -> None:
        path = os.path.join(self.root, CURSORS_NAME)
        try:
            fd = os.open(path, _READ_FLAGS)
        except FileNotFoundError:
            raw = b""
        except OSError as exc:
            raise StorageError(f"opening {path} failed: {exc}") from exc
        else:
            try:
                size = os.fstat(fd).st_size
                raw = pread_all(fd, size - size % CURSOR_SLOT_SIZE, 0)
            except OSError as exc:
                raise StorageError(f"reading {path} failed: {exc}") from exc
            finally:
                os.close(fd)
        if raw == self._cursor_raw:
            return
        self._cursor_raw = raw
        self._slots = parse_cursor_slots(raw)
        for stored in self._slots:
            if stored.consumer != START_MARK_CONSUMER:
                continue
            deleted = bool(stored.pos & START_MARK_DELETED)
            previous = self._marks.get(stored.topic)
            # A topic's start never moves back; a newer mark at the same offset may clear or
            # set the deleted flag.
            if previous is None or stored.offset >= previous[0]:
                self._marks[stored.topic] = (stored.offset, deleted, stored.block_seq)

    def _rebuild(self, name: str) -> None:
        """Recompute a topic's chain, scan its unfinished blocks and publish its end."""
        start, deleted, first_seq = self._marks.get(name, (0, False, 0))
        for block in self._blocks.get(name, []):
            if block.header.block_seq < first_seq:  # reclaimed, whatever is left of it
                block.gone = True
        known = [b for b in self._blocks.get(name, []) if not b.gone]
        chain = chain_blocks(known)
        # Blocks wholly below the start (their successor starts at or before it) may vanish
        # at any moment: forget them.
        keep_from = 0
        for i in range(len(chain) - 1):
            if chain[i + 1].first_offset <= start:
                keep_from = i + 1
        for block in chain[:keep_from]:
            block.gone = True
        chain = chain[keep_from:]
        self._blocks[name] = [b for b in self._blocks.get(name, []) if not b.gone]
        for i, block in enumerate(chain):
            successor = chain[i + 1].first_offset if i + 1 < len(chain) else None
            if successor is not None:
                block.want = max(0, successor - block.first_offset)
            elif block.seal is not None:
                block.want = block.seal.count
            else:
                block.want = None
            if block.want is not None and block.count > block.want:
                block.truncate(block.want)
            if not block.complete:
                block.scan()
        self._fill_gaps(chain)
        end = chain[0].first_offset if chain else 0
        for block in chain:
            if block.committed:
                end = block.first_offset + block.committed
            if not block.complete:
                break
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = _Topic(name)
        topic.blocks = chain
        topic.firsts = [b.first_offset for b in chain]
        topic.start = start
        topic.deleted = deleted
        topic.end = max(end, start)

    @staticmethod
    def _fill_gaps(chain: list[_Block]) -> None:
        """A final block whose last entries do not validate, followed by a block holding valid
        entries: those entries are damaged (the writer wrote the later block after them)."""
        for i, block in enumerate(chain[:-1]):
            if block.complete or block.want is None:
                continue
            if not any(later.count and later.committed for later in chain[i + 1 :]):
                continue
            block.resync_miss = None
            block.scan()  # once more: the bytes may have arrived meanwhile
            if block.complete:
                continue
            assert block.want is not None
            log.warning(
                "topic %r: entries %d..%d in %s are damaged; reading them raises CorruptionError",
                block.header.topic,
                block.end_offset,
                block.first_offset + block.want - 1,
                block.file.path,
            )
            block.add_damaged(block.want - block.count)

    # -- reporting --------------------------------------------------------------------------
    def topics(self) -> list[str]:
        """Topics with at least one entry ever written (and not deleted since), sorted."""
        with self._lock:
            self._check_open()
            return sorted(name for name, t in self._topics.items() if t.listed)

    def _topic(self, topic: str) -> _Topic | None:
        encode_name(topic)
        return self._topics.get(topic)

    def topic_info(self, topic: str) -> TopicInfo:
        """The retained range, blocks, space and consumers of ``topic`` (raises
        :class:`UnknownTopicError` for a topic without entries, or deleted)."""
        with self._lock:
            self._check_open()
            t = self._topic(topic)
            if t is None or not t.listed:
                raise UnknownTopicError(f"no topic named {topic!r}")
            # What was written to each block, in whole pages (as the writer reports it).
            on_disk = sum(
                min(b.limit, -(-max(b.scan_end, BLOCK_HEADER_SIZE) // _PAGE) * _PAGE)
                for b in t.blocks
            )
            return TopicInfo(
                name=topic,
                first_offset=t.start,
                end_offset=t.end,
                entries=t.end - t.start,
                blocks=len(t.blocks),
                bytes_on_disk=on_disk,
                consumers=tuple(self._consumers(t)),
                retention=Retention(),
            )

    def consumers(self, topic: str) -> list[ConsumerInfo]:
        """The consumers of ``topic`` with a cursor in ``cursors.dat`` (``name`` None: the
        default consumer), by name."""
        with self._lock:
            self._check_open()
            t = self._topic(topic)
            if t is None:
                return []
            return self._consumers(t)

    def _consumers(self, t: _Topic) -> list[ConsumerInfo]:
        out: list[ConsumerInfo] = []
        for stored in self._slots:
            if stored.topic != t.name or stored.consumer == START_MARK_CONSUMER:
                continue
            offset = max(min(stored.offset, t.end), t.start)
            out.append(ConsumerInfo(stored.consumer or None, offset, t.end - offset, 0))
        out.sort(key=lambda c: (c.name is not None, c.name or ""))
        return out

    def info(self) -> LogInfo:
        """The whole directory (``read_only`` is True; retention is not recorded on disk, so
        it reports unlimited)."""
        with self._lock:
            self._check_open()
            on_disk = 0
            try:
                with os.scandir(self.root) as found:
                    for item in found:
                        try:
                            st = item.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue  # reclaimed meanwhile
                        on_disk += getattr(st, "st_blocks", 0) * 512
            except OSError as exc:
                raise StorageError(f"listing {self.root!r} failed: {exc}") from exc
            names = sorted(name for name, t in self._topics.items() if t.listed)
            return LogInfo(
                data_dir=self.root,
                format_version=FORMAT_VERSION,
                block_size=self.geometry.block_size,
                blocks_per_file=self.geometry.blocks_per_file,
                backend_chain=(),
                files=len(self._files),
                bytes_on_disk=on_disk,
                retention=Retention(),
                read_only=True,
                topics=tuple(self.topic_info(name) for name in names),
            )

    # -- reading ----------------------------------------------------------------------------
    def batch_read_for_topic(
        self, topic: str, max_bytes: int, start_offset: int | None = None
    ) -> list[Entry]:
        """Entries from ``start_offset`` (None: the oldest retained one; below the start: the
        start) in order, without touching any cursor: at most ``Limits().max_batch_entries``,
        stopping before the payload total would exceed ``max_bytes``, but at least one when any
        is available. Raises :class:`OffsetOutOfRangeError` past the published end."""
        _check_int("max_bytes", max_bytes)
        if max_bytes < 1:
            raise WalrusValueError(f"max_bytes must be >= 1, got {max_bytes}")
        if start_offset is not None:
            _check_int("start_offset", start_offset)
            if start_offset < 0:
                raise OffsetOutOfRangeError(f"start_offset must be >= 0, got {start_offset}")
        with self._lock:
            self._check_open()
            t = self._topic(topic)
            end = 0 if t is None else t.end
            if start_offset is not None and start_offset > end:
                raise OffsetOutOfRangeError(
                    f"start_offset {start_offset} is past the end of topic {topic!r} ({end})"
                )
            if t is None:
                return []
            offset = t.start if start_offset is None else start_offset
            return self._read_retrying(
                topic, offset, self.limits.max_batch_entries, max_bytes, clamp=True
            )

    def read(self, topic: str, offset: int) -> Entry:
        """The entry at ``offset``. Raises :class:`OffsetOutOfRangeError` if it is not
        published yet or below the topic's start, :class:`CorruptionError` if it is damaged."""
        _check_int("offset", offset)
        with self._lock:
            self._check_open()
            t = self._topic(topic)
            start, end = (0, 0) if t is None else (t.start, t.end)
            if not start <= offset < end:
                raise OffsetOutOfRangeError(
                    f"offset {offset} is outside topic {topic!r} (entries {start}..{end - 1})"
                )
            return self._read_retrying(topic, offset, 1, 1, clamp=False)[0]

    def _read_retrying(
        self, topic: str, offset: int, max_entries: int, max_bytes: int, *, clamp: bool
    ) -> list[Entry]:
        """Read, and when bytes validated before no longer do (reclaimed meanwhile), refresh
        and retry at the same offset, or at the new start once it moved past it."""
        for attempt in range(_RETRIES + 1):
            t = self._topics.get(topic)
            if t is None:
                return []
            if offset < t.start:
                if not clamp:
                    raise OffsetOutOfRangeError(
                        f"offset {offset} of topic {topic!r} was reclaimed (entries now start at"
                        f" {t.start})"
                    )
                offset = t.start
            try:
                return self._read_published(t, offset, max_entries, max_bytes)
            except _Changed as changed:
                if attempt == _RETRIES:
                    raise _damaged(
                        topic, changed.block, changed.offset, "checksum mismatch"
                    ) from None
            except CorruptionError:
                if attempt == _RETRIES:
                    raise
            self.refresh()
        raise AssertionError("unreachable")

    def _read_published(
        self, t: _Topic, offset: int, max_entries: int, max_bytes: int
    ) -> list[Entry]:
        out: list[Entry] = []
        total = 0
        while offset < t.end and len(out) < max_entries:
            block = self._block_for(t, offset)
            if block is None:
                if out:
                    break
                raise CorruptionError(
                    f"entry {offset} of topic {t.name!r} is not in any readable block",
                    topic=t.name,
                    offset=offset,
                )
            index = offset - block.first_offset
            if block.positions[index] == _DAMAGED:
                if out:
                    break
                raise _damaged(t.name, block, offset, "damaged entry")
            # One read for the run of valid entries of this block that fits.
            last = index
            run_bytes = block.lengths[index]
            stop = min(block.count, t.end - block.first_offset, index + max_entries - len(out))
            while last + 1 < stop and block.positions[last + 1] != _DAMAGED:
                if total + run_bytes + block.lengths[last + 1] > max_bytes:
                    break
                last += 1
                run_bytes += block.lengths[last]
            if out and total + block.lengths[index] > max_bytes:
                break
            lo = block.positions[index]
            hi = block.positions[last] + ENTRY_HEADER_SIZE + block.lengths[last]
            buf = block.read(lo, hi - lo)
            for i in range(index, last + 1):
                pos = block.positions[i]
                rel = pos - lo
                entry_offset = block.first_offset + i
                if block.valid_at(buf, rel, pos, entry_offset) is None:
                    if out:
                        return out
                    raise _Changed(entry_offset, block)
                length = block.lengths[i]
                data = buf[rel + ENTRY_HEADER_SIZE : rel + ENTRY_HEADER_SIZE + length]
                out.append(new_entry(data, entry_offset))
                total += length
            offset = block.first_offset + last + 1
            if total >= max_bytes:
                break
        return out

    @staticmethod
    def _block_for(t: _Topic, offset: int) -> _Block | None:
        i = bisect.bisect_right(t.firsts, offset) - 1
        if i < 0:
            return None
        while i < len(t.blocks):
            block = t.blocks[i]
            if block.first_offset > offset:
                return None
            if offset < block.end_offset:
                return block
            i += 1
        return None

    # -- following --------------------------------------------------------------------------
    def follow(
        self,
        topic: str,
        start_offset: int | None = None,
        *,
        poll_interval: float = 0.05,
        stop: threading.Event | None = None,
        timeout: float | None = None,
    ) -> Iterator[Entry]:
        """Yield every entry of ``topic`` from ``start_offset`` on (None: the oldest retained
        one), in order, as the writer publishes them, until ``stop`` is set, ``timeout``
        seconds passed or the iterator is closed.

        Polls with :meth:`refresh` every ``poll_interval`` seconds while nothing is new. When
        reclamation or retention removed entries before they were yielded, it continues at the
        new start, adds how many it missed to :attr:`skipped` and logs a warning. Raises
        :class:`CorruptionError` at a damaged entry.
        """
        encode_name(topic)
        if start_offset is not None:
            _check_int("start_offset", start_offset)
            if start_offset < 0:
                raise OffsetOutOfRangeError(f"start_offset must be >= 0, got {start_offset}")
        if not poll_interval > 0:
            raise WalrusValueError(f"poll_interval must be > 0, got {poll_interval!r}")
        return self._follow(topic, start_offset, poll_interval, stop, timeout)

    def _follow(
        self,
        topic: str,
        start_offset: int | None,
        poll_interval: float,
        stop: threading.Event | None,
        timeout: float | None,
    ) -> Iterator[Entry]:
        deadline = None if timeout is None else time.monotonic() + timeout
        self.refresh()
        with self._lock:
            t = self._topics.get(topic)
            offset = start_offset if start_offset is not None else (t.start if t else 0)
        while True:
            if self._closed or (stop is not None and stop.is_set()):
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            with self._lock:
                self._check_open()
                t = self._topics.get(topic)
                entries: list[Entry] = []
                if t is not None:
                    if offset < t.start:
                        self._note_skipped(topic, offset, t.start)
                        offset = t.start
                    if offset < t.end:
                        entries = self._read_retrying(
                            topic,
                            offset,
                            self.limits.max_batch_entries,
                            _FOLLOW_BYTES,
                            clamp=True,
                        )
                if entries and entries[0].offset > offset:
                    self._note_skipped(topic, offset, entries[0].offset)
            for entry in entries:
                yield entry
                offset = entry.offset + 1
                if stop is not None and stop.is_set():
                    return
            if entries:
                continue
            wait = poll_interval
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            if stop is not None:
                stop.wait(wait)
            else:
                time.sleep(wait)
            if not self._closed:
                self.refresh()

    def _note_skipped(self, topic: str, offset: int, start: int) -> None:
        missed = start - offset
        self._skipped[topic] = self._skipped.get(topic, 0) + missed
        log.warning(
            "topic %r: entries %d..%d were reclaimed before they were read; following"
            " continues at %d",
            topic,
            offset,
            start - 1,
            start,
        )


def _damaged(topic: str, block: _Block, offset: int, why: str) -> CorruptionError:
    index = offset - block.first_offset
    pos = block.positions[index] if 0 <= index < block.count else _DAMAGED
    where = "" if pos == _DAMAGED else f" at byte {block.base + pos}"
    return CorruptionError(
        f"entry {offset} of topic {topic!r} is damaged ({why}) in {block.file.path}{where}",
        topic=topic,
        offset=offset,
        path=block.file.path,
    )


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value
