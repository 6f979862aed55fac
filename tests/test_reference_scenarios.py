"""The original's test catalogue (reference section 10), ported and scaled down.

Each test is named after its catalogue id. Differences from the original, on purpose (issue 2 and
reference section 11): a concurrent batch or an append during a batch waits instead of failing
with WouldBlock; corruption raises CorruptionError instead of returning None; offsets are entry
offsets; one open instance per directory (DirectoryLockedError); batch reads also return
zero-length entries; a clean close persists every cursor. Sizes are scaled from MiB to KiB (the
suite runs with block_size 4096, blocks_per_file 4).
"""

from __future__ import annotations

import os
import random
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.reading import drain
from helpers.self_kill import run_then_kill

from walrus_core import (
    BatchTooLargeError,
    CorruptionError,
    DirectoryLockedError,
    Entry,
    FsyncSchedule,
    Limits,
    ReadConsistency,
    Walrus,
)
from walrus_core.format import BLOCK_HEADER_SIZE, ENTRY_HEADER_SIZE, parse_data_file_name
from walrus_core.names import sanitize_key

OpenWal = Callable[..., Walrus]

GEOMETRY = {"block_size": 4096, "blocks_per_file": 4}
KIB = 1024
JOIN_TIMEOUT = 60.0
ALO = ReadConsistency.at_least_once


# --- helpers ----------------------------------------------------------------------------------


def data_of(entries: list[Entry]) -> list[bytes]:
    return [e.data for e in entries]


def read_data(wal: Walrus, topic: str) -> list[bytes]:
    return data_of(drain(wal, topic))


def batch_drain(wal: Walrus, topic: str, max_bytes: int) -> list[list[Entry]]:
    calls: list[list[Entry]] = []
    while True:
        got = wal.batch_read_for_topic(topic, max_bytes)
        if not got:
            return calls
        calls.append(got)
        assert len(calls) < 100_000


def data_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if parse_data_file_name(p.name) is not None)


def locate(root: Path, marker: bytes) -> tuple[Path, int]:
    """The one place in the directory's files where ``marker`` is stored."""
    hits: list[tuple[Path, int]] = []
    for path in sorted(root.iterdir()):
        if not path.is_file():
            continue
        blob = path.read_bytes()
        at = blob.find(marker)
        while at != -1:
            hits.append((path, at))
            at = blob.find(marker, at + 1)
    assert len(hits) == 1, f"{marker!r} found {len(hits)} times"
    return hits[0]


def patch(path: Path, pos: int, fn: Callable[[bytes], bytes], n: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(pos)
        old = fh.read(n)
        new = fn(old)
        assert len(new) == len(old) and new != old
        fh.seek(pos)
        fh.write(new)
        fh.flush()
        os.fsync(fh.fileno())


def xor_ff(b: bytes) -> bytes:
    return bytes(x ^ 0xFF for x in b)


def zeros(b: bytes) -> bytes:
    return bytes(len(b))


def join_all(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"


def run_threads(targets: list[Callable[[], None]]) -> list[BaseException]:
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # reported by the caller
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(fn)) for fn in targets]
    for t in threads:
        t.start()
    join_all(threads)
    return errors


def batch_job(wal: Walrus, topic: str, batch: list[bytes]) -> Callable[[], None]:
    def run() -> None:
        assert len(wal.batch_append_for_topic(topic, batch)) == len(batch)

    return run


def assert_contiguous(data: list[bytes], group: list[bytes]) -> None:
    first = data.index(group[0])
    assert data[first : first + len(group)] == group


def pattern(n: int, seed: int) -> bytes:
    return bytes((seed + j) % 256 for j in range(n))


# =================================================================================================
# 10.1 unit.rs
# =================================================================================================


def test_U2_large_entry_forces_block_seal(open_wal: OpenWal) -> None:
    wal = open_wal()
    blobs = [b"\x42" * 9 * KIB, b"\x43" * 9 * KIB, b"\x43" * 9 * KIB]
    for i, b in enumerate(blobs):
        assert wal.append_for_topic("t", b) == i
    assert read_data(wal, "t") == blobs


def test_U3_basic_roundtrip_single_topic(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"x")
    wal.append_for_topic("t", b"y")
    assert wal.read_next("t") == Entry(b"x", 0)
    assert wal.read_next("t") == Entry(b"y", 1)
    assert wal.read_next("t") is None


def test_U4_basic_roundtrip_multi_topic(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("a", b"1")
    wal.append_for_topic("b", b"2")
    assert wal.read_next("a") == Entry(b"1", 0)
    assert wal.read_next("b") == Entry(b"2", 0)
    assert wal.read_next("a") is None and wal.read_next("b") is None


def test_U5_persists_read_offsets_across_restart(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"a")
    wal.append_for_topic("t", b"b")
    assert wal.read_next("t") == Entry(b"a", 0)
    with pytest.raises(DirectoryLockedError):
        open_wal()  # the first instance is still open
    wal.close()
    wal2 = open_wal()
    assert wal2.read_next("t") == Entry(b"b", 1)
    assert wal2.read_next("t") is None


def test_U6_checksum_corruption_is_detected_via_public_api(
    open_wal: OpenWal, wal_dir: Path
) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"abcdef")
    wal.append_for_topic("t", b"after-the-bad-one")
    wal.close()
    path, pos = locate(wal_dir, b"abcdef")
    patch(path, pos + 2, xor_ff, 1)
    wal = open_wal()
    for _ in range(2):  # the cursor stays on the bad entry
        with pytest.raises(CorruptionError) as info:
            wal.read_next("t")
        assert info.value.topic == "t"
        assert info.value.offset == 0
        assert info.value.path is not None and Path(info.value.path).name == path.name
    with pytest.raises(CorruptionError):
        wal.read_next("t", checkpoint=False)
    with pytest.raises(CorruptionError):
        wal.batch_read_for_topic("t", 1000)
    with pytest.raises(CorruptionError):
        wal.batch_read_for_topic("t", 1000, start_offset=0)
    assert wal.topic_entry_count("t") == 2
    assert wal.batch_read_for_topic("t", 1000, start_offset=1) == [Entry(b"after-the-bad-one", 1)]
    wal.seek("t", 1)
    assert wal.read_next("t") == Entry(b"after-the-bad-one", 1)
    assert wal.read_next("t") is None


def test_U8_read_next_without_checkpoint_does_not_advance(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"first")
    wal.append_for_topic("t", b"second")
    assert wal.read_next("t", checkpoint=False) == Entry(b"first", 0)
    assert wal.read_next("t", checkpoint=False) == Entry(b"first", 0)
    assert wal.read_next("t") == Entry(b"first", 0)
    assert wal.read_next("t") == Entry(b"second", 1)
    assert wal.read_next("t") is None


def test_U9_stress_many_topics_with_validation(open_wal: OpenWal) -> None:
    wal = open_wal()
    n_topics, n_entries = 40, 15
    for t in range(n_topics):
        for e in range(n_entries):
            wal.append_for_topic(f"topic_{t:04d}", struct.pack("<II", t, e) + b"text" * 10)
    for t in range(n_topics):
        expected = [struct.pack("<II", t, e) + b"text" * 10 for e in range(n_entries)]
        assert read_data(wal, f"topic_{t:04d}") == expected


def test_U10_stress_rapid_write_read_cycles(open_wal: OpenWal) -> None:
    wal = open_wal()
    for cycle in range(500):
        payload = struct.pack("<Q", cycle) + b"\xaa\xbb\xcc\xdd" + bytes(cycle % 100 + 1)
        assert wal.append_for_topic("t", payload) == cycle
        assert wal.read_next("t") == Entry(payload, cycle)


def test_U11_stress_boundary_conditions(open_wal: OpenWal) -> None:
    wal = open_wal()
    sizes = [
        0,
        1,
        63,
        64,
        65,
        1023,
        1024,
        1025,
        3567,
        3568,
        3569,
        4095,
        4096,
        4097,
        65535,
        65536,
        65537,
    ]
    for i, n in enumerate(sizes):
        wal.append_for_topic(f"size_{i}", pattern(n, i))
    for i, n in enumerate(sizes):
        assert wal.read_next(f"size_{i}") == Entry(pattern(n, i), 0)
    wal.close()
    wal = open_wal()
    for i, n in enumerate(sizes):
        assert wal.batch_read_for_topic(f"size_{i}", 1, start_offset=0) == [Entry(pattern(n, i), 0)]


