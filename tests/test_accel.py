"""The compiled accelerator does exactly what the pure-Python loops do: the same checksums, the
same batch headers, runs and offset index pairs (so the same bytes on disk), and the same
entries read back, with damage stopping both at the same place.

Under ``CI=true`` the accelerator must be built (the checkout has a C compiler); elsewhere its
absence skips these tests with the reason. The behaviour suite as a whole runs on both paths
(tox: py311-pure sets ``WALRUS_PURE_PYTHON=1``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from crc32c import crc32c

from walrus_core import Walrus
from walrus_core import accel as accel_module
from walrus_core import reader as reader_module
from walrus_core import writer as writer_module
from walrus_core.format import BLOCK_HEADER_SIZE

try:
    import walrus_core._accel as compiled
except ImportError:  # pragma: no cover - depends on the build
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip(
        "the compiled accelerator is not built (no C compiler at install)", allow_module_level=True
    )

compiled.set_entry_type(__import__("walrus_core").Entry)
OpenWal = Callable[..., Walrus]


def test_crc32c_matches_the_crc32c_package() -> None:
    rng = random.Random(1)
    for size in [*range(0, 70), 255, 1024, 4099, 65536 + 3]:
        data = rng.randbytes(size)
        value = rng.getrandbits(32)
        assert compiled.crc32c(data, value) == crc32c(data, value), size
        assert compiled.crc32c(memoryview(data), 0) == crc32c(data), size
        # The table-driven code, which runs on CPUs without SSE4.2.
        assert compiled.crc32c_portable(data, value) == crc32c(data, value), size


@pytest.fixture(params=["compiled", "pure"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test once with the accelerator and once with the pure-Python loops."""
    if request.param == "pure":
        monkeypatch.setattr(writer_module, "accel", None)
        monkeypatch.setattr(reader_module, "accel", None)
    else:
        monkeypatch.setattr(writer_module, "accel", compiled)
        monkeypatch.setattr(reader_module, "accel", compiled)
    yield request.param


def _raw_blocks(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.glob("data-*.wal"))}


def _write_everything(wal: Walrus, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    written: list[bytes] = []
    for _ in range(40):
        batch = [
            rng.randbytes(rng.choice([0, 1, 15, 16, 100, 1000, 5000]))
            for _ in range(rng.randint(1, 300))
        ]
        if rng.random() < 0.3:
            batch = [memoryview(bytearray(p)) for p in batch]  # buffers that are not bytes
        wal.batch_append_for_topic("t", batch)
        written += [bytes(p) for p in batch]
        wal.append_for_topic("t", b"single")
        written.append(b"single")
    return written


def test_both_paths_write_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend_name: str
) -> None:
    """The same appends with the same block nonces give byte-identical data files."""
    images = []
    for use in (compiled, None):
        monkeypatch.setattr(writer_module, "accel", use)
        # Seal records carry the seal time: the same clock for both runs.
        monkeypatch.setattr("walrus_core.writer.time.time", lambda: 1_700_000_000.0)
        counter = iter(range(1, 1 << 30))
        monkeypatch.setattr(
            "walrus_core.allocator.secrets.randbits", lambda bits, c=counter: next(c)
        )
        root = tmp_path / ("c" if use else "p")
        with Walrus(
            root, backend=backend_name, block_size=65536, blocks_per_file=4, auto_reclaim=False
        ) as wal:
            _write_everything(wal, seed=3)
            index_pairs = [
                (list(b.index.offsets), list(b.index.positions)) for b in wal._topics["t"].blocks
            ]
        images.append((_raw_blocks(root), index_pairs))
    assert images[0][0].keys() == images[1][0].keys()
    for name in images[0][0]:
        assert images[0][0][name] == images[1][0][name], name
    assert images[0][1] == images[1][1]


def test_both_paths_read_the_same_entries(open_wal: OpenWal, path: str) -> None:
    wal = open_wal(block_size=65536, blocks_per_file=4, auto_reclaim=False)
    written = _write_everything(wal, seed=5)
    got = []
    while True:
        batch = wal.batch_read_for_topic("t", 1 << 16)
        if not batch:
            break
        got += batch
    assert [e.offset for e in got] == list(range(len(written)))
    assert [e.data for e in got] == written
    assert all(type(e.data) is bytes for e in got)


