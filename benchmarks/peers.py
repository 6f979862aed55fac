"""Other embedded stores a Python program could use as a log or a queue ("peers"), one
:class:`~benchmarks.subjects.Subject` per library, each imported only when it is used.

Each maps onto D0/D1/D2 only where it really offers that level (read from the libraries' own
source, versions pinned in pyproject's ``bench`` extra):

* ``sqlite3`` (stdlib): WAL mode, a ``log(offset INTEGER PRIMARY KEY, data BLOB)`` table and an
  ``offsets`` table for the consumer's position; ``synchronous`` OFF / NORMAL / FULL.
  NORMAL in WAL mode syncs the WAL only at checkpoints (every ~1000 pages by default): durable
  within a bounded amount of later writes, not of time.
* ``lmdb``: keys are 8-byte big-endian offsets, ``put(append=True)`` in a write transaction per
  call; the position lives in a second named database. D0 ``sync=False``, D1 the same plus a
  thread calling ``env.sync(True)`` every 200 ms, D2 ``sync=True``.
* ``rocksdict`` (RocksDB): raw mode, 8-byte big-endian keys, ``WriteBatch`` for batches, an
  iterator ``seek`` for batch reads, the position under a key after every offset. D0
  ``WriteOptions.sync=False`` (the WAL is written to the OS on every write), D1 the same plus a
  thread calling ``flush_wal(True)`` every 200 ms, D2 ``sync=True``.
* ``persist-queue`` ``SQLiteAckQueue``: SQLite in WAL mode at SQLite's default
  ``synchronous=FULL``, and ``auto_commit`` forced on (the ack queue refuses to turn it off):
  every ``put``, ``get`` and ``ack`` is a synced commit. D2 only; no grouped commits.
* ``persist-queue`` ``Queue`` (files): ``put`` writes and flushes the pickled item to the OS and
  replaces the ``info`` file (temp file + rename) each time; ``task_done`` saves the position the
  same way. No fsync except of a chunk file when it is full (every 100 items); the ``info`` file
  and the directory are never synced, so no bound on durability: D0 only.
* ``diskcache`` ``Deque``: a SQLite cache in WAL mode; ``sqlite_synchronous`` 0 / 1 (its
  default) / 2. Values of 32 KiB and more would go to separate files written without fsync, so
  ``disk_min_file_size`` is raised to keep every payload in SQLite (else D2 would be false for
  64 KiB entries). Batches are ``extend`` inside ``transact()``.
* ``queuelib`` ``FifoDiskQueue``: ``push`` is one ``os.write`` (the page cache), but the head and
  tail positions stay in memory until ``close()``: a crash loses the queue's position (entries
  pushed since the open are invisible to the next one, popped ones come back). No commit
  exists and nothing is ever synced. Shown as D0 with a star.

The queues have no reads by offset, so they appear in the append and consume workloads only.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import itertools
import os
import sqlite3
import struct
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any, ClassVar

from benchmarks.data import BATCH
from benchmarks.periodic import PeriodicSync
from benchmarks.subjects import (
    APPEND,
    BATCH_READ,
    CONSUME_EACH,
    CONSUME_GROUP,
    RANDOM,
    THREADS,
    Got,
    Level,
    Subject,
    Unavailable,
)
from benchmarks.subjects import BATCH as BATCH_CAP

_KEY = struct.Struct(">Q").pack
INSTALL = "pip install walrus-core[bench]"


def _require(module: str, dist: str) -> Any:
    """Import ``module`` or raise :class:`Unavailable` with the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise Unavailable(f"skipped: {dist} not installed ({INSTALL})") from None


