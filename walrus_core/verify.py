"""The verify scan: check the checksum of every entry of every block, without writing; and the
repair that lets the writer's recovery truncate what the scan calls torn tails.

:func:`verify_directory` works on a directory a live writer holds: blocks are read with
``pread`` through ``O_RDONLY`` descriptors and the lock is not taken. What the writer is in the
middle of writing (the tail of a topic's unsealed last block) is reported as a torn tail, never
as damage; blocks below a topic's start mark (which the writer may reclaim during the scan) are
not judged.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable

import attrs

from walrus_core.errors import StorageError
from walrus_core.format import (
    BLOCK_FLAG_DEAD,
    BLOCK_HEADER_SIZE,
    CURSOR_SLOT_SIZE,
    CURSORS_NAME,
    ENTRY_HEADER,
    ENTRY_HEADER_SIZE,
    ENTRY_VERSION,
    SEAL_SEALED,
    SEQ_MASK,
    START_MARK_CONSUMER,
    BlockHeader,
    SealRecord,
    block_salt,
    block_tag,
    check_entry,
    find_entry,
)
from walrus_core.readonly import (
    chain_blocks,
    list_data_files,
    parse_cursor_slots,
    pread_all,
    read_geometry,
    read_slot_headers,
    resolve_root,
)

log = logging.getLogger("walrus_core")

_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)


@attrs.frozen
class DamagedEntry:
    """An entry whose bytes fail validation although the log continues after it."""

    topic: str
    offset: int
    path: str
    position: int  # byte in the file where the damaged entry (or damaged range) starts
    reason: str


@attrs.frozen
class TornTail:
    """Non-zero bytes after the last valid entry of a topic's unsealed last block: an
    incomplete last write (or the write a live writer is doing right now). Opening the
    directory for writing truncates it (see :func:`repair_directory`)."""

    topic: str
    path: str
    position: int  # byte in the file where the torn bytes start
    bytes: int  # how many bytes, up to the last non-zero one


@attrs.frozen
class VerifyReport:
    """What :func:`verify_directory` found."""

    entries_checked: int  # entries whose checksum was verified
    bytes_checked: int  # bytes of those entries (16-byte headers and payloads)
    files: int  # data files scanned
    damaged: tuple[DamagedEntry, ...]
    torn_tails: tuple[TornTail, ...]

    @property
    def ok(self) -> bool:
        """True when no entry is damaged (torn tails are not damage: nothing committed is
        lost)."""
        return not self.damaged


@attrs.frozen
class RepairReport:
    """What :func:`repair_directory` did: the warnings the writer's recovery logged."""

    data_dir: str
    actions: tuple[str, ...]


@attrs.define
class _Found:
    header: BlockHeader
    path: str
    fd: int
    base: int
    limit: int
    seal: SealRecord | None  # a valid SEALED record


@attrs.define
class _Scan:
    count: int = 0  # entries, damaged ones included
    pos: int = BLOCK_HEADER_SIZE  # in-block byte after the last valid entry
    valid: int = 0
    valid_bytes: int = 0
    trailing: int = 0  # non-zero bytes after ``pos`` when the scan stopped there
    damaged: list[tuple[int, int, int, str]] = attrs.Factory(list)  # first, last, pos, why


