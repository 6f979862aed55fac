"""Guarantee: a damaged or missing ``walrus.json`` loses no data. The geometry is read off the
data files' block headers, the old file is kept aside as ``walrus.json.damaged``, a WARNING
says so, and every entry reads back exactly."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from walrus_core import FsyncSchedule, InvalidConfigError, Walrus
from walrus_core.format import FORMAT_VERSION, META_NAME, data_file_name

GEOMETRIES = [(4096, 4), (8192, 3), (12288, 5)]

DAMAGE: dict[str, Callable[[Path], None]] = {
    "garbage": lambda p: p.write_bytes(b"\x00\xffnot json"),
    "empty": lambda p: p.write_bytes(b""),
    "wrong_keys": lambda p: p.write_text(
        json.dumps({"format": "walrus-python", "version": FORMAT_VERSION, "block_size": "x"})
    ),
    "missing": lambda p: p.unlink(),
}


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{g[0]}x{g[1]}")
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_meta_is_rebuilt_from_the_data_files(
    wal_dir: Path,
    backend_name: str,
    geometry: tuple[int, int],
    damage: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    block_size, blocks_per_file = geometry
    kw = {"data_dir": wal_dir, "backend": backend_name, "fsync": FsyncSchedule.no_fsync()}
    payloads = [bytes([i % 251]) * (100 + 37 * i) for i in range(120)]
    with Walrus(**kw, block_size=block_size, blocks_per_file=blocks_per_file) as wal:
        for data in payloads[:60]:
            wal.append_for_topic("a", data)
        wal.batch_append_for_topic("b", payloads[60:])
        assert wal.read_next("a") is not None  # a cursor to keep
    meta = wal_dir / META_NAME
    DAMAGE[damage](meta)

    with caplog.at_level(logging.WARNING, logger="walrus_core"):
        wal = Walrus(**kw)  # no geometry passed: it must come from the data files
    try:
        assert wal.geometry.block_size == block_size
        assert wal.geometry.blocks_per_file == blocks_per_file
        assert any(META_NAME in r.getMessage() for r in caplog.records), caplog.text
        got_a = wal.batch_read_for_topic("a", 1 << 30, checkpoint=False, start_offset=0)
        got_b = wal.batch_read_for_topic("b", 1 << 30, checkpoint=False, start_offset=0)
        assert [e.data for e in got_a] == payloads[:60]
        assert [e.data for e in got_b] == payloads[60:]
        assert wal.topic_entry_count("a") == 59  # the cursor file was untouched
        wal.append_for_topic("a", b"after")
    finally:
        wal.close()
    if damage != "missing":
        assert (wal_dir / (META_NAME + ".damaged")).exists()
    with Walrus(**kw) as wal:  # the rebuilt file is a normal one now
        assert wal.geometry.block_size == block_size
        assert wal.batch_read_for_topic("a", 1 << 30, False, 60)[0].data == b"after"


def test_a_newer_format_version_is_refused_not_guessed(wal_dir: Path, backend_name: str) -> None:
    with Walrus(data_dir=wal_dir, backend=backend_name, block_size=4096) as wal:
        wal.append_for_topic("a", b"x")
    meta = wal_dir / META_NAME
    doc = json.loads(meta.read_text())
    doc["version"] = 99
    meta.write_text(json.dumps(doc))
    with pytest.raises(InvalidConfigError, match="format version 99"):
        Walrus(data_dir=wal_dir, backend=backend_name)
    assert json.loads(meta.read_text())["version"] == 99  # left as it was


@pytest.mark.parametrize("meta_kept", [True, False], ids=["meta", "no-meta"])
def test_a_version_1_directory_is_refused_naming_the_version(
    wal_dir: Path, backend_name: str, meta_kept: bool
) -> None:
    """Format version 1 (no binding of entries to their block) is not read: its directory is
    refused with the version named, by its metadata file or, without one, by its blocks."""
    wal_dir.mkdir()
    if meta_kept:
        (wal_dir / META_NAME).write_text(
            json.dumps(
                {"format": "walrus-python", "version": 1, "block_size": 4096, "blocks_per_file": 4}
            )
        )
    # A version-1 block header: magic, version 1, then whatever.
    (wal_dir / data_file_name(1)).write_bytes(b"WALB\x01" + bytes(4096 * 4 - 5))
    with pytest.raises(InvalidConfigError, match="format version 1"):
        Walrus(data_dir=wal_dir, backend=backend_name)
    assert (wal_dir / data_file_name(1)).read_bytes()[:5] == b"WALB\x01"  # nothing rewritten
