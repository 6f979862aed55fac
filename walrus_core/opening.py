"""Opening a data directory: settle its geometry (the metadata file and what the data files
say), recover the topics, load and reconcile the cursors. What the facade gets back is an
:class:`OpenedLog`, ready to use.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import attrs

from walrus_core.allocator import Allocator
from walrus_core.config import FsyncSchedule, Geometry, ReadConsistency
from walrus_core.cursors import CursorBook, CursorStore
from walrus_core.directory import DamagedMetaError, read_meta, write_meta
from walrus_core.errors import StorageError, UnsupportedFormatError
from walrus_core.format import (
    BLOCK_HEADER_SIZE,
    BLOCK_MAGIC,
    FORMAT_VERSION,
    META_NAME,
    BlockHeader,
    data_file_name,
    parse_data_file_name,
)
from walrus_core.index import Topic
from walrus_core.reader import EntryReader
from walrus_core.recovery import DataExtents, recover
from walrus_core.storage import OpenSpec, Storage

log = logging.getLogger("walrus_core")

#: Block sizes are multiples of this, so block headers only ever start at such offsets.
_HEADER_ALIGN = 4096


@attrs.define
class OpenedLog:
    """Everything an open directory consists of, wired together."""

    geometry: Geometry
    allocator: Allocator
    topics: dict[str, Topic]
    cursor_store: CursorStore
    cursors: CursorBook
    reader: EntryReader


def open_directory(
    root: str,
    requested: Geometry,
    asked: dict[str, int | None],
    open_storage: Callable[[OpenSpec], Storage],
    fsync: FsyncSchedule,
    consistency: ReadConsistency,
) -> OpenedLog:
    """Open (or create) the log in ``root``, whose lock the caller holds.

    ``requested`` is the geometry for a new directory; ``asked`` holds the geometry arguments
    the caller passed explicitly (None: not passed), to warn when the recorded ones win.
    Raises :class:`StorageError` for I/O failures and :class:`UnsupportedFormatError` for a
    directory in another on-disk format.
    """
    try:
        geometry = _settle_geometry(root, requested)
    except OSError as exc:
        raise StorageError(f"opening {root!r} failed: {exc}") from exc
    for name, value in asked.items():
        have = getattr(geometry, name)
        if value is not None and value != have:
            log.warning("%s=%d ignored: %s was created with %s=%d", name, value, root, name, have)
    sync_each = fsync.is_sync_each
    allocator = Allocator(
        root, geometry, open_storage, sync_each=sync_each, sync_metadata=not fsync.is_none
    )
    store: CursorStore | None = None
    try:
        store = CursorStore(root, open_storage, sync_each=sync_each)
        reader = EntryReader()
        book = CursorBook(
            store,
            reader,
            strict=consistency.is_strict,
            persist_every=consistency.persist_every,
        )
        # The start marks first: they say which blocks recovery must leave out.
        topics = recover(root, allocator, book.load_marks())
        if topics and not store.existed:
            log.warning(
                "%s is missing: every consumer of %s replays from the start", store.path, root
            )
        book.load(topics, sync=not fsync.is_none)
    except BaseException as exc:
        for closer in (store.close if store is not None else None, allocator.close):
            if closer is not None:
                try:
                    closer()
                except OSError:
                    pass
        if isinstance(exc, OSError):
            raise StorageError(f"opening {root!r} failed: {exc}") from exc
        raise
    return OpenedLog(geometry, allocator, topics, store, book, reader)


def _settle_geometry(root: str, requested: Geometry) -> Geometry:
    """The geometry of ``root``: what its data files were written with (every block header
    records it), else what ``walrus.json`` records, else ``requested`` for a new directory.
    The metadata file is (re)written whenever it is missing, damaged or disagrees."""
    problem: str | None = None
    try:
        recorded = read_meta(root)
    except DamagedMetaError as exc:
        recorded, problem = None, str(exc)
    numbers = sorted(
        n for n in (parse_data_file_name(name) for name in os.listdir(root)) if n is not None
    )
    written = geometry_of_data(root, numbers) if numbers else None
    if written is not None and recorded is not None and written != recorded:
        problem = (
            f"{META_NAME} records block_size={recorded.block_size}"
            f" blocks_per_file={recorded.blocks_per_file}, but the data files were written with"
            f" block_size={written.block_size} blocks_per_file={written.blocks_per_file}"
        )
    elif recorded is None and numbers and problem is None:
        problem = f"{META_NAME} is missing"
    if problem is None and recorded is not None:
        return recorded
    geometry = written or recorded or requested
    if problem is not None:
        meta = os.path.join(root, META_NAME)
        if os.path.exists(meta):
            os.replace(meta, meta + ".damaged")
        log.warning(
            "%s; using block_size=%d blocks_per_file=%d from %s (the old file, if any, is kept"
            " as %s.damaged)",
            problem,
            geometry.block_size,
            geometry.blocks_per_file,
            "the data files' block headers" if written is not None else "the arguments",
            META_NAME,
        )
    write_meta(root, geometry)
    return geometry


def geometry_of_data(root: str, numbers: list[int]) -> Geometry | None:
    """The geometry recorded in the data files' block headers, None if no header is readable.

    The header at the start of a file is enough (every header records the geometry); only when
    none is readable are the files searched for any header at a 4 KiB boundary, skipping
    holes. Raises :class:`UnsupportedFormatError` for blocks of another format version.
    """
    for file_no in numbers:
        path = os.path.join(root, data_file_name(file_no))
        with open(path, "rb") as fh:
            region = fh.read(BLOCK_HEADER_SIZE)
        _refuse_other_versions(path, region)
        header = BlockHeader.unpack(region)
        if header is not None and header.file_no == file_no and header.slot == 0:
            return Geometry(block_size=header.block_size, blocks_per_file=header.blocks_per_file)
    for file_no in numbers:
        path = os.path.join(root, data_file_name(file_no))
        found = _search_headers(path, file_no)
        if found is not None:
            return found
    return None


def _refuse_other_versions(path: str, region: bytes) -> None:
    """Refuse a file whose first block is of another format version. One damaged byte in a
    version-2 header is not that: then the other copy still parses."""
    if BlockHeader.unpack(region) is not None:
        return
    if region[:4] == BLOCK_MAGIC and len(region) > 4 and region[4] != FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"{path} holds blocks of on-disk format version {region[4]}; this version of"
            f" walrus-core reads format version {FORMAT_VERSION} only"
        )


def _search_headers(path: str, file_no: int) -> Geometry | None:
    """Any block header of ``path`` that sits where it says it was written."""
    size = os.path.getsize(path)
    extents = DataExtents(path)
    try:
        with open(path, "rb") as fh:
            at = _HEADER_ALIGN
            while at < size:
                data_at = extents.next_data(at, size)
                if data_at >= size:
                    break
                at = max(at, data_at - data_at % _HEADER_ALIGN)
                fh.seek(at)
                header = BlockHeader.unpack(fh.read(BLOCK_HEADER_SIZE))
                if (
                    header is not None
                    and header.file_no == file_no
                    and header.slot * header.block_size == at
                ):
                    return Geometry(
                        block_size=header.block_size, blocks_per_file=header.blocks_per_file
                    )
                at += _HEADER_ALIGN
    finally:
        extents.close()
    return None