def _dist(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


# --- sqlite3 ------------------------------------------------------------------------------------


class SqliteSubject(Subject):
    """A log table and an offsets table in one SQLite database, WAL mode, autocommit."""

    library = "sqlite3"
    kind = "peer"
    caps = frozenset({APPEND, BATCH_CAP, CONSUME_EACH, CONSUME_GROUP, BATCH_READ, RANDOM, THREADS})
    levels: ClassVar[dict[Level, str]] = {
        Level.D0: "WAL, synchronous=OFF",
        Level.D1: "WAL, synchronous=NORMAL (WAL synced at checkpoints)",
        Level.D2: "WAL, synchronous=FULL (WAL synced at every commit)",
    }
    note = "a commit per call (autocommit); a batch is BEGIN, executemany, COMMIT"
    _SYNC: ClassVar[dict[Level, str]] = {Level.D0: "OFF", Level.D1: "NORMAL", Level.D2: "FULL"}
    _INSERT = "INSERT INTO log(offset, data) VALUES (?, ?)"
    _SELECT = "SELECT data FROM log WHERE offset = ?"
    _COMMIT_POS = "UPDATE offsets SET pos = ? WHERE consumer = 'default'"

    def __init__(
        self, path: str, level: Level, size: int, *, commit_every: int = 1, rereads: bool = False
    ) -> None:
        super().__init__(path, level, size, commit_every=commit_every, rereads=rereads)
        self.file = os.path.join(path, "log.db")
        self.conns: list[sqlite3.Connection] = []
        self.conn = self._connect()
        self.conn.execute("CREATE TABLE IF NOT EXISTS log (offset INTEGER PRIMARY KEY, data BLOB)")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS offsets (consumer TEXT PRIMARY KEY, pos INTEGER)"
        )
        self.conn.execute("INSERT OR IGNORE INTO offsets VALUES ('default', 0)")
        self.next = 0
        self.pos = 0

    @classmethod
    def version(cls) -> str:
        return f"SQLite {sqlite3.sqlite_version}"

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.file, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._SYNC[self.level]}")
        conn.execute("PRAGMA busy_timeout=60000")
        self.conns.append(conn)
        return conn

    def append(self, payloads: list[bytes]) -> None:
        ex, sql = self.conn.execute, self._INSERT
        o = self.next
        for p in payloads:
            ex(sql, (o, p))
            o += 1
        self.next = o

    def append_batches(self, batches: list[list[bytes]]) -> None:
        conn, sql = self.conn, self._INSERT
        o = self.next
        for b in batches:
            conn.execute("BEGIN")
            conn.executemany(sql, zip(range(o, o + len(b)), b, strict=True))
            conn.execute("COMMIT")
            o += len(b)
        self.next = o

    def fill(self, payloads: list[bytes]) -> None:
        # Untimed set-up: one transaction (a commit per 1000 entries would cost a WAL sync or
        # checkpoint each, for nothing measured).
        self.append_batches([payloads])

    def consume(self, n: int) -> Got:
        ex, sel, upd = self.conn.execute, self._SELECT, self._COMMIT_POS
        every = self.commit_every
        row: Any = None
        i = self.pos
        end = self.pos + n
        if every <= 1:
            for i in range(self.pos, end):
                row = ex(sel, (i,)).fetchone()
                ex(upd, (i + 1,))
        else:
            for start in range(self.pos, end, every):
                for i in range(start, min(start + every, end)):
                    row = ex(sel, (i,)).fetchone()
                ex(upd, (i + 1,))
        self.pos = end
        return Got(i, None if row is None else row[0])

    def rewind(self) -> None:
        self.pos = 0
        self.conn.execute(self._COMMIT_POS, (0,))

    def read_batches(self, calls: int) -> Got:
        ex, upd = self.conn.execute, self._COMMIT_POS
        sql = "SELECT offset, data FROM log WHERE offset >= ? ORDER BY offset LIMIT 1000"
        pos = self.pos
        rows: list[Any] = []
        for _ in range(calls):
            rows = ex(sql, (pos,)).fetchall()
            pos += len(rows)
            ex(upd, (pos,))
        self.pos = pos
        return Got(rows[-1][0], rows[-1][1]) if rows else Got(-1, None)

    def random_reads(self, offsets: list[int]) -> Got:
        ex, sel = self.conn.execute, self._SELECT
        row: Any = None
        for k in offsets:
            row = ex(sel, (k,)).fetchone()
        return Got(offsets[-1], None if row is None else row[0])

    def thread_appender(self, thread: int) -> Callable[[list[bytes]], None]:
        ex = self._connect().execute  # one connection per thread, as SQLite wants
        sql = "INSERT INTO log(data) VALUES (?)"

        def run(payloads: list[bytes]) -> None:
            for p in payloads:
                ex(sql, (p,))

        return run

    def read_all(self) -> Iterator[bytes]:
        for (data,) in self.conn.execute("SELECT data FROM log ORDER BY offset"):
            yield data

    def close(self) -> None:
        for conn in self.conns:
            conn.close()