def _scan_block(block: _Found, want: int | None) -> _Scan:
    """Validate every entry of ``block`` (at most ``want``), resynchronising after damage."""
    header = block.header
    salt, tag = block_salt(header.nonce), block_tag(header.nonce)
    try:
        buf = pread_all(block.fd, block.limit, block.base)
    except OSError as exc:
        raise StorageError(f"reading {block.path} failed: {exc}") from exc
    if len(buf) < block.limit:
        buf += bytes(block.limit - len(buf))  # a file cut short reads as zeros
    last_nonzero = len(buf.rstrip(b"\x00"))
    scan = _Scan()
    offset = header.first_offset
    pos = BLOCK_HEADER_SIZE
    while pos + ENTRY_HEADER_SIZE <= block.limit and (want is None or scan.count < want):
        found = check_entry(buf, pos, salt, tag, pos, offset)
        if found is not None:
            size = ENTRY_HEADER_SIZE + found.length
            scan.valid += 1
            scan.valid_bytes += size
            scan.count += 1
            pos += size
            offset += 1
            continue
        if pos >= last_nonzero:
            break  # only zeros follow: the clean end
        resync = _resync(buf, pos, offset, salt, tag, want, header.first_offset)
        if resync is None:
            scan.trailing = last_nonzero - pos
            break
        next_pos, next_offset = resync
        scan.damaged.append((offset, next_offset - 1, pos, "checksum mismatch"))
        scan.count += next_offset - offset
        pos, offset = next_pos, next_offset
    scan.pos = pos
    return scan


def _resync(
    buf: bytes, pos: int, offset: int, salt: int, tag: int, want: int | None, first: int
) -> tuple[int, int] | None:
    _crc, length, seq, version, _flags, got_tag = ENTRY_HEADER.unpack_from(buf, pos)
    if version == ENTRY_VERSION and got_tag == tag and seq == offset & SEQ_MASK:
        after = pos + ENTRY_HEADER_SIZE + length
        if check_entry(buf, after, salt, tag, after, offset + 1) is not None:
            return after, offset + 1
    last = offset + 1 + (len(buf) - pos) // ENTRY_HEADER_SIZE
    if want is not None:
        last = min(last, first + want - 1)
    found = find_entry(buf, pos + 1, salt, tag, 0, offset + 1, last)
    if found is None:
        return None
    return found.rel, found.offset


def _read_at(fd: int, at: int, size: int) -> bytes:
    return pread_all(fd, size, at)


def _read_marks(root: str) -> dict[str, int]:
    path = os.path.join(root, CURSORS_NAME)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise StorageError(f"reading {path} failed: {exc}") from exc
    raw = raw[: len(raw) - len(raw) % CURSOR_SLOT_SIZE]
    return {s.topic: s.offset for s in parse_cursor_slots(raw) if s.consumer == START_MARK_CONSUMER}


