"""Regression tests for the trust defects: one test (or one parametrized family) per defect
class, each asserting the *correct* behaviour.

The invariant behind all of them: a read returns exactly the bytes appended at that offset of
that topic, or raises ``CorruptionError``; an append that returned is never lost to a crash
(and one that raised never turns up after it).

The tests are written against the public API and the raw files only, so they keep working when
the on-disk format changes: entries are located by searching for their payloads (stored
verbatim), block headers only as the ``walrus_core.format.BLOCK_HEADER_SIZE`` bytes at a
multiple of ``block_size``, and payloads that embed well-formed entries copy them out of a
scratch log (``helpers.trust.well_formed_entries``). Crashes are real: a child process that
kills itself (or is killed) with SIGKILL.

Defect classes (numbers as in the report that found them):

1. bytes embedded in a payload are taken for entries (after damage, after a killed large
   append);
2. a damaged tail block header lets another topic inherit its stale entries; a walrus.json with
   another valid geometry mixes topics;
3. a strictly_at_once cursor stored past the recovered end skips new entries after a crash;
4. a new consumer inherits the cursor of a damaged cursor slot;
5. walrus.json missing with one-block data files: the log comes back empty;
8. a damaged first block header makes the topic start later (its entries vanish);
9. ENOSPC while creating a directory escapes as a bare OSError;
11. reopen after a crash reads whole blocks instead of what was written;
12. an append that raised (the bytes landed, the sync failed) is back after a crash;
14. a log with more data files than descriptors cannot be reopened.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from helpers import trust
from helpers.trust import Loc, probe_offsets
from walrus_faults import FaultLayer, FaultPlan

from walrus_core import (
    CorruptionError,
    FsyncSchedule,
    OffsetOutOfRangeError,
    ReadConsistency,
    StorageError,
    Walrus,
    WalrusError,
)
from walrus_core import format as fmt
from walrus_core.plugins import BackendRegistry

KIB = 1024
MIB = 1024 * KIB


def _open(root: Path, backend: str, **kw: Any) -> Walrus:
    kw.setdefault("fsync", FsyncSchedule.no_fsync())
    return Walrus(data_dir=root, backend=backend, **kw)


def _build(
    root: Path,
    backend: str,
    ops: list[dict[str, Any]],
    geometry: dict[str, int],
    crashed: bool,
) -> None:
    """Run ``ops`` on a new directory; close cleanly, or SIGKILL a child after the last one
    returned (tail blocks stay unsealed)."""
    if crashed:
        trust.run_child(trust.OPS_CODE, data_dir=root, backend=backend, geometry=geometry, ops=ops)
    else:
        with _open(root, backend, **geometry) as wal:
            trust.apply_ops(wal, ops)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


FLAVOURS = pytest.mark.parametrize("crashed", [False, True], ids=["clean", "crashed"])


# --- 1a: damage next to a payload that embeds well-formed entries ---------------------------

EMB = "emb"
EMB_K = 3
EMB_GEOMETRY = {"block_size": 16 * KIB, "blocks_per_file": 4}


def _emb_payloads(backend: str) -> list[bytes]:
    chunk = trust.well_formed_entries(backend, EMB, 16)
    payloads = [b"<emb#%d>" % i + b"real-entry-%d|" % i + b"r" * 40 for i in range(8)]
    payloads[EMB_K] = b"<emb#3>|" + chunk + b"|</emb#3>"
    return payloads


@pytest.fixture(scope="module")
def emb_pristine(
    tmp_path_factory: pytest.TempPathFactory, backend_name: str
) -> dict[bool, tuple[Path, list[bytes], Loc, int]]:
    """Both flavours of the log: entries 0..7 of topic "emb" as single appends, entry 3's
    payload embedding real entries of "emb" at offsets 0..15 (from a scratch log)."""
    out = {}
    payloads = _emb_payloads(backend_name)
    for crashed in (False, True):
        root = tmp_path_factory.mktemp("emb") / ("crashed" if crashed else "clean")
        _build(
            root,
            backend_name,
            [trust.single(EMB, p) for p in payloads],
            EMB_GEOMETRY,
            crashed,
        )
        files = trust.read_data_files(root)
        before = trust.locate_one(files, payloads[EMB_K - 1])
        loc = trust.locate_one(files, payloads[EMB_K])
        after = trust.locate_one(files, payloads[EMB_K + 1])
        assert before.file == loc.file == after.file, "precondition: entries 2..4 in one block"
        overhead = loc.pos - before.end  # the bytes between two payloads: entry 3's header
        assert 0 < overhead <= 256 and after.pos - loc.end == overhead, "precondition: layout"
        out[crashed] = (root, payloads, loc, overhead)
    return out


def _emb_damages(loc: Loc, overhead: int) -> list[tuple[str, list[tuple[int, int]]]]:
    """(name, [(file position, xor mask)]) for entry 3 at ``loc``: its payload bytes, or the
    ``overhead`` bytes just before the payload (its header)."""
    cases: list[tuple[str, list[tuple[int, int]]]] = [
        ("payload-first-byte", [(loc.pos, 0x01)]),
        ("payload-prefix", [(loc.pos + 3, 0x20)]),
        ("payload-last-byte", [(loc.end - 1, 0x80)]),
        ("header-all-bytes", [(loc.pos - j, 0xFF) for j in range(1, overhead + 1)]),
    ]
    cases += [
        (f"header-byte-{overhead - j}", [(loc.pos - j, 0x04)]) for j in range(1, overhead + 1)
    ]
    return cases


@FLAVOURS
@pytest.mark.parametrize("where", ["payload", "header"])
def test_seek_past_damage_never_returns_embedded_bytes(
    emb_pristine: dict[bool, tuple[Path, list[bytes], Loc, int]],
    backend_name: str,
    tmp_path: Path,
    crashed: bool,
    where: str,
) -> None:
    """Defect 1a. Entry 3's payload holds real, well-formed entries of the same topic for the
    next offsets. Damage entry 3 (its payload bytes, or separately each of the bytes just
    before its payload, i.e. its header): after reopening, ``seek(topic, 4)`` then
    ``read_next`` returns exactly entry 4's bytes (or raises CorruptionError), never bytes
    embedded in entry 3; so do start_offset reads of every offset; and the topic never holds
    more than the 8 entries appended."""
    root, payloads, loc, overhead = emb_pristine[crashed]
    known = {p: f"entry {i}" for i, p in enumerate(payloads)}
    failures = []
    for n, (name, flips) in enumerate(_emb_damages(loc, overhead)):
        if not name.startswith(where):
            continue
        case = _copy(root, tmp_path / f"case-{n}")
        for at, mask in flips:
            trust.flip(case / loc.file, at, mask)
        with _open(case, backend_name) as wal:
            wal.seek(EMB, EMB_K + 1)
            got: list[str] = []
            for want in range(EMB_K + 1, len(payloads) + 3):
                try:
                    e = wal.read_next(EMB)
                except CorruptionError:
                    got.append(f"{want}:CorruptionError")
                    wal.seek(EMB, want + 1)
                    continue
                if e is None:
                    break
                if e.offset != want or e.offset >= len(payloads) or e.data != payloads[e.offset]:
                    failures.append(
                        f"{name}: read_next after seek({EMB_K + 1}) returned offset {e.offset} "
                        f"with {trust.describe(e.data, known)}"
                    )
                    break
                got.append(f"{want}:ok")
            p = probe_offsets(wal, EMB, payloads, known)
            if p.wrong:
                failures.append(f"{name}: {trust.summary(p.wrong)}")
            if p.missing:
                failures.append(f"{name}: intact offsets {p.missing} vanished")
        shutil.rmtree(case)
    assert not failures, "\n".join(failures)


# --- 1b: SIGKILL during a large append whose payload embeds well-formed entries -------------

BIG = "big"
BIG_SIZE = 64 * MIB
BIG_GEOMETRY = {"block_size": 1 * MIB, "blocks_per_file": 4}
BIG_ROUNDS = 12 if trust.SLOW else 4

_BIG_WRITER = r"""
import hashlib, time
chunk = bytes.fromhex(cfg["chunk"])
body = (chunk + bytes(range(256)) * 1024) * (cfg["size"] // (len(chunk) + 262144) + 1)
body = body[: cfg["size"]]
for i in range(cfg["iterations"]):
    say(f"B s {i}")
    say(f"A {wal.append_for_topic('big', b'<big-small#%d>' % i)}")
    payload = b"<big#%d>" % i + body[16:]
    say(f"B b {i}")  # the parent's clock starts here: right before the write
    t0 = time.perf_counter()
    off = wal.append_for_topic("big", payload)
    say(f"A {off} {time.perf_counter() - t0:.6f}")
say("DONE")
time.sleep(60)
"""


@functools.lru_cache(maxsize=4)
def _big_expected(chunk: bytes, i: int) -> bytes:
    body = (chunk + bytes(range(256)) * 1024) * (BIG_SIZE // (len(chunk) + 262144) + 1)
    return b"<big#%d>" % i + body[16:BIG_SIZE]


@pytest.fixture
def ram_path(tmp_path: Path) -> Iterator[Path]:
    """Where the tests writing hundreds of MiB put their logs: RAM when possible."""
    with trust.ram_dir(tmp_path / "ram", 2 << 30) as path:
        yield path


def test_killed_large_append_never_yields_embedded_entries(
    ram_path: Path, backend_name: str
) -> None:
    """Defect 1b. A child appends, alternately, a small entry and a 64 MiB entry (a block of
    its own, 1 MiB blocks) whose payload embeds, every 256 KiB, real well-formed entries of the
    same topic for offsets 0..63; the parent SIGKILLs it at a random point of one of the large
    appends (a random fraction of the previous large append's duration after it starts),
    several times (fresh directory each time). After reopening,
    the topic holds exactly the acknowledged entries, plus at most the large one in flight
    whole: never an extra entry, never embedded bytes."""
    chunk = trust.well_formed_entries(backend_name, BIG, 64)
    rng = random.Random(20240611)
    failures = []
    for rnd in range(BIG_ROUNDS):
        root = ram_path / f"round-{rnd}"
        kill_at = rng.randint(1, 2)
        fraction = rng.uniform(0.05, 0.9)  # of the previous large append's duration
        delay = 0.0
        cfg = {
            "data_dir": str(root),
            "backend": backend_name,
            "geometry": BIG_GEOMETRY,
            "code": _BIG_WRITER,
            "chunk": chunk.hex(),
            "size": BIG_SIZE,
            "iterations": 3,
        }
        proc = subprocess.Popen(
            trust.child_argv(cfg), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        acked: dict[int, bytes] = {}
        in_flight: bytes | None = None
        timer = threading.Timer(120, proc.kill)  # safety net for a stuck child
        timer.start()
        try:
            assert proc.stdout is not None
            killed = False
            last_duration = 0.1
            for line in proc.stdout:  # after the kill: what it printed before it died
                kind, *rest = line.split()
                if kind == "B":
                    i = int(rest[1])
                    in_flight = b"<big-small#%d>" % i if rest[0] == "s" else _big_expected(chunk, i)
                    if rest[0] == "b" and i == kill_at and not killed:
                        time.sleep(delay := fraction * last_duration)
                        proc.send_signal(signal.SIGKILL)
                        killed = True
                elif kind == "A":
                    assert in_flight is not None
                    acked[int(rest[0])] = in_flight
                    in_flight = None
                    if len(rest) > 1:
                        last_duration = float(rest[1])
                elif kind == "DONE" and not killed:
                    proc.send_signal(signal.SIGKILL)
                    killed = True
        finally:
            timer.cancel()
            proc.kill()
            _, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, err[-2000:]
        n = len(acked)
        assert sorted(acked) == list(range(n)), f"round {rnd}: acknowledged offsets {sorted(acked)}"
        expected = [acked[i] for i in range(n)]
        with _open(root, backend_name) as wal:
            whole = [*expected, in_flight] if in_flight is not None else expected
            p = probe_offsets(wal, BIG, whole)
        where = f"round {rnd} (SIGKILL {delay * 1000:.0f} ms into large append {kill_at})"
        if p.wrong:
            failures.append(
                f"{where}: {n} acknowledged, topic holds {p.end}: {trust.summary(p.wrong, 2)}"
            )
        lost = [o for o in range(n) if o not in p.ok]
        if lost:
            failures.append(f"{where}: acknowledged entries {lost} lost or damaged")
        if n in p.corrupt:
            failures.append(f"{where}: the entry in flight is kept damaged, not whole or absent")
        shutil.rmtree(root)
    assert not failures, "\n".join(failures)


# --- 2a: a damaged tail block header and the slot's next occupant -----------------------------

HDR_GEOMETRY = {"block_size": 8 * KIB, "blocks_per_file": 4}


def _victim_payload(i: int) -> bytes:
    return (b"<victim#%d>" % i).ljust(150, b"v")


def _newcomer_payload(i: int) -> bytes:
    return (b"<newcomer#%d>" % i).ljust(150, b"n")


def _bystander_payload(i: int) -> bytes:
    return (b"<bystander#%d>" % i).ljust(100, b"b")


@pytest.mark.parametrize("rel", [0, 5, 9, 17])
def test_damaged_tail_block_header_never_lends_entries_to_another_topic(
    tmp_path: Path, backend_name: str, rel: int
) -> None:
    """Defect 2a ("a topic that appended 3 entries comes back with 20"). Topic "victim" has
    20 entries in the last block of the log; one bit of that block's header (byte ``rel``) is
    flipped. A child reopens, appends 3 entries (same sizes as the victim's) to a new topic
    and one to "bystander", and is killed -9. After reopening: "newcomer" holds exactly its 3
    entries, "bystander" exactly its 6, and every offset of "victim" reads back exactly or
    raises CorruptionError (it does not vanish, and none of its entries turns up elsewhere)."""
    root = tmp_path / "wal"
    ops = [trust.single("bystander", _bystander_payload(i)) for i in range(5)]
    ops += [trust.single("victim", _victim_payload(i)) for i in range(20)]
    _build(root, backend_name, ops, HDR_GEOMETRY, crashed=False)
    files = trust.read_data_files(root)
    first, last = (trust.locate_one(files, _victim_payload(i)) for i in (0, 19))
    bs = HDR_GEOMETRY["block_size"]
    start = trust.block_start(last, bs)
    assert first.file == last.file and trust.block_start(first, bs) == start, (
        "precondition: the victim's entries fill one block"
    )
    assert max(len(r) for r in files.values()) > 0
    assert rel < fmt.BLOCK_HEADER_SIZE
    trust.flip(root / last.file, start + rel, 0x01)
    trust.run_child(
        trust.OPS_CODE,
        data_dir=root,
        backend=backend_name,
        geometry=HDR_GEOMETRY,
        ops=[trust.single("newcomer", _newcomer_payload(i)) for i in range(3)]
        + [trust.single("bystander", _bystander_payload(5))],
    )
    known = {_victim_payload(i): f"victim entry {i}" for i in range(20)}
    known |= {_bystander_payload(i): f"bystander entry {i}" for i in range(6)}
    with _open(root, backend_name) as wal:
        newcomer = probe_offsets(wal, "newcomer", [_newcomer_payload(i) for i in range(3)], known)
        bystander = probe_offsets(
            wal, "bystander", [_bystander_payload(i) for i in range(6)], known
        )
        victim = probe_offsets(wal, "victim", [_victim_payload(i) for i in range(20)], known)
    assert not newcomer.wrong and newcomer.ok == [0, 1, 2], (
        f"newcomer (appended 3 entries) comes back with {newcomer.end}: "
        + trust.summary(newcomer.wrong, 2)
    )
    assert not bystander.wrong and bystander.ok == list(range(6)), (
        f"bystander: {bystander.wrong}, missing {bystander.missing}, corrupt {bystander.corrupt}"
    )
    assert not victim.wrong, f"victim: {victim.wrong}"
    assert not victim.missing, (
        f"victim (one bit flipped in its block header): offsets {victim.missing} vanished "
        f"(neither returned nor CorruptionError); {len(victim.ok)} exact, "
        f"{len(victim.corrupt)} CorruptionError"
    )


# --- 2b: walrus.json with another valid geometry -----------------------------------------------

GEO_GEOMETRY = {"block_size": 8 * KIB, "blocks_per_file": 4}
GEO_TOPICS = ("geo-a", "geo-b", "geo-c")


def _geo_ops() -> tuple[list[dict[str, Any]], dict[str, list[bytes]]]:
    rng = random.Random("geometry")
    data: dict[str, list[bytes]] = {t: [] for t in GEO_TOPICS}
    ops = []
    for _ in range(60):
        topic = rng.choice(GEO_TOPICS)
        size = rng.choice((60, 200, 700, 1500))
        p = (f"<{topic}#{len(data[topic])}>".encode()).ljust(size, b".")
        data[topic].append(p)
        ops.append(trust.single(topic, p))
    return ops, data


@FLAVOURS
@pytest.mark.parametrize("factor", [2.0, 0.5], ids=["double", "half"])
def test_rewritten_geometry_never_mixes_topics(
    tmp_path: Path, backend_name: str, crashed: bool, factor: float
) -> None:
    """Defect 2b. walrus.json is rewritten with another valid block_size (twice or half the
    real one). After reopening, every offset of every topic reads back exactly or raises
    CorruptionError: never another topic's entry, and no entry vanishes."""
    root = tmp_path / "wal"
    ops, data = _geo_ops()
    _build(root, backend_name, ops, GEO_GEOMETRY, crashed)
    assert len(trust.data_file_names(root)) >= 2, "precondition: several data files"
    trust.rewrite_meta(root, block_size=int(GEO_GEOMETRY["block_size"] * factor))
    known = {p: f"{t} entry {i}" for t, ps in data.items() for i, p in enumerate(ps)}
    problems = []
    with _open(root, backend_name) as wal:
        for topic in GEO_TOPICS:
            p = probe_offsets(wal, topic, data[topic], known)
            if p.wrong:
                problems.append(f"{topic}: {trust.summary(p.wrong, 3)}")
            if p.missing:
                problems.append(f"{topic}: offsets {p.missing} vanished")
    assert not problems, "\n".join(problems)


# --- 3: a strict cursor stored past the recovered end ------------------------------------------

CUR_GEOMETRY = {"block_size": 4 * KIB, "blocks_per_file": 4}


def test_strict_cursor_past_recovered_end_never_skips_new_entries(
    tmp_path: Path, backend_name: str
) -> None:
    """Defect 3. A strictly_at_once consumer consumed 10 entries, then the data files went
    back to a snapshot holding 5 (cursors.dat kept: the cursor says 10). Reopened in a child:
    the consumer continues at 5; 5 new entries are appended; read_next returns offset 5 with
    the NEW bytes; the child is killed -9. Reopened again: read_next returns offset 6 (the new
    entry), not the stale offset 10 (which would skip entries it never received)."""
    root = tmp_path / "wal"
    old = [b"<old#%d>" % i for i in range(10)]
    new = [b"<new#%d>" % i for i in range(5, 10)]
    strict = ReadConsistency.strictly_at_once()
    with _open(root, backend_name, consistency=strict, **CUR_GEOMETRY) as wal:
        for p in old[:5]:
            wal.append_for_topic("cur", p)
    snapshot = trust.read_data_files(root)
    with _open(root, backend_name, consistency=strict, **CUR_GEOMETRY) as wal:
        for p in old[5:]:
            wal.append_for_topic("cur", p)
        for i in range(10):
            e = wal.read_next("cur")
            assert e is not None and e.data == old[i]
    for name in trust.data_file_names(root):
        os.remove(root / name)
    for name, raw in snapshot.items():
        (root / name).write_bytes(raw)
    out = trust.run_child(
        "say(f'LEFT {wal.topic_entry_count(\"cur\")}')\n"
        "for i in range(5, 10):\n"
        '    say(f\'A {wal.append_for_topic("cur", b"<new#%d>" % i)}\')\n'
        "e = wal.read_next('cur')\n"
        "say(f'R {e.offset} {e.data.hex()}')\n",
        data_dir=root,
        backend=backend_name,
        geometry=CUR_GEOMETRY,
    )
    lines = out.split("\n")
    assert lines[0] == "LEFT 0", f"the consumer does not continue at the recovered end: {out}"
    assert lines[1:6] == [f"A {i}" for i in range(5, 10)], out
    assert lines[6] == f"R 5 {new[0].hex()}", f"read_next after the reopen: {lines[6]}"
    with _open(root, backend_name, consistency=strict, **CUR_GEOMETRY) as wal:
        e = wal.read_next("cur")
    assert e is not None, "read_next after the crash returned None: entries 6..9 skipped"
    assert (e.offset, e.data) == (6, new[1]), (
        f"read_next after the crash returned offset {e.offset} ({e.data!r}); the consumer had "
        f"received up to offset 5, so it must get 6 (the stale cursor said 10)"
    )


# --- 4: a damaged cursor slot and a new consumer -------------------------------------------------


def test_new_consumer_never_inherits_a_damaged_cursor_slot(
    tmp_path: Path, backend_name: str
) -> None:
    """Defect 4. Consumer "old-consumer" read 7 entries (its slot is slot 0 of cursors.dat);
    one byte of the names part of that slot is damaged. Reopen: a NEW consumer reads 1 entry;
    close; reopen: the new consumer is at offset 1 (not the damaged slot's 7), and the damaged
    consumer replays from 0 with a WARNING saying so."""
    root = tmp_path / "wal"
    payloads = [b"<ct#%d>" % i for i in range(10)]
    strict = ReadConsistency.strictly_at_once()
    with _open(root, backend_name, consistency=strict, **CUR_GEOMETRY) as wal:
        for p in payloads:
            wal.append_for_topic("ct", p)
        for _ in range(7):
            assert wal.read_next("ct", consumer="old-consumer") is not None
    cursors = root / fmt.CURSORS_NAME
    slot0 = cursors.read_bytes()[: fmt.CURSOR_SLOT_SIZE]
    at = slot0.find(b"old-consumer")
    assert at > 0, "precondition: slot 0 holds the old consumer's name"
    trust.flip(cursors, at + 4, 0x01)
    with (
        trust.captured_warnings() as records,
        _open(root, backend_name, consistency=strict, **CUR_GEOMETRY) as wal,
    ):
        old_pos = 10 - wal.topic_entry_count("ct", consumer="old-consumer")
        e = wal.read_next("ct", consumer="fresh")
        assert e is not None and (e.offset, e.data) == (0, payloads[0])
    assert old_pos == 0, f"the damaged consumer resumed at {old_pos}, not at 0"
    assert any(r.levelno >= logging.WARNING for r in records), "no WARNING about the damage"
    with _open(root, backend_name, consistency=strict, **CUR_GEOMETRY) as wal:
        fresh_pos = 10 - wal.topic_entry_count("ct", consumer="fresh")
        old_again = 10 - wal.topic_entry_count("ct", consumer="old-consumer")
    assert fresh_pos == 1, (
        f"the new consumer (read 1 entry) is at offset {fresh_pos} after a reopen: it "
        f"inherited the damaged slot's cursor"
    )
    assert old_again == 0, f"the damaged consumer is at {old_again} after the second reopen"


# --- 5: walrus.json missing, one block per data file -----------------------------------------


@pytest.mark.parametrize("hint", [None, 8 * KIB], ids=["default-geometry", "other-block-size"])
def test_missing_meta_with_one_block_files_keeps_every_entry(
    tmp_path: Path, backend_name: str, hint: int | None
) -> None:
    """Defect 5. A log with blocks_per_file=1 (every data file holds one block) loses its
    walrus.json. Reopened (with the default geometry, or another block size), every entry
    reads back exactly: the log does not come back empty."""
    root = tmp_path / "wal"
    geometry = {"block_size": 4 * KIB, "blocks_per_file": 1}
    data = {t: [(f"<{t}#{i}>".encode()).ljust(900, b"m") for i in range(12)] for t in "xy"}
    ops = [trust.single(t, data[t][i]) for i in range(12) for t in "xy"]
    _build(root, backend_name, ops, geometry, crashed=False)
    assert len(trust.data_file_names(root)) >= 4, "precondition: several one-block files"
    os.remove(root / fmt.META_NAME)
    kw = {} if hint is None else {"block_size": hint}
    with _open(root, backend_name, **kw) as wal:
        found = {t: probe_offsets(wal, t, data[t]) for t in data}
    for t, p in found.items():
        assert not p.wrong, p.wrong
        assert p.ok == list(range(12)), (
            f"topic {t!r}: {len(p.ok)} of 12 entries readable after walrus.json went missing "
            f"(missing {p.missing}, corrupt {p.corrupt})"
        )


# --- 8: a damaged first block header ---------------------------------------------------------


@pytest.mark.parametrize("damage", ["bit-flip", "zeroed"])
def test_damaged_first_block_header_never_hides_its_entries(
    tmp_path: Path, backend_name: str, damage: str
) -> None:
    """Defect 8. The first block header of a topic with several blocks is damaged (one bit
    flipped, or the whole header region zeroed). Its entries must not silently vanish:
    ``seek(topic, 0)`` does not raise OffsetOutOfRangeError; read_next from 0 returns exact
    bytes or raises CorruptionError (then seek past it) up to the end; start_offset=0 reads
    likewise; the later blocks' entries are all there."""
    root = tmp_path / "wal"
    geometry = {"block_size": 4 * KIB, "blocks_per_file": 8}
    payloads = [(b"<multi#%d>" % i).ljust(300, b"z") for i in range(30)]
    _build(root, backend_name, [trust.single("multi", p) for p in payloads], geometry, False)
    files = trust.read_data_files(root)
    locs = [trust.locate_one(files, p) for p in payloads]
    first = trust.block_start(locs[0], geometry["block_size"])
    in_first = [
        i
        for i, loc in enumerate(locs)
        if loc.file == locs[0].file and loc.pos < first + geometry["block_size"]
    ]
    assert len(in_first) < len(payloads), "precondition: the topic has several blocks"
    path = root / locs[0].file
    if damage == "bit-flip":
        trust.flip(path, first + 1, 0x02)
    else:
        trust.overwrite(path, first, bytes(fmt.BLOCK_HEADER_SIZE))
    with _open(root, backend_name) as wal:
        try:
            wal.seek("multi", 0)
        except OffsetOutOfRangeError as exc:
            pytest.fail(
                f"seek(topic, 0) raised OffsetOutOfRangeError: entries {in_first} of the "
                f"damaged first block silently vanished ({exc})"
            )
        seen: list[int] = []
        corrupt: list[int] = []
        for _ in range(3 * len(payloads)):
            want = len(seen) + len(corrupt)
            try:
                e = wal.read_next("multi")
            except CorruptionError:
                corrupt.append(want)
                wal.seek("multi", want + 1)
                continue
            if e is None:
                break
            assert e.offset == want and e.data == payloads[want], (
                f"read_next at {want} returned offset {e.offset} {e.data[:20]!r}"
            )
            seen.append(e.offset)
        assert len(seen) + len(corrupt) == len(payloads), (
            f"read_next from 0: {len(seen)} exact, CorruptionError at {corrupt}, of {len(payloads)}"
        )
        assert set(range(in_first[-1] + 1, len(payloads))) <= set(seen), "later blocks lost"
        off, got = 0, []
        while off < len(payloads):
            try:
                entries = wal.batch_read_for_topic("multi", 1 << 20, False, start_offset=off)
            except CorruptionError as exc:
                assert exc.offset == off, f"start_offset={off} raised naming {exc.offset}"
                off += 1
                continue
            assert entries, f"start_offset={off} returned nothing before the end"
            assert entries[0].offset == off, (
                f"start_offset={off} returned entries from offset {entries[0].offset}"
            )
            for e in entries:
                assert e.data == payloads[e.offset]
                got.append(e.offset)
            off = entries[-1].offset + 1
        p = probe_offsets(wal, "multi", payloads)
    assert not p.wrong and not p.missing, f"{p.wrong} missing {p.missing}"


# --- 9: ENOSPC on a real small filesystem ----------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with ExitStack() as stack:
        try:
            mnt = stack.enter_context(trust.small_filesystem(tmp_path / "fs", 1024))
        except trust.MountRefused as exc:
            pytest.skip(f"cannot mount a small filesystem here: {exc}")
        yield mnt


def test_enospc_creating_a_directory_raises_storage_error(
    small_fs: Path, backend_name: str
) -> None:
    """Defect 9. On a real, full filesystem, opening a NEW directory (which writes its first
    metadata) raises StorageError (a WalrusError, errno ENOSPC, the OSError as __cause__), not
    a bare OSError; once space is back the same directory opens and works."""
    filler = trust.fill_up(small_fs)
    target = small_fs / "new-wal"
    with pytest.raises(Exception) as info:
        _open(target, backend_name, **CUR_GEOMETRY).close()
    assert isinstance(info.value, StorageError), (
        f"opening a new directory on a full filesystem raised {type(info.value).__name__}: "
        f"{info.value} (not a StorageError)"
    )
    assert info.value.errno == errno.ENOSPC, info.value
    os.remove(filler)
    with _open(target, backend_name, **CUR_GEOMETRY) as wal:
        assert wal.append_for_topic("t", b"after") == 0
    with _open(target, backend_name, **CUR_GEOMETRY) as wal:
        assert probe_offsets(wal, "t", [b"after"]).ok == [0]


_ENOSPC_APPENDS = r"""
import errno, os
from helpers.trust import fill_up
from walrus_core import StorageError
acked = []
def note(topic, first, payloads):
    for i, p in enumerate(payloads):
        say(f"ACK {topic} {first + i} {p.hex()}")
for i in range(5):
    p = b"<pre#%d>" % i + b"p" * 500
    note("e", wal.append_for_topic("e", p), [p])
filler = fill_up(__import__("pathlib").Path(cfg["mnt"]))
errors = []
for i in range(300):
    p = b"<full#%d>" % i + b"f" * 1500
    try:
        if i % 3 == 2:
            batch = [p, p + b"-2", p + b"-3"]
            note("e", wal.batch_append_for_topic("e", batch).start, batch)
        else:
            note("e", wal.append_for_topic("e", p), [p])
    except StorageError as exc:
        errors.append(exc.errno)
        if len(errors) >= 6:
            break
    except BaseException as exc:
        say(f"OTHER {type(exc).__name__}: {exc}")
        break
say(f"ERRORS {errors}")
os.remove(filler)
for i in range(3):
    p = b"<healed#%d>" % i
    note("e", wal.append_for_topic("e", p), [p])
batch = [b"<healed-batch#%d>" % i for i in range(4)]
note("e", wal.batch_append_for_topic("e", batch).start, batch)
"""


def test_enospc_on_appends_raises_storage_error_and_loses_nothing(
    small_fs: Path, backend_name: str
) -> None:
    """Defect 9 (appends). A child appends to a log on a real small filesystem until it is
    full: every failing append or batch raises StorageError (ENOSPC), nothing else; after the
    space comes back, appends and batches work again (in the same instance); after a kill -9
    and a reopen every acknowledged entry reads back exactly, in order, and nothing else."""
    root = small_fs / "wal"
    out = trust.run_child(
        _ENOSPC_APPENDS,
        data_dir=root,
        backend=backend_name,
        geometry=CUR_GEOMETRY,
        mnt=str(small_fs),
    )
    acked: list[bytes] = []
    errors = None
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if parts[0] == "ACK":
            assert int(parts[2]) == len(acked), f"offsets out of order: {line}"
            acked.append(bytes.fromhex(parts[3]))
        elif parts[0] == "ERRORS":
            errors = json.loads(line.split(" ", 1)[1])
        else:
            pytest.fail(f"the child reported: {line}")
    assert errors, "no append failed on the full filesystem (precondition: it filled up)"
    assert set(errors) == {errno.ENOSPC}, f"StorageError errnos {errors}"
    with _open(root, backend_name, **CUR_GEOMETRY) as wal:
        p = probe_offsets(wal, "e", acked)
    assert not p.wrong and p.ok == list(range(len(acked))), (
        f"{p.wrong}; missing {p.missing}; corrupt {p.corrupt} of {len(acked)} acknowledged"
    )


# --- 11: reopen cost after a crash -----------------------------------------------------------

COST_TOPICS = 50


def test_reopen_after_crash_reads_what_was_written_not_whole_blocks(
    tmp_path: Path, backend_name: str
) -> None:
    """Defect 11. Default geometry (10 MiB blocks): 50 topics each with 3 tiny entries in an
    unsealed tail (the writer was killed -9). Reopening (counted with a spy layer) reads far
    less than 50 blocks' worth (< 50 x 2 MiB: what follows a tail's last entry is checked where
    the file holds data, and mmap allocates and populates fresh blocks in 1 MiB chunks); a
    second reopen after another crash, with no writes in between, reads no more than the first.
    Everything is still there."""
    root = tmp_path / "wal"
    data = {f"topic-{i}": [b"<%d#%d>" % (i, j) for j in range(3)] for i in range(COST_TOPICS)}
    ops = [trust.single(t, p) for t, ps in data.items() for p in ps]
    trust.run_child(trust.OPS_CODE, data_dir=root, backend=backend_name, ops=ops)
    budget = COST_TOPICS * 2 * MIB
    reads = []
    for n in range(2):
        out = trust.run_child(
            "say(f'READ {spy.read_bytes} {spy.read_calls}')",
            data_dir=root,
            backend=backend_name,
            layer="spy",
            spy_budget=budget,
        )
        kind, nbytes, calls = out.split()[:3]
        assert kind == "READ", (
            f"reopen {n + 1} after a crash read more than {budget} B (at least {nbytes} B in "
            f"{calls} calls, then it was stopped) for {COST_TOPICS} topics x 3 tiny entries: "
            "it reads whole blocks, not what was written"
            + ("" if n == 0 else f" (the first reopen read {reads[0]} B)")
        )
        reads.append(int(nbytes))
        budget = reads[0]  # the second reopen may read no more than the first
    with _open(root, backend_name) as wal:
        for t, ps in data.items():
            p = probe_offsets(wal, t, ps)
            assert p.ok == [0, 1, 2] and not p.wrong, (t, p)


# --- 12: a failed append stays absent after a crash -----------------------------------------

_FAILED_APPEND = r"""
import errno
from walrus_core import StorageError
wal.append_for_topic("f", b"<f#0>ok")
wal.batch_append_for_topic("f", [b"<f#1>ok", b"<f#2>ok"])
op = "write" if cfg["kind"] == "single" else "batch_submit"
plan.fail(op, after_write=True, errno=errno.EIO, kind="data")
try:
    if cfg["kind"] == "single":
        wal.append_for_topic("f", b"<failed#0>" + b"F" * 300)
    else:
        wal.batch_append_for_topic("f", [b"<failed#%d>" % i + b"F" * 300 for i in range(3)])
    say("NO-ERROR")
except StorageError as exc:
    say(f"STORAGE-ERROR {exc.errno}")
except BaseException as exc:
    say(f"OTHER {type(exc).__name__}: {exc}")
say(f"INJECTED {len(plan.injected)}")
if cfg["then"] == "append":
    say(f"A {wal.append_for_topic('f', b'<f#3>next')}")
"""


@pytest.mark.parametrize("then", ["crash", "append-then-crash"])
@pytest.mark.parametrize("schedule", ["sync_each", "no_fsync"])
@pytest.mark.parametrize("kind", ["single", "batch"])
def test_failed_append_stays_absent_after_a_crash(
    tmp_path: Path, backend_name: str, kind: str, schedule: str, then: str
) -> None:
    """Defect 12. The bytes of an append (or a batch) reach the file but the call fails (the
    fault layer's ``after_write``: a sync that fails after the write): it raises StorageError.
    After a kill -9 and a reopen the failed entries are absent, and the offset goes to the next
    successful append (in the same instance before the crash, or after the reopen)."""
    root = tmp_path / "wal"
    out = trust.run_child(
        _FAILED_APPEND,
        data_dir=root,
        backend=backend_name,
        geometry=CUR_GEOMETRY,
        fsync=schedule,
        layer="faults",
        kind=kind,
        then="append" if then == "append-then-crash" else "crash",
    )
    lines = out.splitlines()
    assert lines[0] == f"STORAGE-ERROR {errno.EIO}", f"the failing append: {lines[0]}"
    assert lines[1] != "INJECTED 0", "precondition: the fault was injected"
    expected = [b"<f#0>ok", b"<f#1>ok", b"<f#2>ok"]
    if then == "append-then-crash":
        assert lines[2] == "A 3", f"the next append after the failure: {lines[2]}"
        expected.append(b"<f#3>next")
    with _open(root, backend_name, **CUR_GEOMETRY) as wal:
        p = probe_offsets(wal, "f", expected)
        assert not p.wrong and p.ok == list(range(len(expected))), (
            f"after the crash: {trust.summary(p.wrong, 2)}; missing {p.missing} corrupt "
            f"{p.corrupt} (the failed {kind} must be absent)"
        )
        n = len(expected)
        assert wal.append_for_topic("f", b"<f#after>") == n, "the failed offset is not reused"
        got = wal.batch_read_for_topic("f", 1 << 20, False, start_offset=n)
        assert [e.data for e in got] == [b"<f#after>"]


def test_fault_layer_after_write_lands_the_bytes_then_raises(
    tmp_path: Path, base_backend: str
) -> None:
    """The fault layer's ``after_write`` kind (used above): write, batch_submit and flush
    complete in the storage below, entirely, then raise the injected OSError; the next
    operation works; ``after_write`` is refused for reads and together with ``torn``."""
    plan = FaultPlan()
    layer = FaultLayer(plan, over=base_backend)
    registry = BackendRegistry.from_entry_points().with_plugins({"faults": layer})
    with pytest.raises(ValueError):
        plan.fail("read", after_write=True)
    with pytest.raises(ValueError):
        plan.fail("write", after_write=True, torn=True)
    wal = Walrus(
        data_dir=tmp_path / "wal",
        backend="faults",
        registry=registry,
        fsync=FsyncSchedule.no_fsync(),
        **CUR_GEOMETRY,
    )
    try:
        assert wal.backend_chain[0] == "faults"
        wal.append_for_topic("t", b"first")
        plan.fail("write", after_write=True, errno=errno.ENOSPC, kind="data")
        with pytest.raises(StorageError) as info:
            wal.append_for_topic("t", b"<landed-single>")
        assert info.value.errno == errno.ENOSPC
        plan.fail("batch_submit", after_write=True, kind="data")
        with pytest.raises(StorageError):
            wal.batch_append_for_topic("t", [b"<landed-batch-1>", b"<landed-batch-2>"])
        assert [i[0] for i in plan.injected] == ["write", "batch_submit"]
        wal.append_for_topic("t", b"x")  # works again
        plan.fail("flush", after_write=True)
        with pytest.raises(StorageError):
            wal.flush()
        assert plan.injected[-1][0] == "flush"
        wal.flush()
    finally:
        try:
            wal.close()
        except WalrusError:
            pass
    # The failed batch did reach the file (a later single append may have reused the space
    # of the failed single one).
    files = trust.read_data_files(tmp_path / "wal")
    assert trust.locate(files, b"<landed-batch-2>"), "after_write: the batch did not land"


# --- 14: more data files than descriptors -----------------------------------------------------

FD_FILES = 300

_FD_CHILD = r"""
import resource
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
from walrus_core import Walrus
wal = Walrus(**kwargs)
for i in range(cfg["n"]):
    got = wal.batch_read_for_topic("fd", 1, checkpoint=False, start_offset=i)
    want = (b"<fd#%d>" % i).ljust(2500, b"d")
    assert got and got[0].offset == i and got[0].data == want, f"offset {i}: {got[:1]!r}"
n = wal.append_for_topic("fd", b"<fd-after>")
assert n == cfg["n"], n
got = wal.batch_read_for_topic("fd", 1, checkpoint=False, start_offset=n)
assert got[0].data == b"<fd-after>"
wal.close()
say("OK")
"""


@pytest.mark.parametrize("schedule", ["sync_each", "no_fsync"])
def test_many_data_files_reopen_under_a_low_descriptor_limit(
    tmp_path: Path, backend_name: str, schedule: str
) -> None:
    """Defect 14. A log of 300 one-block data files (written under no_fsync) is reopened in a
    process limited to 256 descriptors (RLIMIT_NOFILE), under ``schedule`` and the backend
    under test: it opens, every entry reads back exactly, and appends work."""
    root = tmp_path / "wal"
    geometry = {"block_size": 4 * KIB, "blocks_per_file": 1}
    with _open(root, backend_name, **geometry) as wal:
        for i in range(FD_FILES):
            wal.append_for_topic("fd", (b"<fd#%d>" % i).ljust(2500, b"d"))
    assert len(trust.data_file_names(root)) >= FD_FILES, "precondition: one file per entry"
    out = trust.run_child(
        _FD_CHILD,
        data_dir=root,
        backend=backend_name,
        geometry=geometry,
        fsync=schedule,
        open=False,
        kill=False,
        n=FD_FILES,
    )
    assert out.strip() == "OK", out