# --- lmdb ----------------------------------------------------------------------------------------


class LmdbSubject(Subject):
    """Entries under 8-byte big-endian offsets in a named database; the position in another."""

    library = "lmdb"
    kind = "peer"
    caps = frozenset({APPEND, BATCH_CAP, CONSUME_EACH, CONSUME_GROUP, BATCH_READ, RANDOM, THREADS})
    levels: ClassVar[dict[Level, str]] = {
        Level.D0: "sync=False",
        Level.D1: "sync=False + a thread calling env.sync(True) every 200 ms",
        Level.D2: "sync=True (data and meta page synced at every commit)",
    }
    note = "a write transaction per call (put(append=True), putmulti for a batch)"

    def __init__(
        self, path: str, level: Level, size: int, *, commit_every: int = 1, rereads: bool = False
    ) -> None:
        super().__init__(path, level, size, commit_every=commit_every, rereads=rereads)
        lmdb = _require("lmdb", "lmdb")
        self.env = lmdb.open(
            path,
            map_size=1 << 38,  # address space only: the file grows as pages are used
            sync=level is Level.D2,
            max_dbs=2,
            writemap=False,
        )
        self.log = self.env.open_db(b"log")
        self.cursor_db = self.env.open_db(b"cursor")
        self.next = 0
        self.pos = 0
        self.sync = PeriodicSync(lambda: self.env.sync(True)) if level is Level.D1 else None

    @classmethod
    def version(cls) -> str:
        lmdb = _require("lmdb", "lmdb")
        return f"{_dist('lmdb')} (LMDB {'.'.join(map(str, lmdb.version()))})"

    def append(self, payloads: list[bytes]) -> None:
        begin, log, key = self.env.begin, self.log, _KEY
        o = self.next
        for p in payloads:
            with begin(write=True, db=log) as txn:
                txn.put(key(o), p, append=True)
            o += 1
        self.next = o

    def append_batches(self, batches: list[list[bytes]]) -> None:
        begin, log, key = self.env.begin, self.log, _KEY
        o = self.next
        for b in batches:
            with begin(write=True, db=log) as txn:
                pairs = zip(map(key, range(o, o + len(b))), b, strict=True)
                txn.cursor().putmulti(pairs, append=True)
            o += len(b)
        self.next = o

    def consume(self, n: int) -> Got:
        begin, log, cdb, key = self.env.begin, self.log, self.cursor_db, _KEY
        every = self.commit_every
        data: Any = None
        i = self.pos
        end = self.pos + n
        if every <= 1:
            for i in range(self.pos, end):
                with begin(write=True, db=log) as txn:
                    data = txn.get(key(i))
                    txn.put(b"default", key(i + 1), db=cdb)
        else:
            for start in range(self.pos, end, every):
                with begin(write=True, db=log) as txn:
                    get = txn.get
                    for i in range(start, min(start + every, end)):
                        data = get(key(i))
                    txn.put(b"default", key(i + 1), db=cdb)
        self.pos = end
        return Got(i, data)

    def rewind(self) -> None:
        self.pos = 0
        with self.env.begin(write=True, db=self.cursor_db) as txn:
            txn.put(b"default", _KEY(0))

    def read_batches(self, calls: int) -> Got:
        begin, log, cdb, key = self.env.begin, self.log, self.cursor_db, _KEY
        pos = self.pos
        vals: list[bytes] = []
        for _ in range(calls):
            with begin(write=True, db=log) as txn:
                cur = txn.cursor()
                cur.set_key(key(pos))
                vals = list(islice(cur.iternext(keys=False, values=True), BATCH))
                pos += len(vals)
                txn.put(b"default", key(pos), db=cdb)
        self.pos = pos
        return Got(pos - 1, vals[-1] if vals else None)

    def random_reads(self, offsets: list[int]) -> Got:
        begin, log, key = self.env.begin, self.log, _KEY
        data: Any = None
        for k in offsets:
            with begin(db=log) as txn:
                data = txn.get(key(k))
        return Got(offsets[-1], data)

    def thread_appender(self, thread: int) -> Callable[[list[bytes]], None]:
        begin, log, key = self.env.begin, self.log, _KEY

        def run(payloads: list[bytes]) -> None:
            for p in payloads:
                with begin(write=True, db=log) as txn:
                    o = self.next  # the write transaction is exclusive: this is its offset
                    self.next = o + 1
                    txn.put(key(o), p, append=True)

        return run

    def read_all(self) -> Iterator[bytes]:
        with self.env.begin(db=self.log) as txn:
            yield from txn.cursor().iternext(keys=False, values=True)

    def close(self) -> None:
        if self.sync is not None:
            self.sync.stop()
        if self.level is not Level.D0:
            self.env.sync(True)
        self.env.close()


