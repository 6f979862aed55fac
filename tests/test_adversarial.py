"""The adversarial harness: seeded random damage to the files of a log whose content is known,
crashes (SIGKILL) during large entries and batches, a fork that closes an inherited instance,
and a real full filesystem.

**The invariant, checked on every case**: each entry returned (by ``read_next``, by
``batch_read_for_topic`` with and without ``start_offset``, after ``seek``) is byte-identical
to what was appended at that offset of that topic; anything else raises ``CorruptionError``
(naming the offset); no other exception escapes ``open()`` or a read; nothing hangs (every
open + verification runs under a watchdog thread); and nothing acknowledged goes missing:

* crash cases: every acknowledged entry is returned exactly; the operation in flight at the
  kill is wholly present or wholly absent; nothing else is there;
* damage cases: every acknowledged offset is returned exactly or raises ``CorruptionError``,
  except a *droppable suffix* of a topic (below). Entries the damage did not touch are
  returned exactly (``CorruptionError`` is only for touched ones).

**Touched, and the droppable suffix (the damage rule).** The pristine log is laid out without
knowing the format: every non-empty payload is found in the data files by its bytes; the bytes
between consecutive payloads of one block are the next entry's header (their count, the entry
overhead, is measured); a zero-length entry's place follows from its neighbours (unknown: it
counts as touched); an entry starts a new block when it does not follow the previous entry of
its topic within less than ``BLOCK_HEADER_SIZE`` bytes; a block's header region is the
``walrus_core.format.BLOCK_HEADER_SIZE`` bytes at the ``block_size`` multiple below its first
entry. An entry is *touched* when a damaged byte (flipped, zeroed, overwritten by a swapped or
duplicated block, or cut off by a truncation) falls in its header or payload or in its block's
header region; a data file cut below one block counts as damaged entirely. A topic's droppable
suffix starts after its last untouched entry; when that point falls inside a batch, it moves to
the batch's start (recovery may roll back a batch whose commit was destroyed), and the rule is
applied again from there. Offsets in the droppable suffix may be missing (only as a suffix:
the topic ends earlier), or raise ``CorruptionError``, or be exact. Damage outside the data
files (walrus.json: another geometry, deleted, garbled; cursors.dat) touches no entry.

**Consumers.** With cursors.dat intact, every consumer resumes exactly where it was (at the
topic's end if the damage cut the topic below that); with cursors.dat damaged, a consumer may
only go back (never skip an entry it did not consume), and if it goes back a WARNING must say
so (except after a zeroed slot: it looks like a slot that was never written). A consumer
created after the damage starts at offset 0 and keeps its own position across a reopen (it
never inherits a damaged slot).

**Also checked per case**: a second open, with nothing written in between, finds exactly the
same (recovery is idempotent); then an append to every topic lands at its end and reads back.

**Cases.** Two pristine logs per backend, built once: ``clean`` (closed cleanly) and
``crashed`` (a child killed with SIGKILL after its last operation: unsealed tails); three
topics, single appends and batches, zero-length, small, block-sized and multi-block entries,
payloads embedding real well-formed entries of a scratch log, named consumers. Damage families:
``flips``, ``zeroed``, ``truncate``, ``blocks`` (whole ``block_size`` slots swapped or
duplicated, within or across files), ``geometry`` (walrus.json with another valid
block_size/blocks_per_file), ``meta`` (walrus.json deleted, garbled, cut), ``cursors``
(cursors.dat flipped, cut, zeroed, slots swapped or duplicated, deleted) and ``mixed`` (two of
them). Each case copies the pristine log (``shutil.copytree``) and derives everything from its
seed, ``<family>/<flavour>/<n>``, printed on failure; replay one with
``WALRUS_ADV_CASE=<seed> pytest tests/test_adversarial.py -k replay``. Default run: 8 families
x 2 flavours x 19 = 304 damage cases; ``WALRUS_SLOW=1``: x 200 = 3200. The counts and outcomes
per backend are printed at the end of the module.

This module replaces ``tests/test_corruption_fuzz.py`` (which read the v1 layout): its
guarantees (open succeeds, no wrong bytes, intact entries kept, damage in the middle raises,
cursor kept, cursor damage only replays and is logged, recovery idempotent, still usable) are
all checked above, on every case.
"""

from __future__ import annotations

import collections
import errno
import itertools
import logging
import os
import random
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import adv_writer, trust

from walrus_core import CorruptionError, FsyncSchedule, Walrus
from walrus_core import format as fmt

SLOW = trust.SLOW
CASES = 200 if SLOW else 19
WATCHDOG = 60.0
GEOMETRY = {"block_size": 8 * 1024, "blocks_per_file": 4}
BS = GEOMETRY["block_size"]
TOPICS = ("adv-a", "adv-b", "adv-c")
#: (topic, consumer, entries it reads) in the middle of the pristine log's history.
READS: tuple[tuple[str, str | None, int], ...] = (
    ("adv-a", None, 7),
    ("adv-a", "c1", 3),
    ("adv-b", "c2", 1),
    ("adv-c", None, 12),
    ("adv-b", None, 5),
)
FAMILIES = ("flips", "zeroed", "truncate", "blocks", "geometry", "meta", "cursors", "mixed")
FLAVOURS = ("clean", "crashed")

#: Outcome counts per backend, printed when the module finishes.
STATS: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)


class _Summary:
    """Registered once per session: prints the case counts and outcomes per backend."""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not STATS:
            return
        terminalreporter.write_sep("-", "adversarial harness")
        for backend, counts in sorted(STATS.items()):
            terminalreporter.write_line(
                f"[{backend}] " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            )