def _patterns(n: int) -> dict[str, bytes]:
    rng = random.Random(42)
    return {
        "zeros": bytes(n),
        "ones": b"\xff" * n,
        "alternating": b"\xaa\x55" * (n // 2),
        "sequential": bytes(i % 256 for i in range(n)),
        "reverse": bytes(255 - i % 256 for i in range(n)),
        "random_seed": bytes(rng.randrange(256) for _ in range(n)),
        "headerlike": (b"WALB\x01\x00" + bytes(26)) * (n // 32),
    }


def test_U12_stress_data_integrity_patterns(open_wal: OpenWal) -> None:
    wal = open_wal()
    pats = _patterns(1000)
    for name, p in pats.items():
        wal.append_for_topic(name, p)
    for name, p in pats.items():
        assert read_data(wal, name) == [p]


def test_U13_stress_concurrent_topic_validation(open_wal: OpenWal) -> None:
    wal = open_wal()
    topics, rounds = 25, 20

    def payload(t: int, r: int) -> bytes:
        return struct.pack("<IIB", t, r, (t * 31 + r) % 256) + f"T{t}R{r}".encode()

    for r in range(rounds):
        for t in range(topics):
            wal.append_for_topic(f"t{t}", payload(t, r))
    for t in range(topics):
        assert read_data(wal, f"t{t}") == [payload(t, r) for r in range(rounds)]


def test_U14_stress_extreme_topic_names(open_wal: OpenWal) -> None:
    wal = open_wal()
    names = [
        "a",
        "aaaaaaaaaa",
        "topic_with_underscores_and_numbers_123",
        "UPPERCASE_TOPIC",
        "mixed_Case_Topic_123",
        "topic.with.dots",
        "topic-with-dashes",
        "0123456789",
        "topic_with_unicode_café",
        "..",
        "/etc/passwd",
        "sp ace",
        "☕" * 85,
        "x" * 255,
    ]
    for i, name in enumerate(names):
        assert wal.append_for_topic(name, b"data-%d" % i) == 0
    assert sorted(wal.topics()) == sorted(names)
    wal.close()
    wal = open_wal()
    for i, name in enumerate(names):
        assert read_data(wal, name) == [b"data-%d" % i]


def test_U15_checksum_detects_corruption(open_wal: OpenWal, wal_dir: Path) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"test_checksum_data_12345")
    assert wal.read_next("t", checkpoint=False) == Entry(b"test_checksum_data_12345", 0)
    wal.append_for_topic("t", b"guard")
    wal.close()
    path, pos = locate(wal_dir, b"test_checksum_data_12345")
    patch(path, pos, xor_ff, 3)
    wal = open_wal()
    with pytest.raises(CorruptionError):
        wal.read_next("t")
    with pytest.raises(CorruptionError):
        wal.batch_read_for_topic("t", 10_000, checkpoint=False)


def test_U24_walrus_empty_topic_read(open_wal: OpenWal) -> None:
    wal = open_wal()
    assert wal.read_next("never") is None
    assert wal.batch_read_for_topic("never", 100) == []


def test_U25_walrus_single_entry_per_topic(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("topic1", b"one")
    wal.append_for_topic("topic2", b"two")
    assert wal.read_next("topic1") == Entry(b"one", 0)
    assert wal.read_next("topic2") == Entry(b"two", 0)
    assert wal.read_next("topic1") is None and wal.read_next("topic2") is None


def test_U26_walrus_multiple_entries_same_topic(open_wal: OpenWal) -> None:
    wal = open_wal()
    data = [b"e1", b"e2", b"e3", b"e4"]
    for d in data:
        wal.append_for_topic("t", d)
    assert drain(wal, "t") == [Entry(d, i) for i, d in enumerate(data)]


def test_U27_walrus_interleaved_topics(open_wal: OpenWal) -> None:
    wal = open_wal()
    for d in (b"a1", b"b1", b"a2", b"b2"):
        wal.append_for_topic(d[:1].decode(), d)
    assert read_data(wal, "a") == [b"a1", b"a2"]
    assert read_data(wal, "b") == [b"b1", b"b2"]


def test_U28_walrus_large_entries(open_wal: OpenWal) -> None:
    wal = open_wal()
    blobs = [bytes([i + 1]) * n for i, n in enumerate([1 * KIB, 16 * KIB, 64 * KIB, 128 * KIB])]
    for b in blobs:
        wal.append_for_topic("t", b)
    assert read_data(wal, "t") == blobs


def test_U29_walrus_zero_length_entry(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"")
    wal.append_for_topic("t", b"not_empty")
    assert wal.read_next("t") == Entry(b"", 0)
    assert wal.read_next("t") == Entry(b"not_empty", 1)
    assert wal.read_next("t") is None


def test_U30_walrus_topic_isolation(open_wal: OpenWal) -> None:
    wal = open_wal()
    for i in range(10):
        wal.append_for_topic("topic_a", bytes([i]))
        wal.append_for_topic("topic_b", bytes([i + 100]))
    assert [wal.read_next("topic_a") for _ in range(5)] == [Entry(bytes([i]), i) for i in range(5)]
    assert read_data(wal, "topic_b") == [bytes([i + 100]) for i in range(10)]
    assert read_data(wal, "topic_a") == [bytes([i]) for i in range(5, 10)]


def test_U31_walrus_recovery_after_restart(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"before")
    wal.append_for_topic("t", b"also_before")
    assert wal.read_next("t") == Entry(b"before", 0)
    wal.close()
    wal = open_wal()
    assert wal.read_next("t") == Entry(b"also_before", 1)
    assert wal.read_next("t") is None


def test_U32_walrus_write_after_read_exhaustion(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"first")
    assert wal.read_next("t") == Entry(b"first", 0)
    assert wal.read_next("t") is None
    wal.append_for_topic("t", b"second")
    assert wal.read_next("t") == Entry(b"second", 1)


def test_U33_walrus_concurrent_topics_different_patterns(open_wal: OpenWal) -> None:
    wal = open_wal()
    large = [b"\x01" * 20 * KIB, b"\x02" * 20 * KIB]
    for b in large:
        wal.append_for_topic("topic_large", b)
    for i in range(100):
        wal.append_for_topic("topic_small", bytes([i]))
    assert read_data(wal, "topic_large") == large
    assert read_data(wal, "topic_small") == [bytes([i]) for i in range(100)]


def test_U34_walrus_handles_invalid_data_gracefully(open_wal: OpenWal, wal_dir: Path) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"valid_data")
    wal.append_for_topic("other", b"other_data")  # another topic, another block
    wal.close()
    first = data_files(wal_dir)[0]
    patch(first, 0, lambda b: b"\xff\xff", 2)
    wal = open_wal()  # a damaged block does not make the directory unopenable
    try:
        got = wal.read_next("t")
    except CorruptionError:
        got = None
    assert got in (None, Entry(b"valid_data", 0))  # never wrong bytes
    # No block of another topic is lost because one block is bad.
    assert read_data(wal, "other") == [b"other_data"]
    off = wal.append_for_topic("other", b"more")
    assert wal.read_next("other") == Entry(b"more", off)


def test_U35_walrus_many_small_entries(open_wal: OpenWal) -> None:
    wal = open_wal()
    for i in range(1000):
        wal.append_for_topic("t", b"entry_%04d" % i)
    assert read_data(wal, "t") == [b"entry_%04d" % i for i in range(1000)]
    assert wal.read_next("t") is None


def test_U36_walrus_multiple_topics_stress(open_wal: OpenWal) -> None:
    wal = open_wal()
    for e in range(100):
        for t in range(10):
            wal.append_for_topic(f"topic{t}", f"t{t}_e{e}".encode())
    for t in range(10):
        assert read_data(wal, f"topic{t}") == [f"t{t}_e{e}".encode() for e in range(100)]


# =================================================================================================
# 10.2 integration.rs
# =================================================================================================


def test_I1_integration_basic_write_read_cycle(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"one")
    wal.append_for_topic("t", b"two")
    assert read_data(wal, "t") == [b"one", b"two"]
    assert wal.read_next("t") is None


def test_I2_integration_multiple_topics(open_wal: OpenWal) -> None:
    wal = open_wal()
    for topic, d in [("logs", b"l1"), ("metrics", b"m1"), ("logs", b"l2"), ("events", b"e1")]:
        wal.append_for_topic(topic, d)
    assert read_data(wal, "logs") == [b"l1", b"l2"]
    assert read_data(wal, "metrics") == [b"m1"]
    assert read_data(wal, "events") == [b"e1"]
    assert all(wal.read_next(t) is None for t in ("logs", "metrics", "events"))


def test_I3_integration_empty_data_handling(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("empty", b"")
    wal.append_for_topic("one", bytes([42]))
    assert wal.read_next("empty") == Entry(b"", 0)
    assert wal.read_next("one") == Entry(b"\x2a", 0)


def test_I4_integration_binary_data(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("bin", bytes([0, 1, 127, 128, 255, 0, 42]))
    assert wal.read_next("bin") == Entry(bytes([0, 1, 127, 128, 255, 0, 42]), 0)


def test_I5_integration_utf8_strings(open_wal: OpenWal) -> None:
    wal = open_wal()
    texts = ["Hello, World!", "Café ☕", "こんにちは", "Здравствуйте", "🦭 walrus"]
    for i, s in enumerate(texts):
        wal.append_for_topic(f"utf8_{i}", s.encode())
    for i, s in enumerate(texts):
        got = wal.read_next(f"utf8_{i}")
        assert got is not None and got.data.decode() == s


def test_I6_integration_medium_sized_data(open_wal: OpenWal) -> None:
    wal = open_wal()
    sizes = {"small": 1 * KIB, "medium": 10 * KIB, "large": 100 * KIB}
    for name, n in sizes.items():
        wal.append_for_topic(name, pattern(n, n))
    for name, n in sizes.items():
        assert read_data(wal, name) == [pattern(n, n)]


def test_I7_integration_sequential_writes_and_reads(open_wal: OpenWal) -> None:
    wal = open_wal()
    for i in range(20):
        wal.append_for_topic("t", f"Message number {i}".encode())
    assert read_data(wal, "t") == [f"Message number {i}".encode() for i in range(20)]
    assert wal.read_next("t") is None


def test_I8_integration_interleaved_write_read(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"1")
    wal.append_for_topic("t", b"2")
    assert wal.read_next("t") == Entry(b"1", 0)
    wal.append_for_topic("t", b"3")
    wal.append_for_topic("t", b"4")
    assert read_data(wal, "t") == [b"2", b"3", b"4"]
    assert wal.read_next("t") is None


def test_I9_integration_multiple_topics_stress(open_wal: OpenWal) -> None:
    wal = open_wal()
    for m in range(10):
        for t in range(5):
            wal.append_for_topic(f"topic_{t}", f"topic_{t}_message_{m}".encode())
    for t in range(5):
        assert read_data(wal, f"topic_{t}") == [
            f"topic_{t}_message_{m}".encode() for m in range(10)
        ]


def test_I10_integration_concurrent_writes(open_wal: OpenWal) -> None:
    wal = open_wal()

    def writer(t: int) -> Callable[[], None]:
        def run() -> None:
            for m in range(50):
                assert wal.append_for_topic(f"thread_{t}", f"thread_{t}_msg_{m}".encode()) == m

        return run

    assert run_threads([writer(t) for t in range(3)]) == []
    for t in range(3):
        assert read_data(wal, f"thread_{t}") == [f"thread_{t}_msg_{m}".encode() for m in range(50)]
        assert wal.read_next(f"thread_{t}") is None


def test_I11_integration_topic_isolation(open_wal: OpenWal) -> None:
    wal = open_wal()
    for topic, d in [("A", b"A1"), ("B", b"B1"), ("A", b"A2"), ("C", b"C1"), ("B", b"B2")]:
        wal.append_for_topic(topic, d)
    assert read_data(wal, "A") == [b"A1", b"A2"]
    assert read_data(wal, "B") == [b"B1", b"B2"]
    assert read_data(wal, "C") == [b"C1"]


def test_I12_integration_nonexistent_topic(open_wal: OpenWal) -> None:
    wal = open_wal()
    assert wal.read_next("nonexistent") is None
    wal.append_for_topic("existing", b"data")
    assert wal.read_next("different") is None
    assert wal.read_next("existing") == Entry(b"data", 0)


def test_I13_integration_write_after_exhaustion(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"initial")
    assert read_data(wal, "t") == [b"initial"]
    wal.append_for_topic("t", b"after1")
    wal.append_for_topic("t", b"after2")
    assert drain(wal, "t") == [Entry(b"after1", 1), Entry(b"after2", 2)]


def test_I14_integration_large_topic_names(open_wal: OpenWal) -> None:
    wal = open_wal()
    for name in ["fifteen_chars_x", "eighteen_chars_xyz", "n" * 200]:
        wal.append_for_topic(name, name.encode())
        assert wal.read_next(name) == Entry(name.encode(), 0)


def test_I15_integration_memory_pressure_test(open_wal: OpenWal) -> None:
    wal = open_wal()
    for t in range(24):
        wal.append_for_topic(f"topic_{t}", pattern(8 * KIB, t))
    for t in range(24):
        assert read_data(wal, f"topic_{t}") == [pattern(8 * KIB, t)]


def test_I16_integration_file_rollover_stress(open_wal: OpenWal, wal_dir: Path) -> None:
    wal = open_wal()
    blobs = [pattern(50 * KIB, e * 1000) for e in range(5)]
    for b in blobs:
        wal.append_for_topic("t", b)
    assert len(data_files(wal_dir)) >= 2
    assert read_data(wal, "t") == blobs
    wal.close()
    wal = open_wal()
    assert wal.batch_read_for_topic("t", 1, start_offset=4) == [Entry(blobs[4], 4)]


def test_I17_integration_corruption_detection_comprehensive(
    open_wal: OpenWal, wal_dir: Path
) -> None:
    wal = open_wal()
    payload = b"MARK-I17-" + pattern(10 * KIB, 7)
    wal.append_for_topic("t", payload)
    assert wal.read_next("t", checkpoint=False) == Entry(payload, 0)
    wal.append_for_topic("t", b"tail")
    wal.close()
    path, pos = locate(wal_dir, b"MARK-I17-")
    patch(path, pos + 5000, xor_ff, 5)
    wal = open_wal()
    with pytest.raises(CorruptionError):
        wal.read_next("t")
    wal.seek("t", 1)
    assert wal.read_next("t") == Entry(b"tail", 1)


def test_I18_integration_extreme_topic_count(open_wal: OpenWal) -> None:
    wal = open_wal(fsync=FsyncSchedule.sync_each())
    n = 120
    for i in range(n):
        wal.append_for_topic(f"topic_{i}", struct.pack("<Q", i) + b"TOPIC_DATA_%d" % i)
    order = list(range(n))
    random.Random(7).shuffle(order)
    for i in order:
        assert wal.read_next(f"topic_{i}") == Entry(struct.pack("<Q", i) + b"TOPIC_DATA_%d" % i, 0)


def test_I19_integration_mixed_size_stress(open_wal: OpenWal) -> None:
    wal = open_wal()
    blobs = [pattern(n, n) for n in (1, 10, 100, 1000, 10_000, 100_000)]
    for b in blobs:
        wal.append_for_topic("t", b)
    assert read_data(wal, "t") == blobs


def test_I20_integration_persistence_stress_with_validation(open_wal: OpenWal) -> None:
    wal = open_wal()
    for t in range(20):
        for e in range(10):
            wal.append_for_topic(f"topic_{t}", f"t{t}e{e}".encode())
    for t in range(20):
        for e in range(5):
            assert wal.read_next(f"topic_{t}") == Entry(f"t{t}e{e}".encode(), e)
    wal.close()
    wal = open_wal()
    for t in range(20):
        assert drain(wal, f"topic_{t}") == [Entry(f"t{t}e{e}".encode(), e) for e in range(5, 10)]


def test_I21_integration_data_pattern_stress(open_wal: OpenWal) -> None:
    wal = open_wal()
    pats = _patterns(10_000)
    for name, p in pats.items():
        wal.append_for_topic(f"pattern_{name}", p)
    for name, p in pats.items():
        assert read_data(wal, f"pattern_{name}") == [p]


def test_I22_integration_special_topic_names(open_wal: OpenWal) -> None:
    wal = open_wal()
    names = [
        "topic-with-dashes",
        "topic_with_underscores",
        "topic.with.dots",
        "topic123",
        "UPPERCASE",
        "MiXeD_CaSe-1.2",
    ]
    for n in names:
        wal.append_for_topic(n, n.encode())
    for n in names:
        assert read_data(wal, n) == [n.encode()]


def test_I23_exactly_once_delivery_guarantee(open_wal: OpenWal) -> None:
    wal = open_wal()
    for i in range(10):
        wal.append_for_topic("t", bytes([i]))
    assert data_of([wal.read_next("t") for _ in range(5)]) == [bytes([i]) for i in range(5)]  # type: ignore[misc]
    wal.close()
    wal = open_wal()
    assert drain(wal, "t") == [Entry(bytes([i]), i) for i in range(5, 10)]


# =================================================================================================
# 10.3 batch_writes.rs
# =================================================================================================


def test_BW1_batch_write_basic(open_wal: OpenWal) -> None:
    wal = open_wal()
    assert wal.batch_append_for_topic("t", [b"entry1", b"entry2", b"entry3"]) == range(0, 3)
    assert read_data(wal, "t") == [b"entry1", b"entry2", b"entry3"]
    assert wal.read_next("t") is None


def test_BW2_batch_write_atomicity_with_reader(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"before")
    assert wal.read_next("t") == Entry(b"before", 0)
    wal.batch_append_for_topic("t", [b"batch1", b"batch2", b"batch3"])
    assert drain(wal, "t") == [Entry(b"batch%d" % i, i) for i in range(1, 4)]


def test_BW3_batch_size_limit_enforcement(open_wal: OpenWal) -> None:
    wal = open_wal(limits=Limits(max_batch_bytes=10 * KIB))
    with pytest.raises(BatchTooLargeError):
        wal.batch_append_for_topic("t", [bytes(KIB)] * 11)
    assert wal.read_next("t") is None
    assert wal.topic_entry_count("t") == 0
    assert wal.batch_append_for_topic("t", [bytes(KIB)] * 5) == range(0, 5)


def test_BW4_concurrent_batch_writes_wait_their_turn(open_wal: OpenWal) -> None:
    wal = open_wal()
    barrier = threading.Barrier(2, timeout=JOIN_TIMEOUT)
    ranges: dict[int, range] = {}

    def batcher(w: int) -> Callable[[], None]:
        def run() -> None:
            barrier.wait()
            ranges[w] = wal.batch_append_for_topic(
                "t", [bytes([w]) * 5 * KIB + b"%d" % i for i in range(20)]
            )

        return run

    assert run_threads([batcher(0), batcher(1)]) == []
    assert sorted((r.start, r.stop) for r in ranges.values()) == [(0, 20), (20, 40)]
    got = drain(wal, "t")
    assert len(got) == 40
    for w, r in ranges.items():
        assert data_of(got[r.start : r.stop]) == [
            bytes([w]) * 5 * KIB + b"%d" % i for i in range(20)
        ]


def test_BW5_single_append_during_batch_waits(open_wal: OpenWal) -> None:
    wal = open_wal()
    offsets: list[int] = []
    errors: list[BaseException] = []
    started = threading.Event()

    def single() -> None:
        started.set()
        try:
            offsets.append(wal.append_for_topic("t", b"single"))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=single)

    def entries() -> Iterator[bytes]:
        for i in range(50):
            if i == 25:  # start the single append while the batch is being produced
                thread.start()
                assert started.wait(JOIN_TIMEOUT)
            yield b"batch-%02d" % i + bytes(KIB)

    r = wal.batch_append_for_topic("t", entries())
    join_all([thread])
    assert errors == []
    assert r in (range(0, 50), range(1, 51))
    assert offsets == [50 if r.start == 0 else 0]
    got = data_of(drain(wal, "t"))
    batch = [b"batch-%02d" % i + bytes(KIB) for i in range(50)]
    assert got in ([*batch, b"single"], [b"single", *batch])


def test_BW6_empty_batch(open_wal: OpenWal) -> None:
    wal = open_wal()
    assert wal.batch_append_for_topic("t", []) == range(0, 0)
    assert wal.read_next("t") is None
    assert wal.topics() == []


def test_BW7_batch_spans_multiple_blocks(open_wal: OpenWal) -> None:
    wal = open_wal()
    blob = b"\xab" * 5 * KIB
    assert wal.batch_append_for_topic("t", [blob] * 100) == range(0, 100)
    got = drain(wal, "t")
    assert [e.offset for e in got] == list(range(100))
    assert all(e.data == blob for e in got)


def test_BW8_batch_with_varying_entry_sizes(open_wal: OpenWal) -> None:
    wal = open_wal()
    sizes = [100, 1 * KIB, 10 * KIB, 500, 50 * KIB]
    blobs = [bytes([i + 1]) * n for i, n in enumerate(sizes)]
    wal.batch_append_for_topic("t", blobs)
    assert read_data(wal, "t") == blobs


def test_BW9_chaos_interleaved_batch_and_regular_writes(open_wal: OpenWal) -> None:
    wal = open_wal()

    def worker(t: int) -> Callable[[], None]:
        def run() -> None:
            for i in range(20):
                if i % 3 == 0:
                    wal.batch_append_for_topic(
                        "t", [b"batch_%d_%d_%d" % (t, i, j) for j in range(3)]
                    )
                else:
                    wal.append_for_topic("t", b"regular_%d_%d" % (t, i))

        return run

    assert run_threads([worker(t) for t in range(10)]) == []
    got = data_of(drain(wal, "t"))
    assert len(got) == 10 * (7 * 3 + 13)
    assert len(set(got)) == len(got)
    for t in range(10):
        mine = [
            d for d in got if d.startswith(b"batch_%d_" % t) or d.startswith(b"regular_%d_" % t)
        ]
        expected: list[bytes] = []
        for i in range(20):
            if i % 3 == 0:
                group = [b"batch_%d_%d_%d" % (t, i, j) for j in range(3)]
                assert_contiguous(got, group)
                expected += group
            else:
                expected.append(b"regular_%d_%d" % (t, i))
        assert mine == expected


def test_BW10_chaos_multiple_topics_concurrent_batches(open_wal: OpenWal) -> None:
    wal = open_wal()

    def worker(t: int) -> Callable[[], None]:
        def run() -> None:
            for b in range(6):
                r = wal.batch_append_for_topic(
                    f"topic_{t}", [b"t%d_b%d_e%d" % (t, b, e) for e in range(3)]
                )
                assert r == range(3 * b, 3 * b + 3)

        return run

    assert run_threads([worker(t) for t in range(3)]) == []
    for t in range(3):
        got = read_data(wal, f"topic_{t}")
        assert got == [b"t%d_b%d_e%d" % (t, b, e) for b in range(6) for e in range(3)]


def test_BW11_chaos_batch_write_with_concurrent_readers(open_wal: OpenWal) -> None:
    wal = open_wal(consistency=ALO(persist_every=10))
    n_writers, n_batches, size = 3, 15, 3
    total = n_writers * n_batches * size
    seen: list[Entry] = []
    lock = threading.Lock()
    writers_done = threading.Event()

    def writer(w: int) -> Callable[[], None]:
        def run() -> None:
            for b in range(n_batches):
                wal.batch_append_for_topic(
                    "t", [b"w%d-b%02d-%d/%d" % (w, b, j, size) for j in range(size)]
                )

        return run

    def reader() -> None:
        while True:
            entry = wal.read_next("t")
            if entry is None:
                if writers_done.is_set() and wal.read_next("t", checkpoint=False) is None:
                    return
                continue
            assert entry.data
            # Batches are visible whole: the rest of this entry's batch is there already.
            j = int(entry.data.split(b"-")[2].split(b"/")[0])
            rest = wal.batch_read_for_topic("t", 10**9, start_offset=entry.offset)
            prefix = entry.data.rsplit(b"-", 1)[0]
            assert data_of(rest[: size - j]) == [
                b"%s-%d/%d" % (prefix, k, size) for k in range(j, size)
            ]
            with lock:
                seen.append(entry)

    errors: list[BaseException] = []
    reader_threads = []
    for _ in range(5):

        def wrapped() -> None:
            try:
                reader()
            except BaseException as exc:
                errors.append(exc)

        reader_threads.append(threading.Thread(target=wrapped))
    for t in reader_threads:
        t.start()
    errors += run_threads([writer(w) for w in range(n_writers)])
    writers_done.set()
    join_all(reader_threads)
    assert errors == []
    assert sorted(e.offset for e in seen) == list(range(total))


def test_BW12_chaos_batch_write_crash_recovery(wal_dir: Path, backend_name: str) -> None:
    kw: dict[str, Any] = {
        "data_dir": wal_dir,
        "key": "crash_recovery_test",
        "backend": backend_name,
        "fsync": FsyncSchedule.sync_each(),
        **GEOMETRY,
    }
    with Walrus(**kw) as wal:
        wal.batch_append_for_topic("t", [b"one", b"two", b"three"])
    with Walrus(**kw) as wal:
        assert read_data(wal, "t") == [b"one", b"two", b"three"]
        assert wal.batch_append_for_topic("t", [b"four", b"five"]) == range(3, 5)
        assert read_data(wal, "t") == [b"four", b"five"]
    assert (wal_dir / "crash_recovery_test").is_dir()


def test_BW13_chaos_alternating_tiny_and_huge_batches(open_wal: OpenWal) -> None:
    wal = open_wal()
    huge = b"\xab" * 10 * KIB
    for _ in range(5):
        wal.batch_append_for_topic("t", [b"t"])
        wal.batch_append_for_topic("t", [huge] * 5)
    assert read_data(wal, "t") == ([b"t"] + [huge] * 5) * 5


def test_BW15_chaos_readers_at_different_positions_during_batch(open_wal: OpenWal) -> None:
    wal = open_wal()
    for i in range(5):
        wal.append_for_topic("t", b"initial_%d" % i)
    assert [wal.read_next("t") for _ in range(3)] == [Entry(b"initial_%d" % i, i) for i in range(3)]
    wal.batch_append_for_topic("t", [b"batch_%d" % i for i in range(4)])
    assert read_data(wal, "t") == [b"initial_3", b"initial_4"] + [b"batch_%d" % i for i in range(4)]


def test_BW16_chaos_many_topics_racing_batch_and_regular(open_wal: OpenWal) -> None:
    wal = open_wal()
    n_topics = 10

    def batcher(t: int) -> Callable[[], None]:
        def run() -> None:
            for b in range(10):
                wal.batch_append_for_topic(f"topic_{t}", [b"b%d_%d" % (b, j) for j in range(3)])

        return run

    def single(t: int) -> Callable[[], None]:
        def run() -> None:
            for i in range(10):
                wal.append_for_topic(f"topic_{t}", b"s%d" % i)

        return run

    targets = [f(t) for t in range(n_topics) for f in (batcher, single)]
    assert run_threads(targets) == []
    for t in range(n_topics):
        got = read_data(wal, f"topic_{t}")
        assert len(got) == 40
        assert [d for d in got if d.startswith(b"s")] == [b"s%d" % i for i in range(10)]
        for b in range(10):
            assert_contiguous(got, [b"b%d_%d" % (b, j) for j in range(3)])


def test_BW17_chaos_sequential_batches_with_crashes(wal_dir: Path, backend_name: str) -> None:
    kw: dict[str, Any] = {
        "data_dir": wal_dir,
        "key": "sequential_crashes_test",
        "backend": backend_name,
        "fsync": FsyncSchedule.sync_each(),
        **GEOMETRY,
    }
    for cycle in range(5):
        with Walrus(**kw) as wal:
            r = wal.batch_append_for_topic("t", [b"cycle_%d" % cycle] * 2)
            assert r == range(2 * cycle, 2 * cycle + 2)
    with Walrus(**kw) as wal:
        assert read_data(wal, "t") == [b"cycle_%d" % (i // 2) for i in range(10)]
        assert wal.read_next("t") is None


def test_BW18_chaos_batch_with_exactly_block_size_entries(open_wal: OpenWal) -> None:
    wal = open_wal()
    blobs = [bytes([i]) * (4096 - 64) for i in range(5)]
    assert wal.batch_append_for_topic("t", blobs) == range(0, 5)
    assert read_data(wal, "t") == blobs
    wal.close()
    wal = open_wal()
    assert wal.batch_read_for_topic("t", 1, start_offset=3) == [Entry(blobs[3], 3)]


def test_BW19_chaos_hammering_same_topic_with_batches(open_wal: OpenWal) -> None:
    wal = open_wal()

    def worker(t: int) -> Callable[[], None]:
        def run() -> None:
            for b in range(10):
                r = wal.batch_append_for_topic("t", [b"%d-%d-a" % (t, b), b"%d-%d-b" % (t, b)])
                assert len(r) == 2

        return run

    assert run_threads([worker(t) for t in range(8)]) == []
    got = data_of(drain(wal, "t"))
    assert len(got) == 160
    for i in range(0, 160, 2):
        assert got[i].endswith(b"-a") and got[i + 1] == got[i][:-1] + b"b"


def test_BW20_chaos_zero_length_entries_in_batch(open_wal: OpenWal) -> None:
    wal = open_wal()
    data = [b"", b"normal", b"", b"", b"another", b""]
    assert wal.batch_append_for_topic("t", data) == range(0, 6)
    assert wal.batch_read_for_topic("t", 100, checkpoint=False) == [
        Entry(d, i) for i, d in enumerate(data)
    ]
    assert [wal.read_next("t") for _ in range(6)] == [Entry(d, i) for i, d in enumerate(data)]
    assert wal.read_next("t") is None


def test_BW21_chaos_batch_interspersed_with_frequent_fsync(open_wal: OpenWal) -> None:
    wal = open_wal(fsync=FsyncSchedule.sync_each())
    for b in range(10):
        wal.batch_append_for_topic("t", [b"%d-%d" % (b, e) for e in range(5)])
    assert read_data(wal, "t") == [b"%d-%d" % (b, e) for b in range(10) for e in range(5)]


def test_BW22_batch_single_entry(open_wal: OpenWal) -> None:
    wal = open_wal()
    assert wal.batch_append_for_topic("t", [b"only"]) == range(0, 1)
    assert drain(wal, "t") == [Entry(b"only", 0)]


def test_BW23_batch_exactly_at_block_boundary(open_wal: OpenWal) -> None:
    wal = open_wal()
    usable = GEOMETRY["block_size"] - BLOCK_HEADER_SIZE
    half = usable // 2 - ENTRY_HEADER_SIZE
    blobs = [b"\xaa" * half, b"\xbb" * half]
    assert wal.batch_append_for_topic("t", blobs) == range(0, 2)
    assert wal.append_for_topic("t", b"next-block") == 2
    assert read_data(wal, "t") == [*blobs, b"next-block"]
    wal.close()
    wal = open_wal()
    assert wal.batch_read_for_topic("t", 10**6, start_offset=0) == [
        Entry(blobs[0], 0),
        Entry(blobs[1], 1),
        Entry(b"next-block", 2),
    ]


def test_BW24_batch_then_regular_write(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.batch_append_for_topic("t", [b"batch1", b"batch2"])
    assert wal.append_for_topic("t", b"regular") == 2
    assert read_data(wal, "t") == [b"batch1", b"batch2", b"regular"]


def test_BW25_multiple_sequential_batches(open_wal: OpenWal) -> None:
    wal = open_wal()
    for b in range(4):
        assert wal.batch_append_for_topic(
            "t", [b"batch_%d_entry_%d" % (b, e) for e in range(3)]
        ) == range(3 * b, 3 * b + 3)
    assert read_data(wal, "t") == [
        b"batch_%d_entry_%d" % (b, e) for b in range(4) for e in range(3)
    ]


def test_BW26_integrity_batch_write_sequential_numbers(open_wal: OpenWal) -> None:
    wal = open_wal()
    data = [struct.pack("<Q", i) + b"entry_%d" % i for i in range(64)]
    wal.batch_append_for_topic("t", data)
    assert read_data(wal, "t") == data
    assert wal.read_next("t") is None


def test_BW27_integrity_batch_write_random_patterns(open_wal: OpenWal) -> None:
    wal = open_wal()
    data = [bytes((i + j) % 256 for j in range(1000 + (i * 137) % 5000)) for i in range(50)]
    wal.batch_append_for_topic("t", data)
    assert read_data(wal, "t") == data
    assert wal.read_next("t") is None


def test_BW28_integrity_batch_write_large_entries_exact_match(open_wal: OpenWal) -> None:
    wal = open_wal()
    data = []
    for i in range(10):
        body = pattern(50 * KIB, i * 13)
        data.append(struct.pack("<I", i) + body + struct.pack("<I", i))
    wal.batch_append_for_topic("t", data)
    assert read_data(wal, "t") == data
    assert wal.read_next("t") is None


def test_BW29_integrity_batch_spanning_blocks_exact_data(open_wal: OpenWal) -> None:
    wal = open_wal()
    data = []
    for i in range(20):
        seed = (i * 0x9E3779B9) & 0xFFFFFFFF
        data.append(
            b"".join(struct.pack("<I", (seed + k) & 0xFFFFFFFF) for k in range(30 * KIB // 4))
        )
    wal.batch_append_for_topic("t", data)
    assert read_data(wal, "t") == data


def test_BW30_integrity_multiple_batches_sequential(open_wal: OpenWal) -> None:
    wal = open_wal()

    def entry(b: int, e: int) -> bytes:
        return struct.pack("<II", b, e) + b"batch %d entry %d" % (b, e)

    for b in range(6):
        wal.batch_append_for_topic("t", [entry(b, e) for e in range(5)])
    assert read_data(wal, "t") == [entry(b, e) for b in range(6) for e in range(5)]
    assert wal.read_next("t") is None


def test_BW31_integrity_batch_after_crash_recovery(wal_dir: Path, backend_name: str) -> None:
    kw: dict[str, Any] = {
        "data_dir": wal_dir,
        "key": "integrity_crash_test",
        "backend": backend_name,
        "fsync": FsyncSchedule.sync_each(),
        **GEOMETRY,
    }
    magic = struct.pack("<Q", 0xDEADBEEFCAFEBABE)
    data = [(struct.pack("<Q", i) + magic + pattern(4096, i))[:4096] for i in range(12)]
    with Walrus(**kw) as wal:
        wal.batch_append_for_topic("t", data)
    with Walrus(**kw) as wal:
        assert read_data(wal, "t") == data
        assert wal.read_next("t") is None


def test_BW33_stress_many_small_batches(open_wal: OpenWal) -> None:
    wal = open_wal()
    for b in range(200):
        wal.batch_append_for_topic("t", [b"%d:%d" % (b, e) for e in range(10)])
    got = read_data(wal, "t")
    assert got == [b"%d:%d" % (b, e) for b in range(200) for e in range(10)]


def test_BW34_concurrent_batches_all_become_visible(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"initial")
    assert wal.read_next("t") == Entry(b"initial", 0)

    jobs = [batch_job(wal, "t", [bytes([w]) * 5 * KIB] * 3) for w in (1, 2)]
    assert run_threads(jobs) == []
    got = data_of(drain(wal, "t"))
    assert sorted(got) == sorted([b"\x01" * 5 * KIB] * 3 + [b"\x02" * 5 * KIB] * 3)
    assert got[0] == got[1] == got[2] and got[3] == got[4] == got[5]


def test_BW35_rollback_allows_data_overwrite(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"single1")
    wal.batch_append_for_topic("t", [b"b1", b"b2"])
    wal.append_for_topic("t", b"single2")
    assert read_data(wal, "t") == [b"single1", b"b1", b"b2", b"single2"]


def test_BW36_rollback_block_state_consistency(open_wal: OpenWal) -> None:
    wal = open_wal()

    jobs = [batch_job(wal, "t", [bytes([w]) * 5 * KIB] * 3) for w in (1, 2)]
    assert run_threads(jobs) == []
    assert wal.batch_append_for_topic("t", [b"consistency_check"]) == range(6, 7)
    got = read_data(wal, "t")
    assert len(got) == 7 and got[-1] == b"consistency_check"


def test_BW37_rollback_preserves_existing_data(open_wal: OpenWal) -> None:
    wal = open_wal()
    for i in range(5):
        wal.append_for_topic("orig", b"o%d" % i)
    assert read_data(wal, "orig") == [b"o%d" % i for i in range(5)]
    assert wal.batch_append_for_topic("other", [b"\x05" * 5 * KIB] * 2) == range(0, 2)
    assert read_data(wal, "other") == [b"\x05" * 5 * KIB] * 2
    assert wal.read_next("orig") is None
    assert wal.append_for_topic("orig", b"after_rollbacks") == 5
    assert wal.read_next("orig") == Entry(b"after_rollbacks", 5)


def test_BW38_rollback_file_state_tracking(open_wal: OpenWal) -> None:
    wal = open_wal()
    expected: list[bytes] = []
    for b in range(15):
        batch = (
            [bytes([b]) * 15 * KIB] * 3 if b % 5 == 0 else [b"%d_%d" % (b, e) for e in range(10)]
        )
        wal.batch_append_for_topic("t", batch)
        expected += batch
    assert wal.batch_append_for_topic("t", [b"final_entry"]) == range(129, 130)
    assert read_data(wal, "t") == [*expected, b"final_entry"]


# =================================================================================================
# 10.4 batch_read.rs
# =================================================================================================


def test_BR1_batch_read_spans_multiple_blocks(open_wal: OpenWal) -> None:
    wal = open_wal()
    blobs = [bytes([i]) * 8 * KIB for i in range(3)]
    for b in blobs:
        wal.append_for_topic("t", b)
    assert wal.batch_read_for_topic("t", 30 * KIB) == [Entry(b, i) for i, b in enumerate(blobs)]
    assert wal.batch_read_for_topic("t", 1000) == []


def test_BR2_batch_read_stops_mid_block(open_wal: OpenWal) -> None:
    wal = open_wal()
    for i in range(100):
        wal.append_for_topic("t", b"entry_%04d" % i)
    seen: list[Entry] = []
    for _ in range(10):
        got = wal.batch_read_for_topic("t", 100)
        assert len(got) == 10
        seen += got
    assert seen == [Entry(b"entry_%04d" % i, i) for i in range(100)]
    assert wal.batch_read_for_topic("t", 100) == []


def test_BR3_batch_read_crosses_sealed_to_tail(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"\x09" * 9 * KIB)
    for i in range(10):
        wal.append_for_topic("t", b"tail_entry_%d" % i)
    got = wal.batch_read_for_topic("t", 20 * KIB)
    assert data_of(got) == [b"\x09" * 9 * KIB] + [b"tail_entry_%d" % i for i in range(10)]


def test_BR4_batch_read_tail_only(open_wal: OpenWal) -> None:
    wal = open_wal()
    for i in range(20):
        wal.append_for_topic("t", b"e%02d" % i + bytes(17))  # 20 bytes
    a = wal.batch_read_for_topic("t", 200)
    b = wal.batch_read_for_topic("t", 200)
    assert [e.offset for e in a] == list(range(10))
    assert [e.offset for e in b] == list(range(10, 20))


def test_BR5_batch_read_respects_entry_cap(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.batch_append_for_topic("t", [b"entry_%04d" % i for i in range(2000)])
    wal.batch_append_for_topic("t", [b"entry_%04d" % i for i in range(2000, 4000)])
    big = 2**62
    first = wal.batch_read_for_topic("t", big)
    assert data_of(first) == [b"entry_%04d" % i for i in range(2000)]
    second = wal.batch_read_for_topic("t", big)
    assert data_of(second) == [b"entry_%04d" % i for i in range(2000, 4000)]
    assert wal.batch_read_for_topic("t", big) == []


def test_BR6_batch_read_without_checkpoint(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.batch_append_for_topic("t", [b"item_0", b"item_1", b"item_2"])
    for _ in range(2):
        got = wal.batch_read_for_topic("t", 2**62, checkpoint=False)
        assert data_of(got) == [b"item_0", b"item_1", b"item_2"]
    assert len(wal.batch_read_for_topic("t", 2**62, checkpoint=True)) == 3
    assert wal.batch_read_for_topic("t", 2**62) == []


def test_BR7_batch_read_during_concurrent_writes(open_wal: OpenWal) -> None:
    wal = open_wal()
    seen: list[Entry] = []
    done = threading.Event()

    def small_writer() -> None:
        for i in range(100):
            wal.append_for_topic("t", b"small_%d" % i)

    def big_writer() -> None:
        for i in range(5):
            wal.append_for_topic("t", bytes([i]) * 6 * KIB)

    def reader() -> None:
        while not done.is_set() or wal.batch_read_for_topic("t", 1, checkpoint=False):
            seen.extend(wal.batch_read_for_topic("t", KIB))

    reader_thread = threading.Thread(target=reader)
    reader_thread.start()
    errors = run_threads([small_writer, big_writer])
    done.set()
    join_all([reader_thread])
    assert errors == []
    assert [e.offset for e in seen] == list(range(105))
    assert len({e.data for e in seen}) == 105


def test_BR8_concurrent_batch_reads_same_topic(open_wal: OpenWal) -> None:
    wal = open_wal()
    for i in range(500):
        wal.append_for_topic("t", b"e%03d" % i)
    results: list[list[Entry]] = [[] for _ in range(5)]

    def reader(k: int) -> Callable[[], None]:
        def run() -> None:
            while got := wal.batch_read_for_topic("t", 500):
                results[k].extend(got)

        return run

    assert run_threads([reader(k) for k in range(5)]) == []
    assert sum(len(r) for r in results) == 500
    assert sorted(e.offset for r in results for e in r) == list(range(500))


def test_BR9_batch_read_mixed_entry_sizes(open_wal: OpenWal) -> None:
    wal = open_wal()
    sizes = [
        10,
        1000,
        50,
        10000,
        100,
        50000,
        20,
        200000,
        30,
        10000,
        5,
        5000,
        15,
        100000,
        25,
        30000,
        40,
        15000,
        8,
        7500,
    ]
    for i, n in enumerate(sizes):
        wal.append_for_topic("t", bytes([i]) * n)
    got = [e for call in batch_drain(wal, "t", 60000) for e in call]
    assert [len(e.data) for e in got] == sizes
    assert [e.data[:1] for e in got] == [bytes([i]) for i in range(20)]


def test_BR10_batch_read_recovery_mid_read(open_wal: OpenWal) -> None:
    wal = open_wal()
    for i in range(50):
        wal.append_for_topic("t", b"recovery_%04d" % i)
    read: list[Entry] = []
    first = wal.batch_read_for_topic("t", 300)
    assert len(first) == 23  # 23 * 13 = 299 <= 300
    read += first
    wal.close()
    wal = open_wal()
    rest = wal.batch_read_for_topic("t", 10_000)
    assert rest == [Entry(b"recovery_%04d" % i, i) for i in range(23, 50)]


def test_BR11_batch_read_at_least_once(wal_dir: Path, backend_name: str, open_wal: OpenWal) -> None:
    # A batch read of >= persist_every entries persists; a smaller one does not (crash replays it).
    code = (
        "wal.batch_append_for_topic('big', [b'alo_%04d' % i for i in range(25)])\n"
        "wal.batch_append_for_topic('small', [b'alo_%04d' % i for i in range(25)])\n"
        "print(len(wal.batch_read_for_topic('big', 200)))\n"
        "print(len(wal.batch_read_for_topic('small', 32)))\n"
    )
    assert run_then_kill(wal_dir, backend_name, code, 5).split() == ["25", "4"]
    wal = open_wal(consistency=ALO(persist_every=5))
    assert wal.batch_read_for_topic("big", 1000) == []
    got = wal.batch_read_for_topic("small", 1000)
    assert [e.offset for e in got] == list(range(25))
    assert got[-1].data == b"alo_0024"


def test_BR12_batch_read_with_zeroed_headers(open_wal: OpenWal, wal_dir: Path) -> None:
    wal = open_wal()
    expected = [Entry(b"zeroed_%04d" % i, i) for i in range(20)]
    for e in expected:
        wal.append_for_topic("t", e.data)
    wal.close()
    path, pos = locate(wal_dir, b"zeroed_0010")
    patch(path, pos - ENTRY_HEADER_SIZE, zeros, ENTRY_HEADER_SIZE)
    wal = open_wal()
    try:
        first = wal.batch_read_for_topic("t", 10_000)
    except CorruptionError:
        first = []
    assert first in ([], expected[:10])  # never the damaged entry, never past it
    more, bad_offset = drain_until_corruption(wal, "t")
    assert first + more == expected[:10]
    assert bad_offset == 10
    with pytest.raises(CorruptionError):
        wal.batch_read_for_topic("t", 10_000)
    assert wal.topic_entry_count("t") == 10
    wal.seek("t", 11)
    assert wal.batch_read_for_topic("t", 10_000) == expected[11:]


def drain_until_corruption(wal: Walrus, topic: str) -> tuple[list[Entry], int | None]:
    out: list[Entry] = []
    with pytest.raises(CorruptionError) as info:
        while True:
            entry = wal.read_next(topic)
            assert entry is not None, "ran past the damaged entry"
            out.append(entry)
    return out, info.value.offset


@pytest.mark.parametrize("consumer", [None, "c"])
def test_BR13_interleaved_single_and_batch_reads(open_wal: OpenWal, consumer: str | None) -> None:
    wal = open_wal()
    for i in range(100):
        wal.append_for_topic("t", b"interleaved_%04d" % i)  # 16 bytes
    seen: list[Entry] = []
    while True:
        got = wal.batch_read_for_topic("t", 150, consumer=consumer)
        seen += got
        for _ in range(5):
            e = wal.read_next("t", consumer=consumer)
            if e is not None:
                seen.append(e)
        if not got:
            break
    assert seen == [Entry(b"interleaved_%04d" % i, i) for i in range(100)]


def test_BR14_batch_read_during_batch_writes(open_wal: OpenWal) -> None:
    wal = open_wal()
    seen: list[Entry] = []
    done = threading.Event()

    def writer(w: int) -> Callable[[], None]:
        def run() -> None:
            for b in range(10):
                wal.batch_append_for_topic("t", [b"%d_%d_%d" % (w, b, e) for e in range(20)])

        return run

    def reader() -> None:
        while not done.is_set() or wal.batch_read_for_topic("t", 1, checkpoint=False):
            seen.extend(wal.batch_read_for_topic("t", 2048))

    reader_thread = threading.Thread(target=reader)
    reader_thread.start()
    errors = run_threads([writer(w) for w in range(3)])
    done.set()
    join_all([reader_thread])
    assert errors == []
    assert [e.offset for e in seen] == list(range(600))
    data = data_of(seen)
    for w in range(3):
        for b in range(10):
            assert_contiguous(data, [b"%d_%d_%d" % (w, b, e) for e in range(20)])


@pytest.mark.parametrize(("budget", "n"), [(300, 3), (500, 5), (1, 1), (350, 3)])
def test_BR15_batch_read_exact_budget_boundary(open_wal: OpenWal, budget: int, n: int) -> None:
    wal = open_wal()
    for i in range(20):
        wal.append_for_topic("t", bytes([i]) * 100)
    got = wal.batch_read_for_topic("t", budget)
    assert got == [Entry(bytes([i]) * 100, i) for i in range(n)]


def test_BR16_rapid_fire_batch_reads(open_wal: OpenWal) -> None:
    wal = open_wal(consistency=ALO(persist_every=50))
    for i in range(1000):
        wal.append_for_topic("t", b"%06d" % i)
    calls = batch_drain(wal, "t", 64)
    assert [len(c) for c in calls] == [10] * 100
    assert [e.offset for c in calls for e in c] == list(range(1000))


def test_BR17_simple_deadlock_repro(open_wal: OpenWal) -> None:
    wal = open_wal()
    seen: list[Entry] = []
    lock = threading.Lock()

    def writer() -> None:
        for i in range(10):
            wal.append_for_topic("t", bytes([i]) * 20 * KIB)

    def batch_reader() -> None:
        for _ in range(20):
            got = wal.batch_read_for_topic("t", 10 * KIB)
            with lock:
                seen.extend(got)

    def next_reader() -> None:
        for _ in range(50):
            e = wal.read_next("t")
            if e is not None:
                with lock:
                    seen.append(e)

    assert run_threads([writer, batch_reader, next_reader]) == []
    seen += drain(wal, "t")
    assert sorted(e.offset for e in seen) == list(range(10))
    assert all(e.data == bytes([e.offset]) * 20 * KIB for e in seen)


def test_BR18_full_chaos_all_operations(open_wal: OpenWal) -> None:
    wal = open_wal(consistency=ALO(persist_every=10))
    seen: list[Entry] = []
    lock = threading.Lock()

    def single_writer(w: int) -> Callable[[], None]:
        def run() -> None:
            for i in range(50):
                wal.append_for_topic("t", b"s%d_%d" % (w, i))

        return run

    def batch_writer(w: int) -> Callable[[], None]:
        def run() -> None:
            for b in range(10):
                wal.batch_append_for_topic("t", [b"b%d_%d_%d" % (w, b, e) for e in range(10)])

        return run

    def next_reader() -> None:
        for _ in range(100):
            e = wal.read_next("t")
            if e is not None:
                with lock:
                    seen.append(e)

    def batch_reader() -> None:
        for _ in range(50):
            got = wal.batch_read_for_topic("t", 1024)
            with lock:
                seen.extend(got)

    targets = [
        single_writer(0),
        single_writer(1),
        batch_writer(0),
        batch_writer(1),
        next_reader,
        next_reader,
        batch_reader,
        batch_reader,
    ]
    assert run_threads(targets) == []
    seen += drain(wal, "t")
    assert sorted(e.offset for e in seen) == list(range(300))
    assert len({e.data for e in seen}) == 300


# =================================================================================================
# 10.5 configuration.rs
# =================================================================================================


def test_C1_strictly_at_once_consistency(open_wal: OpenWal) -> None:
    wal = open_wal(consistency=ReadConsistency.strictly_at_once())
    wal.append_for_topic("t", b"msg1")
    wal.append_for_topic("t", b"msg2")
    assert wal.read_next("t") == Entry(b"msg1", 0)
    wal.close()
    wal = open_wal(consistency=ReadConsistency.strictly_at_once())
    assert wal.read_next("t") == Entry(b"msg2", 1)


def test_C2_at_least_once_consistency(open_wal: OpenWal) -> None:
    wal = open_wal(consistency=ALO(persist_every=3))
    wal.append_for_topic("t", b"x")
    assert wal.read_next("t") == Entry(b"x", 0)


def test_C3_fsync_schedule(open_wal: OpenWal) -> None:
    wal = open_wal(fsync=FsyncSchedule.milliseconds(1000))
    wal.append_for_topic("t", b"fsync")
    assert wal.read_next("t") == Entry(b"fsync", 0)


def test_C4_fsync_schedule_sync_each(open_wal: OpenWal) -> None:
    wal = open_wal(fsync=FsyncSchedule.sync_each())
    for m in (b"m1", b"m2", b"m3"):
        wal.append_for_topic("t", m)
    assert read_data(wal, "t") == [b"m1", b"m2", b"m3"]
    assert wal.read_next("t") is None


def test_C5_constructors_one_instance_per_directory(open_wal: OpenWal) -> None:
    first = open_wal()
    with pytest.raises(DirectoryLockedError):
        open_wal(consistency=ALO(persist_every=5))
    with pytest.raises(DirectoryLockedError):
        open_wal(consistency=ALO(persist_every=2), fsync=FsyncSchedule.milliseconds(3000))
    assert first.append_for_topic("test", b"first") == 0
    first.close()
    second = open_wal(consistency=ALO(persist_every=5))
    assert second.append_for_topic("test", b"second") == 1
    second.close()
    third = open_wal(consistency=ALO(persist_every=2), fsync=FsyncSchedule.milliseconds(3000))
    assert third.append_for_topic("test", b"third") == 2
    assert read_data(third, "test") == [b"first", b"second", b"third"]


def test_C6_crash_recovery_strictly_at_once(open_wal: OpenWal) -> None:
    wal = open_wal()
    for i in range(1, 6):
        wal.append_for_topic("t", b"msg%d" % i)
    assert data_of([wal.read_next("t"), wal.read_next("t")]) == [b"msg1", b"msg2"]  # type: ignore[list-item]
    wal.close()
    wal = open_wal()
    assert read_data(wal, "t") == [b"msg3", b"msg4", b"msg5"]
    assert wal.read_next("t") is None


def test_C7_crash_recovery_at_least_once(
    wal_dir: Path, backend_name: str, open_wal: OpenWal
) -> None:
    first = (
        "for i in range(1, 8): wal.append_for_topic('t', b'msg%d' % i)\n"
        "print(wal.read_next('t').data.decode(), wal.read_next('t').data.decode())\n"
    )
    assert run_then_kill(wal_dir, backend_name, first, 3).split() == ["msg1", "msg2"]
    second = "print(*[wal.read_next('t').data.decode() for _ in range(3)])\n"
    # Two reads were not persisted: replayed; the third read of this session persists.
    assert run_then_kill(wal_dir, backend_name, second, 3).split() == ["msg1", "msg2", "msg3"]
    wal = open_wal(consistency=ALO(persist_every=3))
    assert wal.read_next("t") == Entry(b"msg4", 3)


def test_C8_multiple_topics_different_consistency_behavior(
    wal_dir: Path, backend_name: str, open_wal: OpenWal
) -> None:
    code = (
        "for d in (b'a1', b'b1', b'a2', b'b2'): wal.append_for_topic(d[:1].decode(), d)\n"
        "wal.read_next('a'); wal.read_next('b')\n"
    )
    run_then_kill(wal_dir, backend_name, code, 2)
    wal = open_wal(consistency=ALO(persist_every=2))
    assert wal.read_next("a") == Entry(b"a1", 0)
    assert wal.read_next("b") == Entry(b"b1", 0)


def test_C9_configuration_with_concurrent_operations(open_wal: OpenWal) -> None:
    wal = open_wal(fsync=FsyncSchedule.milliseconds(2000))
    writer_done = threading.Event()

    def writer() -> None:
        for i in range(10):
            wal.append_for_topic("t", b"concurrent_%d" % i)
        writer_done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen: list[Entry] = []
    while len(seen) < 10:
        e = wal.read_next("t")
        if e is not None:
            seen.append(e)
        elif writer_done.is_set() and wal.read_next("t", checkpoint=False) is None:
            break
    join_all([thread])
    seen += drain(wal, "t")
    assert seen == [Entry(b"concurrent_%d" % i, i) for i in range(10)]


def test_C10_persist_every_zero_clamping(
    wal_dir: Path, backend_name: str, open_wal: OpenWal
) -> None:
    code = (
        "wal.append_for_topic('t', b'msg1'); wal.append_for_topic('t', b'msg2')\n"
        "print(wal.read_next('t').data.decode())\n"
    )
    assert run_then_kill(wal_dir, backend_name, code, 0).split() == ["msg1"]
    wal = open_wal(consistency=ALO(persist_every=0))
    assert wal.read_next("t") == Entry(b"msg2", 1)


def test_C11_large_entries_with_fast_fsync(open_wal: OpenWal, wal_dir: Path) -> None:
    wal = open_wal(fsync=FsyncSchedule.milliseconds(1))
    wal.append_for_topic("t", b"\xaa" * 40 * KIB)
    wal.append_for_topic("t", b"\xbb" * 40 * KIB)
    assert len(data_files(wal_dir)) >= 2
    assert wal.read_next("t") == Entry(b"\xaa" * 40 * KIB, 0)
    assert wal.read_next("t") == Entry(b"\xbb" * 40 * KIB, 1)


def test_C12_many_kib_entries(open_wal: OpenWal) -> None:
    wal = open_wal(fsync=FsyncSchedule.milliseconds(1000))
    data = [(b"large_test_entry_%04d_" % i).ljust(KIB, b"x") for i in range(300)]
    for d in data:
        wal.append_for_topic("t", d)
    assert read_data(wal, "t") == data
    assert wal.read_next("t") is None


def test_C13_file_state_tracking(open_wal: OpenWal, wal_dir: Path) -> None:
    wal = open_wal()
    for i in range(50):
        wal.append_for_topic("t", b"msg_%d" % i)
    assert data_files(wal_dir)
    assert [wal.read_next("t") for _ in range(25)] == [Entry(b"msg_%d" % i, i) for i in range(25)]
    assert data_files(wal_dir)
    assert read_data(wal, "t") == [b"msg_%d" % i for i in range(25, 50)]
    assert wal.read_next("t") is None


def test_C14_key_based_instances_use_isolated_directories(wal_dir: Path, backend_name: str) -> None:
    kw: dict[str, Any] = {
        "data_dir": wal_dir,
        "backend": backend_name,
        "fsync": FsyncSchedule.no_fsync(),
        **GEOMETRY,
    }
    with Walrus(key="tenant-a", **kw) as a, Walrus(key="tenant b", **kw) as b:
        a.append_for_topic("t", b"a")
        b.append_for_topic("t", b"b")
        assert a.read_next("t") == Entry(b"a", 0)
        assert b.read_next("t") == Entry(b"b", 0)
    assert (wal_dir / "tenant-a").is_dir()
    assert (wal_dir / sanitize_key("tenant b")).is_dir()  # tenant_b~<hash>


def test_C15_key_based_instances_recover_independently(wal_dir: Path, backend_name: str) -> None:
    kw: dict[str, Any] = {
        "data_dir": wal_dir,
        "backend": backend_name,
        "fsync": FsyncSchedule.no_fsync(),
        **GEOMETRY,
    }
    with Walrus(key="tx", **kw) as tx:
        tx.append_for_topic("tx", b"a")
        tx.append_for_topic("tx", b"b")
    with Walrus(key="analytics", **kw) as an:
        an.append_for_topic("events", b"x")
    with Walrus(key="tx", **kw) as tx:
        assert read_data(tx, "tx") == [b"a", b"b"]
        assert tx.read_next("tx") is None
        assert tx.read_next("events") is None
    with Walrus(key="analytics", **kw) as an:
        assert an.read_next("tx") is None
        assert read_data(an, "events") == [b"x"]
        assert an.read_next("events") is None


def test_C16_key_names_are_sanitized_for_directories(wal_dir: Path, backend_name: str) -> None:
    with Walrus(
        data_dir=wal_dir,
        key="prod/payments::v1",
        backend=backend_name,
        fsync=FsyncSchedule.no_fsync(),
        **GEOMETRY,
    ) as wal:
        wal.append_for_topic("t", b"x")
    name = sanitize_key("prod/payments::v1")
    assert name.startswith("prod_payments__v1~")
    assert (wal_dir / name).is_dir()
    assert sorted(p.name for p in wal_dir.iterdir()) == [name]


# =================================================================================================
# 10.6 rollback_recovery.rs
# =================================================================================================


def test_R1_zeroed_header_is_reported_and_skippable(open_wal: OpenWal, wal_dir: Path) -> None:
    wal = open_wal()
    for i in range(5):
        wal.append_for_topic("t", b"entry_%d" % i)
    wal.close()
    path, pos = locate(wal_dir, b"entry_2")
    patch(path, pos - ENTRY_HEADER_SIZE, zeros, ENTRY_HEADER_SIZE)
    wal = open_wal()
    assert wal.read_next("t") == Entry(b"entry_0", 0)
    assert wal.read_next("t") == Entry(b"entry_1", 1)
    with pytest.raises(CorruptionError) as info:
        wal.read_next("t")
    assert info.value.offset == 2 and info.value.topic == "t"
    wal.seek("t", 3)
    assert read_data(wal, "t") == [b"entry_3", b"entry_4"]
    assert wal.append_for_topic("t", b"new_entry") == 5
    assert wal.read_next("t") == Entry(b"new_entry", 5)


def test_R2_concurrent_batches_all_succeed(open_wal: OpenWal) -> None:
    wal = open_wal()
    barrier = threading.Barrier(5, timeout=JOIN_TIMEOUT)

    def batcher(w: int) -> Callable[[], None]:
        def run() -> None:
            barrier.wait()
            assert len(wal.batch_append_for_topic("t", [bytes([w]) * 5 * KIB] * 3)) == 3

        return run

    assert run_threads([batcher(w) for w in range(5)]) == []
    got = data_of(drain(wal, "t"))
    assert len(got) == 15
    for i in range(0, 15, 3):
        assert got[i] == got[i + 1] == got[i + 2]
    assert sorted(g[0] for g in got[::3]) == list(range(5))


def test_R3_batches_with_block_spanning(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"\x08" * 8 * KIB)
    assert wal.read_next("t") == Entry(b"\x08" * 8 * KIB, 0)

    jobs = [batch_job(wal, "t", [bytes([w]) * 6 * KIB] * 3) for w in range(3)]
    assert run_threads(jobs) == []
    got = drain(wal, "t")
    assert [e.offset for e in got] == list(range(1, 10))
    data = data_of(got)
    for i in range(0, 9, 3):
        assert data[i] == data[i + 1] == data[i + 2]
    assert sorted(d[0] for d in data[::3]) == [0, 1, 2]


def test_R4_recovery_preserves_data_around_zeroed_header(open_wal: OpenWal, wal_dir: Path) -> None:
    wal = open_wal()
    big = b"BIGMARK-" + pattern(20 * KIB, 3)
    wal.append_for_topic("t", b"small_1")
    wal.append_for_topic("t", big)
    wal.append_for_topic("t", b"small_2")
    wal.close()
    path, pos = locate(wal_dir, b"BIGMARK-")
    patch(path, pos - ENTRY_HEADER_SIZE, zeros, ENTRY_HEADER_SIZE)
    wal = open_wal()
    assert wal.read_next("t") == Entry(b"small_1", 0)
    with pytest.raises(CorruptionError) as info:
        wal.read_next("t")
    assert info.value.offset == 1
    wal.seek("t", 2)
    assert wal.read_next("t") == Entry(b"small_2", 2)
    assert wal.append_for_topic("t", b"after") == 3
    assert wal.read_next("t") == Entry(b"after", 3)


# =================================================================================================
# 10.10 in-crate tests (entry counts)
# =================================================================================================


def test_W3_batch_read_scanning(open_wal: OpenWal) -> None:
    wal = open_wal()
    expected = [Entry(b"entry-%d" % i, i) for i in range(100)]
    for e in expected:
        wal.append_for_topic("t", e.data)
    budget = 0
    for i in range(100):
        budget += len(expected[i].data)
        got = wal.batch_read_for_topic("t", budget, checkpoint=False)
        assert got == expected[: i + 1]


def test_W4_entry_counts_decrement_on_checkpoint_and_survive_restart_strict(
    open_wal: OpenWal,
) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"1")
    wal.append_for_topic("t", b"2")
    wal.batch_append_for_topic("t", [b"3", b"4"])
    assert wal.topic_entry_count("t") == 4
    wal.read_next("t")
    assert wal.topic_entry_count("t") == 3
    wal.read_next("t", checkpoint=False)
    assert wal.topic_entry_count("t") == 3
    wal.close()
    wal = open_wal()
    assert wal.topic_entry_count("t") == 3
    assert len(wal.batch_read_for_topic("t", 16 * KIB)) == 3
    assert wal.topic_entry_count("t") == 0


def test_W5_entry_counts_increment_immediately_single_and_batch(open_wal: OpenWal) -> None:
    wal = open_wal()
    assert wal.topic_entry_count("t") == 0
    wal.append_for_topic("t", b"a")
    assert wal.topic_entry_count("t") == 1
    wal.append_for_topic("t", b"b")
    assert wal.topic_entry_count("t") == 2
    wal.batch_append_for_topic("t", [b"c", b"d", b"e"])
    assert wal.topic_entry_count("t") == 5


def test_W6_entry_counts_are_per_topic(open_wal: OpenWal) -> None:
    wal = open_wal()
    for t in ("t1", "t2"):
        wal.append_for_topic(t, b"x")
        wal.append_for_topic(t, b"y")
    assert wal.topic_entry_count("t1") == 2
    assert wal.topic_entry_count("t2") == 2
    assert wal.topic_entry_count("missing") == 0
    assert wal.topic_entry_counts() == {"t1": 2, "t2": 2}


def test_W7_entry_counts_decrement_on_read_next_checkpoint_only(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.batch_append_for_topic("t", [b"a", b"b", b"c"])
    wal.read_next("t", checkpoint=False)
    assert wal.topic_entry_count("t") == 3
    for n in (2, 1, 0):
        assert wal.read_next("t") is not None
        assert wal.topic_entry_count("t") == n
    assert wal.read_next("t") is None
    assert wal.topic_entry_count("t") == 0


def test_W8_entry_counts_decrement_on_batch_read_checkpoint_only(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.batch_append_for_topic("t", [b"%d" % i for i in range(5)])
    assert len(wal.batch_read_for_topic("t", 16 * KIB, False)) == 5
    assert wal.topic_entry_count("t") == 5
    assert len(wal.batch_read_for_topic("t", 16 * KIB, True)) == 5
    assert wal.topic_entry_count("t") == 0
    assert wal.batch_read_for_topic("t", 16 * KIB, True) == []
    assert wal.topic_entry_count("t") == 0


def test_W9_entry_counts_survive_restart_after_partial_read_next_strict(
    open_wal: OpenWal,
) -> None:
    wal = open_wal()
    wal.batch_append_for_topic("t", [b"%d" % i for i in range(4)])
    wal.read_next("t")
    wal.read_next("t")
    assert wal.topic_entry_count("t") == 2
    wal.close()
    wal = open_wal()
    assert wal.topic_entry_count("t") == 2


def test_W10_entry_counts_survive_restart_after_batch_read_strict(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.batch_append_for_topic("t", [b"%d" % i for i in range(3)])
    assert len(wal.batch_read_for_topic("t", 16 * KIB)) == 3
    assert wal.topic_entry_count("t") == 0
    wal.close()
    wal = open_wal()
    assert wal.topic_entry_count("t") == 0


def test_W11_entry_counts_survive_restart_with_multiple_topics_strict(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.batch_append_for_topic("t1", [b"a", b"b"])
    wal.batch_append_for_topic("t2", [b"a", b"b", b"c"])
    wal.read_next("t2")
    assert wal.topic_entry_counts() == {"t1": 2, "t2": 2}
    wal.close()
    wal = open_wal()
    assert wal.topic_entry_counts() == {"t1": 2, "t2": 2}


def test_W12_batch_append_over_limit_does_not_change_count(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"one")
    with pytest.raises(BatchTooLargeError):
        wal.batch_append_for_topic("t", [b"x"] * 2001)
    assert wal.topic_entry_count("t") == 1
    assert wal.append_for_topic("t", b"two") == 1


def test_W13_start_offset_batch_read_checkpoint_does_not_change_count(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.batch_append_for_topic("t", [b"a", b"b", b"c"])
    assert len(wal.batch_read_for_topic("t", 16 * KIB, True, 0)) == 3
    assert wal.topic_entry_count("t") == 3


def test_W14_entry_counts_are_accurate_in_process_at_least_once_mode(open_wal: OpenWal) -> None:
    wal = open_wal(consistency=ALO(persist_every=10_000))
    wal.append_for_topic("t", b"a")
    wal.batch_append_for_topic("t", [b"b", b"c"])
    assert wal.topic_entry_count("t") == 3
    wal.read_next("t")
    assert wal.topic_entry_count("t") == 2
    assert len(wal.batch_read_for_topic("t", 16 * KIB)) == 2
    assert wal.topic_entry_count("t") == 0