# --- rocksdict -----------------------------------------------------------------------------------

_ROCKS_POS = b"\xff" * 9  # sorts after every 8-byte offset key


class RocksSubject(Subject):
    """RocksDB through rocksdict in raw mode; the position under a key after all offsets."""

    library = "rocksdict"
    kind = "peer"
    caps = frozenset({APPEND, BATCH_CAP, CONSUME_EACH, CONSUME_GROUP, BATCH_READ, RANDOM, THREADS})
    levels: ClassVar[dict[Level, str]] = {
        Level.D0: "WriteOptions.sync=False (WAL written to the OS per write)",
        Level.D1: "sync=False + a thread calling flush_wal(True) every 200 ms",
        Level.D2: "WriteOptions.sync=True (WAL synced per write)",
    }
    note = "put per call, WriteBatch per batch, an iterator seek per batch read"

    def __init__(
        self, path: str, level: Level, size: int, *, commit_every: int = 1, rereads: bool = False
    ) -> None:
        super().__init__(path, level, size, commit_every=commit_every, rereads=rereads)
        rd = _require("rocksdict", "rocksdict")
        self._rd = rd
        opts = rd.Options(raw_mode=True)
        opts.create_if_missing(True)
        self.db = rd.Rdict(path, opts)
        wo = rd.WriteOptions()
        wo.sync = level is Level.D2
        self.db.set_write_options(wo)
        self.next = 0
        self.pos = 0
        self.counter = itertools.count()  # offsets for the threaded workload (atomic next())
        self.sync = PeriodicSync(lambda: self.db.flush_wal(True)) if level is Level.D1 else None

    @classmethod
    def version(cls) -> str:
        _require("rocksdict", "rocksdict")
        return _dist("rocksdict")

    def append(self, payloads: list[bytes]) -> None:
        put, key = self.db.put, _KEY
        o = self.next
        for p in payloads:
            put(key(o), p)
            o += 1
        self.next = o

    def append_batches(self, batches: list[list[bytes]]) -> None:
        write, wbatch, key = self.db.write, self._rd.WriteBatch, _KEY
        o = self.next
        for b in batches:
            wb = wbatch(raw_mode=True)
            put = wb.put
            for p in b:
                put(key(o), p)
                o += 1
            write(wb)
        self.next = o

    def consume(self, n: int) -> Got:
        get, put, key = self.db.get, self.db.put, _KEY
        every = self.commit_every
        data: Any = None
        i = self.pos
        end = self.pos + n
        if every <= 1:
            for i in range(self.pos, end):
                data = get(key(i))
                put(_ROCKS_POS, key(i + 1))
        else:
            for start in range(self.pos, end, every):
                for i in range(start, min(start + every, end)):
                    data = get(key(i))
                put(_ROCKS_POS, key(i + 1))
        self.pos = end
        return Got(i, data)

    def rewind(self) -> None:
        self.pos = 0
        self.db.put(_ROCKS_POS, _KEY(0))

    def read_batches(self, calls: int) -> Got:
        db, put, key = self.db, self.db.put, _KEY
        pos = self.pos
        vals: list[bytes] = []
        for _ in range(calls):
            it = db.iter()
            it.seek(key(pos))
            vals = []
            add = vals.append
            for _ in range(BATCH):
                if not it.valid():
                    break
                add(it.value())
                it.next()
            del it
            pos += len(vals)
            put(_ROCKS_POS, key(pos))
        self.pos = pos
        return Got(pos - 1, vals[-1] if vals else None)

    def random_reads(self, offsets: list[int]) -> Got:
        get, key = self.db.get, _KEY
        data: Any = None
        for k in offsets:
            data = get(key(k))
        return Got(offsets[-1], data)

    def thread_appender(self, thread: int) -> Callable[[list[bytes]], None]:
        put, key, counter = self.db.put, _KEY, self.counter

        def run(payloads: list[bytes]) -> None:
            for p in payloads:
                put(key(next(counter)), p)

        return run

    def read_all(self) -> Iterator[bytes]:
        it = self.db.iter()
        it.seek_to_first()
        while it.valid() and it.key() != _ROCKS_POS:
            yield it.value()
            it.next()
        del it

    def close(self) -> None:
        if self.sync is not None:
            self.sync.stop()
        if self.level is not Level.D0:
            self.db.flush_wal(True)
        self.db.close()


