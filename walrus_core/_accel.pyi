"""Types of the compiled accelerator (walrus_core/_accel.c); see accel.py."""

from typing import Any

def crc32c(data: bytes | bytearray | memoryview, value: int = 0, /) -> int: ...
def crc32c_portable(data: bytes | bytearray | memoryview, value: int = 0, /) -> int: ...
def encode_run(
    payloads: list[tuple[Any, int]],
    index: int,
    salt: int,
    tag: int,
    pos: int,
    offset: int,
    limit: int,
    open_before: int,
    due_pos: int,
    due_offset: int,
    every_bytes: int,
    every_entries: int,
    bufs: list[Any],
    mark_offsets: list[int],
    mark_positions: list[int],
    /,
) -> tuple[int, int, int, int, int, int]: ...
def decode_run(
    buf: bytes,
    rel: int,
    buf_start: int,
    offset: int,
    lim: int,
    salt: int,
    tag: int,
    max_bytes: int,
    total: int,
    out: list[Any],
    /,
) -> tuple[int, int, int, bool]: ...
def set_entry_type(cls: type, /) -> None: ...
def measure(items: list[Any], as_payload: Any, /) -> tuple[list[tuple[Any, int]], int, int]: ...