@pytest.fixture(scope="module", autouse=True)
def _summary(request: pytest.FixtureRequest) -> None:
    manager = request.config.pluginmanager
    if not manager.has_plugin("walrus-adversarial-summary"):
        manager.register(_Summary(), "walrus-adversarial-summary")


# --- the pristine logs -----------------------------------------------------------------------


def _payload(rng: random.Random, backend: str, topic: str, offset: int) -> bytes:
    tag = f"[{topic}@{offset}]".encode()
    r = rng.random()
    if r < 0.06:
        return b""
    if r < 0.60:
        size = rng.randint(1, 300)
    elif r < 0.78:
        size = rng.randint(300, 2500)
    elif r < 0.86:  # about a block: one slot, nearly full
        size = BS - fmt.BLOCK_HEADER_SIZE - 64 - rng.randint(0, 200)
    elif r < 0.91:  # a block of several slots
        size = rng.randint(2 * BS, 3 * BS)
    else:  # real, well-formed entries of this topic (offsets 0..47) inside the payload
        return tag + trust.well_formed_entries(backend, topic, 48) + tag[::-1]
    body = rng.randbytes(min(size, 251))
    return tag + (body * (size // 251 + 1))[: max(0, size - len(tag))]


def _plan(
    backend: str,
) -> tuple[list[dict[str, Any]], dict[str, list[bytes]], dict[str, list[range]]]:
    rng = random.Random("adversarial-pristine")
    data: dict[str, list[bytes]] = {t: [] for t in TOPICS}
    batches: dict[str, list[range]] = {t: [] for t in TOPICS}
    ops: list[dict[str, Any]] = []

    def appends(count: int) -> None:
        for _ in range(count):
            topic = rng.choice(TOPICS)
            seq = data[topic]
            n = 1 if rng.random() < 0.5 else rng.randint(2, 12)
            ps = [_payload(rng, backend, topic, len(seq) + i) for i in range(n)]
            # No two zero-length entries in a row: each one's place follows from a neighbour.
            for i in range(1, n):
                if not ps[i] and not ps[i - 1]:
                    ps[i] = f"[{topic}@{len(seq) + i}]".encode()
            if ps and not ps[0] and seq and not seq[-1]:
                ps[0] = f"[{topic}@{len(seq)}]".encode()
            ops.append(trust.single(topic, ps[0]) if n == 1 else trust.batch(topic, ps))
            batches[topic].append(range(len(seq), len(seq) + n))
            seq.extend(ps)

    appends(30)
    ops.extend(trust.read(t, n, c) for t, c, n in READS)
    appends(12)
    for topic in TOPICS:  # a located entry last: the end of every topic is known
        p = f"[{topic}@{len(data[topic])}]".encode() + b"end"
        ops.append(trust.single(topic, p))
        batches[topic].append(range(len(data[topic]), len(data[topic]) + 1))
        data[topic].append(p)
    return ops, data, batches


Span = tuple[str, int, int]  # (data file, first byte, byte after)


@dataclass
class Pristine:
    flavour: str
    root: Path
    data: dict[str, list[bytes]]
    batches: dict[str, list[range]]
    positions: dict[tuple[str, str | None], int]
    sizes: dict[str, int] = field(default_factory=dict)
    overhead: int = 0
    spans: dict[str, list[Span | None]] = field(default_factory=dict)
    block_of: dict[str, list[int | None]] = field(default_factory=dict)
    blocks: list[tuple[str, int, int]] = field(default_factory=list)  # (file, start, stop)
    last_block: dict[str, int] = field(default_factory=dict)
    cursor_slots: int = 0
    known: dict[bytes, str] = field(default_factory=dict)

    @property
    def files(self) -> list[str]:
        return sorted(self.sizes)

    def slots(self) -> list[tuple[str, int]]:
        return [(name, at) for name in self.files for at in range(0, self.sizes[name], BS)]


def _layout(p: Pristine) -> None:
    """Locate every entry (format-agnostic, see the module docstring)."""
    files = trust.read_data_files(p.root)
    p.sizes = {name: len(raw) for name, raw in files.items()}
    locs: dict[str, list[trust.Loc | None]] = {}
    gaps: list[int] = []
    for topic, payloads in p.data.items():
        locs[topic] = [trust.locate_one(files, x) if x else None for x in payloads]
        for a, b in itertools.pairwise(locs[topic]):
            if a is not None and b is not None and a.file == b.file and b.pos - a.end > 0:
                gaps.append(b.pos - a.end)
    p.overhead = min(gaps)
    ov = p.overhead
    assert 0 < ov < 256, f"precondition: entry overhead {ov}"
    for topic, ls in locs.items():
        spans: list[Span | None] = []
        for k, loc in enumerate(ls):
            if loc is not None:
                spans.append((loc.file, loc.pos - ov, loc.end))
                continue
            prev = ls[k - 1] if k > 0 else None
            nxt = ls[k + 1] if k + 1 < len(ls) else None
            if prev and nxt and prev.file == nxt.file and nxt.pos - prev.end == 2 * ov:
                spans.append((prev.file, prev.end, prev.end + ov))
            elif nxt and (nxt.pos - 2 * ov) % BS == fmt.BLOCK_HEADER_SIZE:
                spans.append((nxt.file, nxt.pos - 2 * ov, nxt.pos - ov))
            else:
                spans.append(None)  # place unknown: counts as touched
        p.spans[topic] = spans
        of: list[int | None] = []
        prev_span: Span | None = None
        for span in spans:
            if span is None:
                of.append(None)
                continue
            same = (
                prev_span is not None
                and of
                and prev_span[0] == span[0]
                and 0 <= span[1] - prev_span[2] < fmt.BLOCK_HEADER_SIZE
            )
            if same:
                index = next(i for i in reversed(of) if i is not None)
                f, start, stop = p.blocks[index]
                p.blocks[index] = (f, start, max(stop, -(-span[2] // BS) * BS))
            else:
                start = span[1] // BS * BS
                p.blocks.append((span[0], start, max(start + BS, -(-span[2] // BS) * BS)))
                index = len(p.blocks) - 1
            of.append(index)
            prev_span = span
        p.block_of[topic] = of
        p.last_block[topic] = next(i for i in reversed(of) if i is not None)
    ordered = sorted(p.blocks)
    for a, b in itertools.pairwise(ordered):
        assert a[0] != b[0] or a[2] <= b[1], f"precondition: blocks {a} and {b} overlap"
    p.known = {x: f"{t} entry {i}" for t, xs in p.data.items() for i, x in enumerate(xs) if x}
    p.cursor_slots = len({(t, c) for t, c, _ in READS})


def _build(root: Path, backend: str, flavour: str) -> Pristine:
    ops, data, batches = _plan(backend)
    if flavour == "crashed":
        trust.run_child(trust.OPS_CODE, data_dir=root, backend=backend, geometry=GEOMETRY, ops=ops)
    else:
        with Walrus(
            data_dir=root, backend=backend, fsync=FsyncSchedule.no_fsync(), **GEOMETRY
        ) as wal:
            trust.apply_ops(wal, ops)
    positions: dict[tuple[str, str | None], int] = {}
    for topic, consumer, n in READS:
        positions[(topic, consumer)] = positions.get((topic, consumer), 0) + n
    p = Pristine(flavour, root, data, batches, positions)
    _layout(p)
    assert len(p.files) >= 4, "precondition: the log spans several data files"
    return p


_PRISTINE: dict[tuple[str, str], Pristine] = {}


@pytest.fixture(scope="module")
def pristine(
    tmp_path_factory: pytest.TempPathFactory, backend_name: str
) -> Callable[[str], Pristine]:
    def get(flavour: str) -> Pristine:
        key = (backend_name, flavour)
        if key not in _PRISTINE:
            root = tmp_path_factory.mktemp("adv-pristine") / flavour
            _PRISTINE[key] = _build(root, backend_name, flavour)
        return _PRISTINE[key]

    return get


# --- damage ----------------------------------------------------------------------------------


@dataclass
class Damage:
    what: list[str] = field(default_factory=list)
    ranges: list[Span] = field(default_factory=list)  # data-file bytes changed or cut
    cursors: bool = False  # cursors.dat damaged
    #: The damage leaves a state a crash can leave too (a slot never written), so a consumer
    #: replaying from the start cannot be expected to be logged.
    cursors_silent: bool = False

    def note(self, what: str, *ranges: Span) -> None:
        self.what.append(what)
        self.ranges.extend(ranges)


def _pick_position(rng: random.Random, p: Pristine) -> tuple[str, int]:
    """A damage target: anywhere, in an entry's payload or header, a block header region, or
    a topic's tail block."""
    where = rng.choice(("anywhere", "payload", "header", "block-header", "tail"))
    if where == "anywhere":
        name = rng.choice(p.files)
        return name, rng.randrange(p.sizes[name])
    if where == "block-header":
        f, start, _ = rng.choice(p.blocks)
        return f, start + rng.randrange(fmt.BLOCK_HEADER_SIZE)
    if where == "tail":
        f, start, stop = p.blocks[p.last_block[rng.choice(TOPICS)]]
        return f, rng.randrange(start, stop)
    topic = rng.choice(TOPICS)
    spans = [s for s in p.spans[topic] if s is not None]
    f, start, stop = rng.choice(spans)
    if where == "header":
        return f, start + rng.randrange(p.overhead)
    return f, rng.randrange(min(start + p.overhead, stop - 1), stop)


def _flips(rng: random.Random, p: Pristine, root: Path, d: Damage) -> None:
    for _ in range(rng.randint(1, 4)):
        name, pos = _pick_position(rng, p)
        mask = rng.randint(1, 255)
        trust.flip(root / name, pos, mask)
        d.note(f"flip {name}@{pos}^{mask:#x}", (name, pos, pos + 1))


def _zeroed(rng: random.Random, p: Pristine, root: Path, d: Damage) -> None:
    name, pos = _pick_position(rng, p)
    length = rng.choice((1, 4, 16, 64, 300, fmt.BLOCK_HEADER_SIZE, BS // 2, BS, 2 * BS))
    length = max(1, min(length + rng.randint(-3, 3), p.sizes[name] - pos))
    trust.overwrite(root / name, pos, bytes(length))
    d.note(f"zero {name}@{pos}+{length}", (name, pos, pos + length))


def _truncate(rng: random.Random, p: Pristine, root: Path, d: Damage) -> None:
    name = rng.choice(p.files)
    size = p.sizes[name]
    how = rng.choice(("anywhere", "block-boundary", "near-end"))
    if how == "anywhere":
        cut = rng.randrange(size + 1)
    elif how == "block-boundary":
        cut = rng.randrange(size // BS + 1) * BS
    else:
        cut = max(0, size - rng.randint(1, BS))
    os.truncate(root / name, cut)
    d.note(f"truncate {name} to {cut}", (name, 0 if cut < BS else cut, size))


def _blocks(rng: random.Random, p: Pristine, root: Path, d: Damage) -> None:
    slots = p.slots()
    (fa, a), (fb, b) = rng.sample(slots, 2)
    raw_a = (root / fa).read_bytes()[a : a + BS]
    raw_b = (root / fb).read_bytes()[b : b + BS]
    if rng.random() < 0.5:
        trust.overwrite(root / fa, a, raw_b)
        trust.overwrite(root / fb, b, raw_a)
        d.note(f"swap {fa}@{a} <-> {fb}@{b}", (fa, a, a + BS), (fb, b, b + BS))
    else:
        trust.overwrite(root / fb, b, raw_a)
        d.note(f"duplicate {fa}@{a} -> {fb}@{b}", (fb, b, b + BS))


def _geometry(rng: random.Random, p: Pristine, root: Path, d: Damage) -> None:
    changes: dict[str, int] = {}
    r = rng.random()
    if r < 0.7:
        changes["block_size"] = rng.choice((BS * 2, BS // 2))
    if r > 0.4:
        changes["blocks_per_file"] = rng.choice((1, 2, 8, 16))
    trust.rewrite_meta(root, **changes)
    d.note(f"walrus.json geometry {changes}")


def _meta(rng: random.Random, p: Pristine, root: Path, d: Damage) -> None:
    path = root / fmt.META_NAME
    how = rng.choice(("delete", "garbage", "cut", "empty-object", "not-json"))
    if how == "delete":
        path.unlink()
    elif how == "garbage":
        path.write_bytes(rng.randbytes(rng.randint(1, 200)))
    elif how == "cut":
        raw = path.read_bytes()
        path.write_bytes(raw[: rng.randrange(len(raw))])
    elif how == "empty-object":
        path.write_text("{}", encoding="utf-8")
    else:
        path.write_text("walrus", encoding="utf-8")
    d.note(f"walrus.json {how}")


def _cursors(rng: random.Random, p: Pristine, root: Path, d: Damage) -> None:
    path = root / fmt.CURSORS_NAME
    slot = fmt.CURSOR_SLOT_SIZE
    used = p.cursor_slots
    how = rng.choice(("flips", "cut", "zero-slot", "swap-slots", "duplicate-slot", "delete"))
    if how == "flips":
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(used * slot)
            trust.flip(path, pos, rng.randint(1, 255))
            d.note(f"cursors.dat flip @{pos}")
    elif how == "cut":
        cut = rng.choice((rng.randrange(used * slot + 1), rng.randrange(path.stat().st_size)))
        os.truncate(path, cut)
        d.note(f"cursors.dat cut to {cut}")
    elif how == "zero-slot":
        s = rng.randrange(used)
        trust.overwrite(path, s * slot, bytes(slot))
        d.note(f"cursors.dat slot {s} zeroed")
        d.cursors_silent = True
    elif how in ("swap-slots", "duplicate-slot"):
        a, b = rng.sample(range(used), 2)
        raw = path.read_bytes()
        ra, rb = raw[a * slot : (a + 1) * slot], raw[b * slot : (b + 1) * slot]
        trust.overwrite(path, b * slot, ra)
        if how == "swap-slots":
            trust.overwrite(path, a * slot, rb)
        d.note(f"cursors.dat {how} {a}, {b}")
    else:
        path.unlink()
        d.note("cursors.dat deleted")
    d.cursors = True


DAMAGERS: dict[str, Callable[[random.Random, Pristine, Path, Damage], None]] = {
    "flips": _flips,
    "zeroed": _zeroed,
    "truncate": _truncate,
    "blocks": _blocks,
    "geometry": _geometry,
    "meta": _meta,
    "cursors": _cursors,
}


#: The order two damages of a "mixed" case are applied in (a truncation last, so that every
#: other damage finds the files at their pristine sizes; walrus.json garbled after a geometry
#: change, not before).
ORDER = ("flips", "zeroed", "blocks", "cursors", "geometry", "meta", "truncate")


def damage(family: str, rng: random.Random, p: Pristine, root: Path) -> Damage:
    d = Damage()
    if family == "mixed":
        for name in sorted(rng.sample(ORDER, 2), key=ORDER.index):
            DAMAGERS[name](rng, p, root, d)
    else:
        DAMAGERS[family](rng, p, root, d)
    return d


def touched(p: Pristine, d: Damage) -> dict[str, set[int]]:
    """Offsets per topic whose entry (or block header region) the damage touched."""

    def hit(f: str, start: int, stop: int) -> bool:
        return any(f == rf and start < rstop and rstart < stop for rf, rstart, rstop in d.ranges)

    out: dict[str, set[int]] = {}
    for topic in TOPICS:
        out[topic] = set()
        for k, span in enumerate(p.spans[topic]):
            index = p.block_of[topic][k]
            if span is None or index is None:
                out[topic].add(k)
                continue
            f, bstart, _ = p.blocks[index]
            if hit(*span) or hit(f, bstart, bstart + fmt.BLOCK_HEADER_SIZE):
                out[topic].add(k)
    return out


def droppable_from(p: Pristine, topic: str, hurt: set[int]) -> int:
    """Where the droppable suffix of ``topic`` starts (see the module docstring)."""
    cut = len(p.data[topic])
    while True:
        j = cut
        while j > 0 and j - 1 in hurt:
            j -= 1
        for r in p.batches[topic]:
            if r.start < j < r.stop:
                j = r.start
        if j == cut:
            return cut
        cut = j


# --- verification ----------------------------------------------------------------------------


class Problems(list[str]):
    """What one case found wrong."""

    add = list.append


def _open(root: Path, backend: str) -> Walrus:
    return Walrus(data_dir=root, backend=backend, fsync=FsyncSchedule.no_fsync())


def _sweep_read_next(
    wal: Walrus,
    topic: str,
    consumer: str | None,
    start: int,
    end: int,
    exp: list[bytes],
    corrupt: set[int],
    problems: Problems,
) -> int:
    """read_next from ``start`` (the consumer's position), seeking past CorruptionError."""
    cursor = start
    for _ in range(3 * len(exp) + 10):
        try:
            e = wal.read_next(topic, consumer=consumer)
        except CorruptionError as exc:
            if exc.offset != cursor or cursor not in corrupt:
                problems.add(
                    f"{topic!r} read_next({consumer}) at {cursor} raised CorruptionError naming "
                    f"{exc.offset} (offset reads: {'corrupt' if cursor in corrupt else 'fine'})"
                )
                return cursor
            cursor += 1
            wal.seek(topic, cursor, consumer=consumer)
            continue
        if e is None:
            if cursor != end:
                problems.add(f"{topic!r} read_next({consumer}) stopped at {cursor}, end {end}")
            return cursor
        if e.offset != cursor or e.offset >= len(exp) or e.data != exp[e.offset]:
            problems.add(
                f"{topic!r} read_next({consumer}) at {cursor} returned offset {e.offset}: "
                + trust.describe(e.data)
            )
            return cursor
        cursor += 1
    problems.add(f"never_hangs: read_next of {topic!r} did not reach the end")
    return cursor


def _sweep_batches(
    wal: Walrus,
    rng: random.Random,
    topic: str,
    end: int,
    exp: list[bytes],
    corrupt: set[int],
    problems: Problems,
    consumer: str | None,
) -> None:
    """batch_read_for_topic over the whole topic: start_offset reads (consumer None) or a
    checkpointing cursor (seek past CorruptionError), random max_bytes."""
    off = 0
    how = "start_offset" if consumer is None else f"cursor {consumer}"
    for _ in range(3 * len(exp) + 10):
        if off >= end:
            break
        max_bytes = rng.choice((1, 100, 4096, 30_000, 1 << 20))
        try:
            if consumer is None:
                entries = wal.batch_read_for_topic(topic, max_bytes, False, start_offset=off)
            else:
                entries = wal.batch_read_for_topic(topic, max_bytes, consumer=consumer)
        except CorruptionError as exc:
            if exc.offset != off or off not in corrupt:
                problems.add(f"{topic!r} batch read ({how}) at {off} raised naming {exc.offset}")
                return
            off += 1
            if consumer is not None:
                wal.seek(topic, off, consumer=consumer)
            continue
        if not entries:
            problems.add(f"{topic!r} batch read ({how}) at {off} returned [] before end {end}")
            return
        for i, e in enumerate(entries):
            if e.offset != off + i or e.offset >= len(exp) or e.data != exp[e.offset]:
                problems.add(
                    f"{topic!r} batch read ({how}) from {off} returned offset {e.offset}: "
                    + trust.describe(e.data)
                )
                return
        off += len(entries)
    else:
        problems.add(f"never_hangs: batch reads of {topic!r} did not reach the end")


def _statuses(wal: Walrus, p: Pristine) -> dict[str, trust.Probe]:
    return {t: trust.probe_offsets(wal, t, p.data[t], p.known) for t in TOPICS}


def check_case(
    root: Path, p: Pristine, d: Damage, backend: str, rng: random.Random
) -> tuple[Problems, set[str]]:
    """Open the damaged copy and check everything (see the module docstring)."""
    problems = Problems()
    flags: set[str] = set()
    hurt = touched(p, d)
    with trust.captured_warnings() as records:
        try:
            wal = _open(root, backend)
        except Exception as exc:
            problems.add(f"open_succeeds: opening raised {type(exc).__name__}: {exc}")
            return problems, flags
        try:
            first = _statuses(wal, p)
            ends: dict[str, int] = {}
            for topic in TOPICS:
                exp = p.data[topic]
                pr = first[topic]
                problems.extend(f"no_wrong_bytes: {topic!r} {w}" for w in pr.wrong[:3])
                cut = droppable_from(p, topic, hurt[topic])
                if pr.missing:
                    lo = pr.missing[0]
                    if pr.missing != list(range(lo, len(exp))):
                        problems.add(
                            f"intact_entries_kept: {topic!r} offsets {pr.missing} vanished from "
                            f"the middle (not a suffix)"
                        )
                    elif lo < cut:
                        problems.add(
                            f"intact_entries_kept: {topic!r} lost offsets {lo}..{len(exp) - 1}; "
                            f"only {cut}.. may go (touched: {sorted(hurt[topic])})"
                        )
                    flags.add("dropped")
                bad_intact = [o for o in pr.corrupt if o < cut and o not in hurt[topic]]
                if bad_intact:
                    problems.add(
                        f"intact_entries_kept: untouched {topic!r} entries {bad_intact} raise "
                        "CorruptionError"
                    )
                if pr.corrupt:
                    flags.add("corrupt")
                end = pr.end
                ends[topic] = end
                corrupt = set(pr.corrupt)
                _sweep_read_next(wal, topic, "adv-v1", 0, end, exp, corrupt, problems)
                _sweep_batches(wal, rng, topic, end, exp, corrupt, problems, None)
                _sweep_batches(wal, rng, topic, end, exp, corrupt, problems, "adv-v2")
                for target in sorted(rng.sample(range(end + 1), min(3, end + 1))):
                    wal.seek(topic, target, consumer="adv-seek")
                    try:
                        e = wal.read_next(topic, consumer="adv-seek")
                    except CorruptionError as exc:
                        if target not in corrupt or exc.offset != target:
                            problems.add(
                                f"{topic!r} seek({target}) read raised naming {exc.offset}"
                            )
                        continue
                    if target == end:
                        if e is not None:
                            problems.add(f"{topic!r} seek(end) then read_next gave {e.offset}")
                    elif e is None or e.offset != target or e.data != exp[target]:
                        problems.add(f"{topic!r} seek({target}) then read_next: {e!r:.80}")
                for (t, consumer), orig in p.positions.items():
                    if t != topic:
                        continue
                    pos = end - wal.topic_entry_count(topic, consumer=consumer)
                    want = min(orig, end)
                    if d.cursors:
                        if pos > want:
                            problems.add(
                                f"cursor_damage_replays: consumer {consumer!r} of {topic!r} "
                                f"resumed at {pos}, past {want}: it skips entries"
                            )
                        elif pos < want:
                            flags.add("replay")
                            logged = any(r.levelno >= logging.WARNING for r in records)
                            if not logged and not d.cursors_silent:
                                problems.add(
                                    f"cursor_damage_logged: consumer {consumer!r} of {topic!r} "
                                    f"replays from {pos} (was {orig}) and no WARNING says so"
                                )
                    elif pos != want:
                        problems.add(
                            f"cursor_kept: consumer {consumer!r} of {topic!r} at {pos}, was "
                            f"{orig} (end {end})"
                        )
                    _sweep_read_next(wal, topic, consumer, pos, end, exp, corrupt, problems)
        finally:
            wal.close()
    if problems:
        return problems, flags
    wal = _open(root, backend)
    try:
        again = _statuses(wal, p)
        for topic in TOPICS:
            a, b = first[topic], again[topic]
            if (a.ok, a.corrupt, a.missing) != (b.ok, b.corrupt, b.missing):
                problems.add(
                    f"recovery_idempotent: {topic!r} first open: {len(a.ok)} exact, corrupt "
                    f"{a.corrupt}, missing {a.missing[:5]}; second: {len(b.ok)} exact, corrupt "
                    f"{b.corrupt}, missing {b.missing[:5]}"
                )
            pos = ends[topic] - wal.topic_entry_count(topic, consumer="adv-v1")
            if pos != ends[topic]:
                problems.add(
                    f"a consumer created after the damage read {topic!r} to {ends[topic]} but "
                    f"resumes at {pos} after a reopen"
                )
            off = wal.append_for_topic(topic, b"[still-usable]")
            if off != ends[topic]:
                problems.add(
                    f"still_usable: append to {topic!r} landed at {off}, end {ends[topic]}"
                )
            got = wal.batch_read_for_topic(topic, 1 << 20, False, start_offset=off)
            if [e.data for e in got] != [b"[still-usable]"]:
                problems.add(f"still_usable: {topic!r} read back {got!r:.100}")
    finally:
        wal.close()
    return problems, flags


def run_case(
    p: Pristine, family: str, seed: str, tmp: Path, backend: str
) -> tuple[Problems, set[str], Damage]:
    rng = random.Random(seed)
    root = tmp / seed.replace("/", "-")
    shutil.copytree(p.root, root)
    d = damage(family, rng, p, root)
    try:
        problems, flags = trust.bounded(
            lambda: check_case(root, p, d, backend, rng), WATCHDOG, f"case {seed}"
        )
    except trust.Hang as exc:
        problems, flags = Problems([str(exc)]), {"hang"}
    except Exception as exc:  # anything escaping a read or a seek is a failure
        problems, flags = Problems([f"{type(exc).__name__} escaped: {exc}"]), set()
    shutil.rmtree(root, ignore_errors=True)
    return problems, flags, d


def _run_family(
    family: str, flavour: str, seeds: list[str], p: Pristine, tmp: Path, backend: str
) -> None:
    failures: list[str] = []
    stats = STATS[backend]
    for seed in seeds:
        problems, flags, d = run_case(p, family, seed, tmp, backend)
        stats["damage_cases"] += 1
        for flag in flags:
            stats[f"with_{flag}"] += 1
        if problems:
            stats["damage_failed"] += 1
            failures.append(
                f"seed {seed} (damage: {'; '.join(d.what)}):\n    " + "\n    ".join(problems[:4])
            )
    if failures:
        pytest.fail(
            f"{len(failures)} of {len(seeds)} {family}/{flavour} cases broke the invariant "
            f"(replay: WALRUS_ADV_CASE=<seed> pytest tests/test_adversarial.py -k replay):\n"
            + "\n".join(failures[:6]),
            pytrace=False,
        )


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("family", FAMILIES)
def test_damage_never_yields_wrong_bytes_nor_loses_intact_entries(
    family: str,
    flavour: str,
    pristine: Callable[[str], Pristine],
    backend_name: str,
    tmp_path: Path,
) -> None:
    """CASES seeded damage cases of one family on one flavour of the pristine log; every
    check of the module docstring on every case."""
    p = pristine(flavour)
    seeds = [f"{family}/{flavour}/{n}" for n in range(CASES)]
    _run_family(family, flavour, seeds, p, tmp_path, backend_name)


def test_replay_one_damage_case(
    pristine: Callable[[str], Pristine], backend_name: str, tmp_path: Path
) -> None:
    """Replays the case named by $WALRUS_ADV_CASE (a seed printed by a failure)."""
    seed = os.environ.get("WALRUS_ADV_CASE")
    if not seed:
        pytest.skip("set WALRUS_ADV_CASE=<family>/<flavour>/<n> to replay one damage case")
    family, flavour, _ = seed.split("/")
    _run_family(family, flavour, [seed], pristine(flavour), tmp_path, backend_name)


# --- SIGKILL during large entries and batches ----------------------------------------------

KILL_ROUNDS = 40 if SLOW else 4


def test_sigkill_during_large_entries_and_batches_loses_no_ack(
    tmp_path: Path, backend_name: str
) -> None:
    """A child (``helpers/adv_writer.py``) appends singles and batches with zero-length,
    small, medium and multi-block entries (some embedding well-formed entries) to three topics;
    it is killed with SIGKILL after a random delay, the directory is reopened and checked, and
    the next round continues on the same directory. After every kill: each acknowledged entry
    is returned exactly (never CorruptionError), the operation in flight is wholly present or
    wholly absent, and nothing else is there."""
    root = tmp_path / "wal"
    chunk = trust.well_formed_entries(backend_name, adv_writer.TOPICS[0], 48)
    acked: dict[str, list[bytes]] = {t: [] for t in adv_writer.TOPICS}
    op = 0
    failures = []
    for rnd in range(KILL_ROUNDS):
        seed = 7000 + rnd
        rng = random.Random(f"kill:{seed}")
        delay = rng.uniform(0.05, 0.6)
        cfg = {
            "data_dir": str(root),
            "backend": backend_name,
            "geometry": adv_writer.GEOMETRY,
            "code": "from helpers import adv_writer\nadv_writer.run(wal, cfg, say)\n",
            "seed": 4242,
            "first_op": op,
            "max_ops": 2000,
            "chunk": chunk.hex(),
        }
        proc = subprocess.Popen(
            trust.child_argv(cfg), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        killer = threading.Timer(120, proc.kill)
        killer.start()
        in_flight: tuple[int, str, list[bytes]] | None = None
        try:
            assert proc.stdout is not None
            first_line = proc.stdout.readline()
            if first_line != "READY\n":
                proc.kill()
                _, err = proc.communicate(timeout=60)
                pytest.fail(f"the writer did not start: {first_line!r} {err[-2000:]}")
            timer = threading.Timer(delay, proc.send_signal, [signal.SIGKILL])
            timer.start()
            for line in proc.stdout:
                parts = line.split()
                if parts[0] == "B":
                    n = int(parts[3])
                    entries = [
                        adv_writer.payload(4242, int(parts[1]), i, chunk) for i in range(max(n, 1))
                    ]
                    in_flight = (int(parts[1]), parts[2], entries)
                elif parts[0] == "A":
                    assert in_flight is not None and in_flight[0] == int(parts[1])
                    topic = in_flight[1]
                    if int(parts[2]) != len(acked[topic]):
                        failures.append(
                            f"round {rnd}: op {parts[1]} landed at {parts[2]}, expected "
                            f"{len(acked[topic])}"
                        )
                    acked[topic].extend(in_flight[2])
                    op = in_flight[0] + 1
                    in_flight = None
            timer.cancel()
        finally:
            killer.cancel()
            proc.kill()
            proc.wait(timeout=60)
        STATS[backend_name]["kill_rounds"] += 1
        if in_flight is not None:
            op = in_flight[0] + 1

        def verify(in_flight: tuple[int, str, list[bytes]] | None = in_flight) -> list[str]:
            out = []
            with _open(root, backend_name) as wal:
                for topic in adv_writer.TOPICS:
                    mine = in_flight is not None and in_flight[1] == topic
                    extra = in_flight[2] if mine and in_flight is not None else []
                    exp = acked[topic] + extra
                    pr = trust.probe_offsets(wal, topic, exp)
                    n = len(acked[topic])
                    out += pr.wrong[:3]
                    lost = [o for o in range(n) if o not in pr.ok]
                    if lost:
                        out.append(f"{topic!r}: acknowledged offsets {lost[:10]} lost or damaged")
                    flying = set(range(n, len(exp)))
                    got = set(pr.ok) & flying
                    if got and got != flying:
                        out.append(
                            f"{topic!r}: part of the batch in flight is there: {sorted(got)}"
                        )
                    if set(pr.corrupt) & flying:
                        out.append(f"{topic!r}: the write in flight is kept damaged")
                    if mine and got == flying:
                        acked[topic].extend(extra)
                        STATS[backend_name]["kill_in_flight_present"] += 1
            return out

        try:
            problems = trust.bounded(verify, WATCHDOG, "reopen after SIGKILL")
        except Exception as exc:
            problems = [f"{type(exc).__name__}: {exc}"]
        if problems:
            failures.append(f"round {rnd} (seed {seed}, kill after {delay:.3f}s): {problems}")
            break  # the model no longer matches the directory
    assert not failures, "\n".join(failures)


# --- fork ------------------------------------------------------------------------------------

_FORK = r"""
import os
def ack(topic, got):
    say(f"A {topic} {got.start} {got.stop}")
for i in range(6):
    off = wal.append_for_topic("fk", b"<fk#%d>" % i)
    ack("fk", range(off, off + 1))
ack("fk", wal.batch_append_for_topic("fk", [b"<fk#%d>" % i for i in range(6, 10)]))
pid = os.fork()
if pid == 0:
    class Leave(Exception):
        pass
    try:
        with wal:  # the child leaves the with block of the instance it inherited
            raise Leave
    except Leave:
        pass
    except BaseException as exc:
        os.write(2, f"child close raised {type(exc).__name__}: {exc}\n".encode())
    os._exit(0)
os.waitpid(pid, 0)
n = 10
for round in range(8):
    off = wal.append_for_topic("fk", b"<fk#%d>" % n)
    ack("fk", range(off, off + 1))
    n += 1
    ack("fk", wal.batch_append_for_topic("fk", [b"<fk#%d>" % (n + i) for i in range(3)]))
    n += 3
    off = wal.append_for_topic("fk-new", b"<fk-new#%d>" % round)
    ack("fk-new", range(off, off + 1))
"""


def test_fork_child_closing_inherited_instance_loses_no_parent_ack(
    tmp_path: Path, backend_name: str
) -> None:
    """A process appends, forks; the child leaves the ``with`` block of the instance it
    inherited (closing it) and exits; the parent keeps appending (the same topic, and a new
    one) and is then killed with SIGKILL. After reopening, everything the parent acknowledged
    is there, exactly, and nothing else."""
    root = tmp_path / "wal"
    out = trust.run_child(_FORK, data_dir=root, backend=backend_name, geometry=GEOMETRY)
    acked: dict[str, list[bytes]] = {"fk": [], "fk-new": []}
    for line in out.splitlines():
        _, topic, start, stop = line.split()
        assert int(start) == len(acked[topic]), f"offsets out of order: {line}"
        name = topic.encode()
        acked[topic].extend(b"<%s#%d>" % (name, i) for i in range(int(start), int(stop)))
    if len(acked["fk-new"]) != 8:
        pytest.fail(f"the parent did not finish: {out}")
    acked["fk-new"] = [b"<fk-new#%d>" % i for i in range(8)]
    with _open(root, backend_name) as wal:
        for topic, exp in acked.items():
            pr = trust.probe_offsets(wal, topic, exp)
            STATS[backend_name]["fork_cases"] += 1
            assert not pr.wrong and pr.ok == list(range(len(exp))), (
                f"{topic!r}: {len(pr.ok)} of {len(exp)} acknowledged entries back after the "
                f"forked child closed its copy (missing {pr.missing[:8]}, corrupt "
                f"{pr.corrupt[:8]}; {trust.summary(pr.wrong, 2)})"
            )


# --- ENOSPC on a real small filesystem --------------------------------------------------------

ENOSPC_ROUNDS = 6 if SLOW else 2

_ENOSPC = r"""
import os, random
from pathlib import Path
from helpers.trust import fill_up
from walrus_core import StorageError
rng = random.Random(cfg["seed"])
topics = ("n-a", "n-b")
state = {"i": 0, "errors": 0}
def ops(count, stop_after_errors=None):
    for _ in range(count):
        if stop_after_errors is not None and state["errors"] >= stop_after_errors:
            return
        topic = rng.choice(topics)
        state["i"] += 1
        n = rng.choice((0, 0, 1, 3, 10))
        entries = [b"<n%d:%d>" % (state["i"], j) + bytes([j % 251]) * rng.choice((0, 50, 900, 3000))
                   for j in range(max(n, 1))]
        say(f"B {topic} " + " ".join(e.hex() for e in entries))
        try:
            if n == 0:
                first = wal.append_for_topic(topic, entries[0])
            else:
                first = wal.batch_append_for_topic(topic, entries).start
            say(f"A {first}")
        except StorageError as exc:
            state["errors"] += 1
            say(f"E {exc.errno}")
        except BaseException as exc:
            say(f"X {type(exc).__name__}: {exc}")
say("PHASE before")
ops(rng.randint(3, 30))
filler = fill_up(Path(cfg["mnt"]))
say("PHASE full")
ops(300, stop_after_errors=rng.randint(1, 6))  # until the full disk failed a few calls
os.remove(filler)
say("PHASE healed")
ops(rng.randint(3, 20))
"""


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    try:
        with trust.small_filesystem(tmp_path / "fs", 2048) as mnt:
            yield mnt
    except trust.MountRefused as exc:
        pytest.skip(f"cannot mount a small filesystem here: {exc}")


def test_enospc_on_a_real_filesystem_raises_storage_error_and_loses_no_ack(
    small_fs: Path, backend_name: str
) -> None:
    """Seeded appends and batches on a real 2 MiB filesystem that fills up (a filler file)
    and frees again, in a child that is then killed with SIGKILL: while full, every failing
    call raises StorageError (ENOSPC) and nothing else; once space is back, writes succeed
    again (at least one); after the reopen every acknowledged entry is exact, every failed
    one absent."""
    failures = []
    for rnd in range(ENOSPC_ROUNDS):
        root = small_fs / f"wal-{rnd}"
        out = trust.run_child(
            _ENOSPC,
            data_dir=root,
            backend=backend_name,
            geometry={"block_size": 4096, "blocks_per_file": 4},
            mnt=str(small_fs),
            seed=rnd,
        )
        acked: dict[str, list[bytes]] = collections.defaultdict(list)
        pending: tuple[str, list[bytes]] | None = None
        phase = ""
        errors: dict[str, list[str]] = collections.defaultdict(list)
        successes: collections.Counter[str] = collections.Counter()
        for line in out.splitlines():
            parts = line.split(" ")
            if parts[0] == "PHASE":
                phase = parts[1]
            elif parts[0] == "B":
                pending = (parts[1], [bytes.fromhex(h) for h in parts[2:]])
            elif parts[0] == "A":
                assert pending is not None
                if int(parts[1]) != len(acked[pending[0]]):
                    failures.append(f"round {rnd}: {line} for {len(acked[pending[0]])}")
                acked[pending[0]].extend(pending[1])
                successes[phase] += 1
                pending = None
            elif parts[0] == "E":
                errors[phase].append(parts[1])
                pending = None
            else:
                failures.append(f"round {rnd} ({phase}): {line}")
        if not errors["full"]:
            failures.append(f"round {rnd}: nothing failed on the full filesystem")
        if set(errors["full"]) - {str(errno.ENOSPC)}:
            failures.append(f"round {rnd}: StorageError errnos {errors['full']} (want ENOSPC)")
        for when in ("before", "healed"):
            if errors[when]:
                failures.append(f"round {rnd}: StorageError {errors[when]} with space ({when})")
        if not successes["healed"]:
            failures.append(f"round {rnd}: no write succeeded after space came back")
        with _open(root, backend_name) as wal:
            for topic, exp in acked.items():
                pr = trust.probe_offsets(wal, topic, exp)
                if pr.wrong or pr.ok != list(range(len(exp))):
                    failures.append(
                        f"round {rnd} {topic!r}: {len(pr.ok)} of {len(exp)} acknowledged exact; "
                        f"missing {pr.missing[:5]} corrupt {pr.corrupt[:5]} "
                        + trust.summary(pr.wrong, 2)
                    )
        STATS[backend_name]["enospc_rounds"] += 1
        shutil.rmtree(root, ignore_errors=True)
    assert not failures, "\n".join(failures)