# --- persist-queue --------------------------------------------------------------------------------


class PQAckSubject(Subject):
    """persist-queue's SQLiteAckQueue: put, then get + ack per entry."""

    library = "persist-queue.SQLiteAckQueue"
    kind = "peer"
    caps = frozenset({APPEND, CONSUME_EACH})
    levels: ClassVar[dict[Level, str]] = {
        Level.D2: "its only mode: WAL at SQLite's default synchronous=FULL, a commit per call",
    }
    note = "get() commits (marks the row unacked) and ack() commits again; items are pickled"
    cap_notes: ClassVar[dict[str, str]] = {
        CONSUME_GROUP: "every get() and ack() is its own commit (auto_commit cannot be off)",
    }

    def __init__(
        self, path: str, level: Level, size: int, *, commit_every: int = 1, rereads: bool = False
    ) -> None:
        super().__init__(path, level, size, commit_every=commit_every, rereads=rereads)
        pq = _require("persistqueue", "persist-queue")
        self.q = pq.SQLiteAckQueue(os.path.join(path, "q"), auto_commit=True)
        self._empty = pq.Empty
        self.consumed = 0

    @classmethod
    def version(cls) -> str:
        _require("persistqueue", "persist-queue")
        return _dist("persist-queue")

    def append(self, payloads: list[bytes]) -> None:
        put = self.q.put
        for p in payloads:
            put(p)

    def consume(self, n: int) -> Got:
        get, ack = self.q.get, self.q.ack
        item: Any = None
        for _ in range(n):
            item = get(block=False, raw=True)
            ack(id=item["pqid"])
        self.consumed += n
        return Got(self.consumed - 1, None if item is None else item["data"])

    def read_all(self) -> Iterator[bytes]:
        while True:
            try:
                yield self.q.get(block=False)
            except self._empty:
                return

    def close(self) -> None:
        self.q.close()


class PQFileSubject(Subject):
    """persist-queue's file-based Queue: put, then get + task_done."""

    library = "persist-queue.Queue"
    kind = "peer"
    caps = frozenset({APPEND, CONSUME_EACH, CONSUME_GROUP})
    levels: ClassVar[dict[Level, str]] = {
        Level.D0: "its only mode: write + flush to the OS, info file replaced by rename, no fsync",
    }
    note = "task_done() saves the position (once per group: 1000 gets, then 1000 task_done())"

    def __init__(
        self, path: str, level: Level, size: int, *, commit_every: int = 1, rereads: bool = False
    ) -> None:
        super().__init__(path, level, size, commit_every=commit_every, rereads=rereads)
        pq = _require("persistqueue", "persist-queue")
        tmp = os.path.join(path, "tmp")  # its temp files, on the same file system
        os.makedirs(tmp, exist_ok=True)
        self.q = pq.Queue(os.path.join(path, "q"), tempdir=tmp, autosave=False)
        self._empty = pq.Empty
        self.consumed = 0

    @classmethod
    def version(cls) -> str:
        _require("persistqueue", "persist-queue")
        return _dist("persist-queue")

    def append(self, payloads: list[bytes]) -> None:
        put = self.q.put
        for p in payloads:
            put(p)

    def consume(self, n: int) -> Got:
        get, done = self.q.get, self.q.task_done
        every = self.commit_every
        item: Any = None
        if every <= 1:
            for _ in range(n):
                item = get(block=False)
                done()
        else:
            for start in range(0, n, every):
                k = min(every, n - start)
                for _ in range(k):
                    item = get(block=False)
                for _ in range(k):
                    done()
        self.consumed += n
        return Got(self.consumed - 1, item)

    def read_all(self) -> Iterator[bytes]:
        while True:
            try:
                yield self.q.get(block=False)
            except self._empty:
                return

    def close(self) -> None:
        # Queue has no close(): its files close when it is collected.
        for f in (self.q.headf, self.q.tailf):
            f.close()


