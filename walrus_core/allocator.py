"""Hands out blocks: slots of the current data file, new files when it is full."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable

import attrs

from walrus_core.config import Geometry
from walrus_core.directory import fsync_dir
from walrus_core.files import DataFile, OpenFiles
from walrus_core.format import BlockHeader, data_file_name
from walrus_core.index import Block
from walrus_core.storage import OpenSpec, Storage


@attrs.frozen
class Extent:
    """A byte range of one data file."""

    file_no: int
    offset: int
    size: int


class Allocator:
    """Allocates blocks in (file, slot) order and owns the data files (a bounded number of
    them open at a time, see files.py).

    Files are numbered 1, 2, 3, ... and never reused; a file holds ``blocks_per_file`` slots,
    or exactly one larger block when an entry needs more slots than that. Slots are handed out
    in order and never twice while the log is open.

    It also keeps the books reclamation needs: how many live blocks each file holds (a block
    is live from its allocation until it is released), and the extents of blocks no topic
    uses any more whose space has not been given back yet.
    """

    def __init__(
        self,
        root: str,
        geometry: Geometry,
        open_storage: Callable[[OpenSpec], Storage],
        *,
        sync_each: bool,
        sync_metadata: bool,
    ) -> None:
        self.root = root
        self.geometry = geometry
        self.sync_each = sync_each
        self.sync_metadata = sync_metadata
        self.lock = threading.Lock()
        self.open_files = OpenFiles(
            open_storage,
            track_dirty=not sync_each,
            flush_before_close=sync_metadata,
        )
        self.files: dict[int, DataFile] = {}
        self.file_slots: dict[int, int] = {}
        self.max_file_no = 0  # files are numbered past every name seen, even unusable ones
        self.current_file = 0  # 0: no file yet
        self.next_slot = 0
        self.next_seq = 1
        self.live: dict[int, int] = {}  # file_no -> blocks allocated and not released
        self.unused: list[Extent] = []  # released blocks whose space is still allocated
        # Files holding slots recovery could not read: never deleted by reclamation, since
        # what they hold may be evidence of damage (or data a repair could still save).
        self.kept: set[int] = set()

    def path_of(self, file_no: int) -> str:
        """Path of data file ``file_no``."""
        return os.path.join(self.root, data_file_name(file_no))

    def open_existing(self, file_no: int, size: int) -> DataFile:
        """A data file found on disk (recovery); opened when first used."""
        storage = DataFile(
            self.open_files,
            OpenSpec(path=self.path_of(file_no), size=size, sync_each=self.sync_each),
        )
        self.files[file_no] = storage
        self.file_slots[file_no] = size // self.geometry.block_size
        self.live.setdefault(file_no, 0)
        return storage

    def keep_file(self, file_no: int) -> None:
        """Never delete ``file_no`` (it holds unreadable slots)."""
        self.kept.add(file_no)

    def adopt(self, block: Block) -> None:
        """Count a block recovery put back into a topic as live."""
        self.live[block.file_no] = self.live.get(block.file_no, 0) + 1

    def note_unused(self, file_no: int, offset: int, size: int) -> None:
        """A range of a file that no topic uses (a dead or reclaimed block found on disk)."""
        self.unused.append(Extent(file_no, offset, size))

    def release(self, block: Block) -> None:
        """``block`` left its topic for good: its space may be given back."""
        with self.lock:
            left = self.live.get(block.file_no, 0) - 1
            self.live[block.file_no] = max(0, left)
            self.unused.append(Extent(block.file_no, block.base, block.limit))

    def take_unused(self) -> tuple[list[int], list[Extent]]:
        """(files to delete, extents to punch): files with no live block that will take no
        more blocks, and the released extents of the other files. The files are forgotten
        here, under the lock, so no allocation can pick them any more."""
        with self.lock:
            doomed = [
                n
                for n, live in self.live.items()
                if live == 0 and n != self.current_file and n in self.files and n not in self.kept
            ]
            for file_no in doomed:
                del self.live[file_no]
                self.file_slots.pop(file_no, None)
            gone = set(doomed)
            punch = [e for e in self.unused if e.file_no not in gone and e.file_no in self.files]
            self.unused = []
            return doomed, punch

    def forget_file(self, file_no: int) -> DataFile | None:
        """Stop tracking a file chosen by :meth:`take_unused` (its owner deletes it)."""
        with self.lock:
            return self.files.pop(file_no, None)

    def note_file_number(self, file_no: int) -> None:
        """Remember a data file name seen on disk, so new files never reuse its number."""
        self.max_file_no = max(self.max_file_no, file_no)

    def resume(self, file_no: int, next_slot: int, next_seq: int) -> None:
        """Continue allocating after what recovery found."""
        self.current_file = file_no
        self.next_slot = next_slot
        self.next_seq = max(self.next_seq, next_seq)

    def _new_file(self, slots: int) -> int:
        file_no = max(self.max_file_no, *self.files, 0) + 1
        size = slots * self.geometry.block_size
        path = self.path_of(file_no)
        if os.path.exists(path):  # never clobber a file we did not account for
            raise FileExistsError(17, "data file already exists", path)
        # The number is used up before the file is created: if creating or sizing it fails
        # half-way, the next allocation takes the next number instead of finding this one.
        self.max_file_no = file_no
        storage = self.open_files.open(
            OpenSpec(path=path, size=size, create=True, sync_each=self.sync_each)
        )
        # Registered before syncing: if the sync fails the file still exists, and the next
        # allocation must not lose track of it.
        self.files[file_no] = storage
        self.file_slots[file_no] = slots
        self.live[file_no] = 0
        if self.sync_metadata:
            storage.flush()
            fsync_dir(self.root)
        return file_no

    def allocate(self, topic: str, first_offset: int, slots: int) -> Block:
        """A new block of ``slots`` slots for ``topic``, its header written (raises OSError)."""
        with self.lock:
            bpf = self.geometry.blocks_per_file
            file_no, slot = self.current_file, self.next_slot
            if file_no == 0 or slot + slots > self.file_slots.get(file_no, 0):
                file_no = self._new_file(max(bpf, slots))
                slot = 0
                # A file sized for one huge block stays dedicated to it.
                self.current_file = file_no
                self.next_slot = 0
            storage = self.files[file_no]
            seq = self.next_seq
            nonce = secrets.randbits(64)
            header = BlockHeader(
                topic=topic,
                block_seq=seq,
                first_offset=first_offset,
                slots=slots,
                block_size=self.geometry.block_size,
                blocks_per_file=self.geometry.blocks_per_file,
                file_no=file_no,
                slot=slot,
                nonce=nonce,
            )
            # The whole header region: both header copies and a cleared seal record, so
            # nothing an earlier occupant of the slot left there survives.
            packed = header.pack()
            block = Block(
                topic=topic,
                seq=seq,
                file_no=file_no,
                slot=slot,
                slots=slots,
                block_size=self.geometry.block_size,
                first_offset=first_offset,
                nonce=nonce,
                storage=storage,
                fresh=True,
            )
            storage.write(block.base, (packed,), len(packed))
            storage.dirty = True
            self.live[file_no] = self.live.get(file_no, 0) + 1
            self.next_seq = seq + 1
            self.next_slot = slot + slots
            return block

    def close(self) -> None:
        """Close every data file."""
        errors: list[OSError] = []
        for storage in self.files.values():
            try:
                storage.close()
            except OSError as exc:
                errors.append(exc)
        self.files.clear()
        if errors:
            raise errors[0]