def verify_directory(
    data_dir: str | os.PathLike[str] | None = None,
    key: str | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Check every entry of every block of every data file, read-only (the directory may be
    held by a live writer). ``progress`` is called with (bytes done, bytes total) of the data
    files as the scan goes."""
    root = resolve_root(data_dir, key)
    geometry = read_geometry(root)
    block_size = geometry.block_size
    files = list_data_files(root)
    fds: dict[int, int] = {}
    found: dict[str, list[_Found]] = {}
    sizes: dict[int, int] = {}
    try:
        for number, path in sorted(files.items()):
            try:
                fd = os.open(path, _READ_FLAGS)
            except FileNotFoundError:
                continue  # reclaimed since the listing
            except OSError as exc:
                raise StorageError(f"opening {path} failed: {exc}") from exc
            fds[number] = fd
            try:
                size = os.fstat(fd).st_size
                found_headers, _end = read_slot_headers(
                    functools.partial(_read_at, fd),
                    number,
                    0,
                    size // block_size,
                    geometry,
                    at_frontier=False,
                )
                for item in found_headers:
                    header = item.header
                    if header.flags & BLOCK_FLAG_DEAD:
                        continue
                    seal = SealRecord.unpack(item.region, block_salt(header.nonce))
                    found.setdefault(header.topic, []).append(
                        _Found(
                            header,
                            path,
                            fd,
                            item.slot * block_size,
                            header.slots * block_size,
                            seal if seal is not None and seal.kind == SEAL_SEALED else None,
                        )
                    )
            except OSError as exc:
                raise StorageError(f"reading {path} failed: {exc}") from exc
            sizes[number] = size
        total = sum(sizes.values())
        done = 0
        if progress is not None:
            progress(0, total)
        entries = nbytes = 0
        damaged: list[DamagedEntry] = []
        torn: list[TornTail] = []
        for name in sorted(found):
            chain = chain_blocks(found[name])
            scans: list[_Scan] = []
            for i, block in enumerate(chain):
                successor = chain[i + 1].header.first_offset if i + 1 < len(chain) else None
                want = (
                    successor - block.header.first_offset
                    if successor is not None
                    else (block.seal.count if block.seal is not None else None)
                )
                scan = _scan_block(block, want)
                scans.append(scan)
                entries += scan.valid
                nbytes += scan.valid_bytes
                done += block.limit
                if progress is not None:
                    progress(min(done, total), total)
            _judge(name, chain, scans, damaged, torn)
        # Judge nothing the writer may have reclaimed while we scanned.
        marks = _read_marks(root)
        damaged = [d for d in damaged if d.offset >= marks.get(d.topic, 0)]
        if progress is not None:
            progress(total, total)
    finally:
        for fd in fds.values():
            os.close(fd)
    return VerifyReport(
        entries_checked=entries,
        bytes_checked=nbytes,
        files=len(fds),
        damaged=tuple(damaged),
        torn_tails=tuple(torn),
    )


def _judge(
    name: str,
    chain: list[_Found],
    scans: list[_Scan],
    damaged: list[DamagedEntry],
    torn: list[TornTail],
) -> None:
    """Turn the scans of one topic's blocks into damaged entries and torn tails."""
    for i, (block, scan) in enumerate(zip(chain, scans, strict=True)):
        first = block.header.first_offset
        successor = chain[i + 1].header.first_offset if i + 1 < len(chain) else None
        want = successor - first if successor is not None else None
        if want is None and block.seal is not None:
            want = block.seal.count
        if scan.damaged:
            # Read once more: a block read while the writer appends to it may show a later
            # entry before an earlier one finished landing. Damage is what both reads show.
            confirmed = {
                offset
                for lo, hi, _pos, _why in _scan_block(block, want).damaged
                for offset in range(lo, hi + 1)
            }
            for lo, hi, pos, why in scan.damaged:
                for offset in range(lo, hi + 1):
                    if offset in confirmed:
                        damaged.append(
                            DamagedEntry(name, offset, block.path, block.base + pos, why)
                        )
        if want is not None and scan.count < want:
            # A final block ends early. That is damage once a later block holds valid
            # entries (the writer wrote them after these); a rescan rules out a write that
            # was still landing when the block was first read.
            later_valid = any(s.valid for s in scans[i + 1 :])
            if later_valid or successor is None:
                again = _scan_block(block, want)
                if again.count >= want:
                    continue
                for offset in range(first + again.count, first + want):
                    damaged.append(
                        DamagedEntry(
                            name,
                            offset,
                            block.path,
                            block.base + again.pos,
                            "the block ends before this entry",
                        )
                    )
            continue
        if want is None and scan.trailing:
            torn.append(TornTail(name, block.path, block.base + scan.pos, scan.trailing))


def repair_directory(
    data_dir: str | os.PathLike[str] | None = None,
    key: str | None = None,
    backend: str | None = None,
) -> RepairReport:
    """Open the directory with the writer and close it again: its recovery truncates torn
    tails, rolls back cut batches and seals what a crash left unsealed. Returns the warnings
    recovery logged as ``actions``. Raises :class:`DirectoryLockedError` if another instance
    holds the directory; never creates a directory."""
    from walrus_core.api import Walrus

    root = resolve_root(data_dir, key)  # refuses a missing directory: never create one
    actions: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                actions.append(record.getMessage())

    handler = _Collect(logging.WARNING)
    logger = logging.getLogger("walrus_core")
    level = logger.level
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)  # so that the warnings reach the handler
    logger.addHandler(handler)
    try:
        # The same data_dir and key as resolved above (Walrus applies the same defaults).
        wal = Walrus(data_dir, key=key, backend=backend)
        wal.close()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return RepairReport(root, tuple(actions))