# --- diskcache -----------------------------------------------------------------------------------


class DequeSubject(Subject):
    """diskcache's Deque over a Cache whose SQLite sync level is set per level."""

    library = "diskcache.Deque"
    kind = "peer"
    caps = frozenset({APPEND, BATCH_CAP, CONSUME_EACH, CONSUME_GROUP})
    levels: ClassVar[dict[Level, str]] = {
        Level.D0: "sqlite_synchronous=0 (OFF), WAL",
        Level.D1: "sqlite_synchronous=1 (NORMAL, its default), WAL",
        Level.D2: "sqlite_synchronous=2 (FULL), WAL",
    }
    note = (
        "disk_min_file_size raised so payloads stay in SQLite; a batch is extend() in"
        " transact(); popleft() per entry, grouped in transact() when committing every 1000"
    )

    def __init__(
        self, path: str, level: Level, size: int, *, commit_every: int = 1, rereads: bool = False
    ) -> None:
        super().__init__(path, level, size, commit_every=commit_every, rereads=rereads)
        dc = _require("diskcache", "diskcache")
        sync = {Level.D0: 0, Level.D1: 1, Level.D2: 2}[level]
        self.cache = dc.Cache(
            os.path.join(path, "deque"),
            eviction_policy="none",
            sqlite_synchronous=sync,
            disk_min_file_size=1 << 30,
        )
        self.dq = dc.Deque.fromcache(self.cache)
        self.consumed = 0

    @classmethod
    def version(cls) -> str:
        _require("diskcache", "diskcache")
        return _dist("diskcache")

    def append(self, payloads: list[bytes]) -> None:
        ap = self.dq.append
        for p in payloads:
            ap(p)

    def append_batches(self, batches: list[list[bytes]]) -> None:
        dq = self.dq
        for b in batches:
            with dq.transact():
                dq.extend(b)

    def consume(self, n: int) -> Got:
        dq, pop = self.dq, self.dq.popleft
        every = self.commit_every
        item: Any = None
        if every <= 1:
            for _ in range(n):
                item = pop()
        else:
            for start in range(0, n, every):
                with dq.transact():
                    for _ in range(min(every, n - start)):
                        item = pop()
        self.consumed += n
        return Got(self.consumed - 1, item)

    def read_all(self) -> Iterator[bytes]:
        yield from self.dq

    def close(self) -> None:
        self.cache.close()


# --- queuelib ------------------------------------------------------------------------------------


class QueuelibSubject(Subject):
    """queuelib's FifoDiskQueue: push, pop."""

    library = "queuelib.FifoDiskQueue"
    kind = "peer"
    caps = frozenset({APPEND, CONSUME_EACH, CONSUME_GROUP})
    levels: ClassVar[dict[Level, str]] = {
        Level.D0: "its only mode: os.write per push, positions saved only by close()",
    }
    flagged = frozenset({Level.D0})
    note = (
        "* not even D0: it keeps head/tail positions in memory until close(), so a crash loses"
        " its position (new entries vanish, consumed ones come back); pop() commits nothing"
    )

    def __init__(
        self, path: str, level: Level, size: int, *, commit_every: int = 1, rereads: bool = False
    ) -> None:
        super().__init__(path, level, size, commit_every=commit_every, rereads=rereads)
        ql = _require("queuelib", "queuelib")
        self.q = ql.FifoDiskQueue(os.path.join(path, "q"))
        self.consumed = 0

    @classmethod
    def version(cls) -> str:
        _require("queuelib", "queuelib")
        return _dist("queuelib")

    def append(self, payloads: list[bytes]) -> None:
        push = self.q.push
        for p in payloads:
            push(p)

    def consume(self, n: int) -> Got:
        pop = self.q.pop
        item: Any = None
        for _ in range(n):
            item = pop()
        self.consumed += n
        return Got(self.consumed - 1, item)

    def read_all(self) -> Iterator[bytes]:
        while True:
            item = self.q.pop()
            if item is None:
                return
            yield item

    def close(self) -> None:
        self.q.close()


PEERS: list[type[Subject]] = [
    SqliteSubject,
    LmdbSubject,
    RocksSubject,
    PQAckSubject,
    PQFileSubject,
    DequeSubject,
    QueuelibSubject,
]