def test_decode_run_stops_where_the_python_loop_does() -> None:
    """Random damage in a buffer of valid entries: the compiled run returns the same entries
    and stops at the same place as the pure-Python one would (it validates the same fields)."""
    from walrus_core.format import pack_entry_header

    rng = random.Random(11)
    salt, tag = 0x1234ABCD, 0xBEEF
    for trial in range(300):
        pos = BLOCK_HEADER_SIZE
        buf = bytearray()
        payloads = []
        for offset in range(20):
            payload = rng.randbytes(rng.choice([0, 3, 40, 300]))
            buf += pack_entry_header(payload, salt, tag, pos, offset, 0) + payload
            payloads.append(payload)
            pos += 16 + len(payload)
        if trial:  # trial 0: undamaged
            at = rng.randrange(len(buf))
            buf[at] ^= 1 << rng.randrange(8)
        data = bytes(buf)
        out: list = []
        rel, offset, total, full = compiled.decode_run(
            data, 0, BLOCK_HEADER_SIZE, 0, 20, salt, tag, 1 << 30, 0, out
        )
        assert not full
        # Every entry returned is exactly what was written at its offset...
        assert [(e.offset, e.data) for e in out] == [(i, payloads[i]) for i in range(len(out))]
        # ... and the run stops at the first entry that no longer validates.
        expected = 0
        probe = BLOCK_HEADER_SIZE
        for i, payload in enumerate(payloads):
            chunk = data[probe - BLOCK_HEADER_SIZE : probe - BLOCK_HEADER_SIZE + 16 + len(payload)]
            if chunk != pack_entry_header(payload, salt, tag, probe, i, 0) + payload:
                break
            expected += 1
            probe += 16 + len(payload)
        assert len(out) == expected, trial
        assert offset == expected and total == sum(len(p) for p in payloads[:expected])
        assert rel == probe - BLOCK_HEADER_SIZE  # just past the last entry returned


def test_the_accelerator_is_in_use_unless_disabled() -> None:
    if os.environ.get("WALRUS_PURE_PYTHON", "") not in ("", "0"):
        assert accel_module.accel is None
    else:
        assert accel_module.accel is compiled


def test_measure_matches_the_python_comprehension() -> None:
    import array

    from walrus_core.api import _as_payload

    items = [b"", b"abc", bytearray(b"xy"), memoryview(b"12345"), array.array("I", [1, 2, 3])]
    payloads, total, longest = compiled.measure(items, _as_payload)
    expected = [(i, len(i)) if type(i) is bytes else _as_payload(i) for i in items]
    assert [(bytes(p), n) for p, n in payloads] == [(bytes(p), n) for p, n in expected]
    assert payloads[1][0] is items[1]  # bytes are taken as they are, not copied
    assert total == sum(n for _p, n in expected) == 22 and longest == 12
    assert compiled.measure([], _as_payload) == ([], 0, 0)
    for bad in ("text", 5, None):
        with pytest.raises(TypeError):
            compiled.measure([b"ok", bad], _as_payload)


def test_hostile_arguments_raise_instead_of_crashing() -> None:
    from walrus_core.api import _as_payload

    with pytest.raises(ValueError):
        compiled.encode_run(
            [(b"x", 1)], -(1 << 40), 7, 9, 1024, 0, 1 << 20, 0, 0, 0, 4096, 16, [], [], []
        )

    class Shrinking(bytearray):
        """Empties the batch's item list while its payload is being measured."""

        items: list[object] = []

        @property  # type: ignore[misc]
        def __class__(self) -> type:  # what isinstance() looks at
            Shrinking.items.clear()
            return Shrinking

    items: list[object] = [b"first", Shrinking(b"zz"), *[b"x"] * 100]
    Shrinking.items = items
    payloads, total, _longest = compiled.measure(items, _as_payload)
    assert len(payloads) == 102 and total == 5 + 2 + 100


def test_max_bytes_beyond_64_bits_means_no_limit(open_wal: OpenWal, path: str) -> None:
    wal = open_wal(auto_reclaim=False)
    wal.batch_append_for_topic("t", [b"0123456789"] * 20)
    for huge in (2**64, 2**64 + 7, 10**30):
        got = wal.batch_read_for_topic("t", huge, start_offset=0)
        assert len(got) == 20, (huge, path)
