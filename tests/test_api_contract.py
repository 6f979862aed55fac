"""API contract: every public name of the issue and its documented semantics.

Backend-agnostic: every WAL is opened through the ``open_wal`` fixture (or with ``backend_name``).
"""

from __future__ import annotations

import array
import json
import logging
import mmap
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from helpers.reading import drain
from helpers.self_kill import run_then_kill

import walrus_core
from walrus_core import (
    BackendUnavailableError,
    Entry,
    FsyncSchedule,
    OffsetOutOfRangeError,
    ReadConsistency,
    Walrus,
    WalrusClosedError,
    WalrusError,
    available_backends,
    disable_fd_backend,
    enable_fd_backend,
)
from walrus_core.format import META_NAME, parse_data_file_name
from walrus_core.names import sanitize_key

OpenWal = Callable[..., Walrus]

GEOMETRY = {"block_size": 4096, "blocks_per_file": 4}


# --- helpers -------------------------------------------------------------------------------


def payloads(entries: list[Entry]) -> list[bytes]:
    return [e.data for e in entries]


def data_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if parse_data_file_name(p.name) is not None)


def env_open(backend_name: str, **kw: Any) -> Walrus:
    """Open without data_dir (env defaults), small geometry, the backend under test."""
    return Walrus(backend=backend_name, fsync=FsyncSchedule.no_fsync(), **GEOMETRY, **kw)


# --- names -----------------------------------------------------------------------------------


def test_public_names_exist() -> None:
    for name in [
        "Walrus",
        "ReadConsistency",
        "FsyncSchedule",
        "Entry",
        "WalrusError",
        "InvalidTopicError",
        "EntryTooLargeError",
        "BatchTooLargeError",
        "WalrusClosedError",
        "DirectoryLockedError",
        "BackendUnavailableError",
        "CorruptionError",
        "enable_fd_backend",
        "disable_fd_backend",
    ]:
        assert hasattr(walrus_core, name), name
    for name in [
        "append_for_topic",
        "batch_append_for_topic",
        "read_next",
        "batch_read_for_topic",
        "topic_entry_count",
        "topic_entry_counts",
        "topics",
        "seek",
        "flush",
        "close",
        "__enter__",
        "__exit__",
    ]:
        assert callable(getattr(Walrus, name)), name


def test_error_hierarchy() -> None:
    for name in ["InvalidTopicError", "EntryTooLargeError", "BatchTooLargeError"]:
        cls = getattr(walrus_core, name)
        assert issubclass(cls, WalrusError) and issubclass(cls, ValueError), name
    for name in [
        "WalrusClosedError",
        "DirectoryLockedError",
        "BackendUnavailableError",
        "CorruptionError",
    ]:
        assert issubclass(getattr(walrus_core, name), WalrusError), name
    assert issubclass(OffsetOutOfRangeError, ValueError)
    assert issubclass(OffsetOutOfRangeError, WalrusError)


def test_entry_is_frozen_attrs() -> None:
    e = Entry(data=b"abc", offset=3)
    assert attrs.has(Entry)
    assert e.data == b"abc" and e.offset == 3
    assert e == Entry(b"abc", 3)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        e.data = b"x"  # type: ignore[misc]


# --- appends ---------------------------------------------------------------------------------


def _payload_kinds() -> Iterator[tuple[str, Callable[[], Any], bytes]]:
    yield "bytes", lambda: b"hello", b"hello"
    yield "bytearray", lambda: bytearray(b"world"), b"world"
    yield "memoryview", lambda: memoryview(b"view-data"), b"view-data"
    yield "memoryview-slice", lambda: memoryview(b"abcdef")[2:4], b"cd"
    arr = array.array("I", [1, 2, 3, 0xFFFFFFFF])
    yield "array", lambda: array.array("I", [1, 2, 3, 0xFFFFFFFF]), arr.tobytes()
    yield "empty-bytes", lambda: b"", b""
    yield "memoryview-strided", lambda: memoryview(b"abcdef")[::2], b"ace"
    yield "memoryview-cast", lambda: memoryview(b"abcdefgh").cast("I"), b"abcdefgh"
    yield "memoryview-2d", lambda: memoryview(b"abcdef").cast("B", (2, 3)), b"abcdef"


@pytest.mark.parametrize(
    ("make", "expected"),
    [(m, e) for _, m, e in _payload_kinds()],
    ids=[n for n, _, _ in _payload_kinds()],
)
def test_buffer_protocol_payloads_accepted(
    open_wal: OpenWal, make: Callable[[], Any], expected: bytes
) -> None:
    wal = open_wal()
    assert wal.append_for_topic("t", make()) == 0
    assert wal.batch_append_for_topic("t", [make(), make()]) == range(1, 3)
    got = drain(wal, "t")
    assert got == [Entry(expected, 0), Entry(expected, 1), Entry(expected, 2)]
    assert all(type(e.data) is bytes for e in got)


def test_mmap_payload_accepted(open_wal: OpenWal) -> None:
    wal = open_wal()
    m = mmap.mmap(-1, 4096)
    try:
        m.write(b"mapped-bytes")
        expected = bytes(m[:])
        assert wal.append_for_topic("t", m) == 0
        assert wal.batch_append_for_topic("t", [m]) == range(1, 2)
    finally:
        m.close()
    got = drain(wal, "t")
    assert payloads(got) == [expected, expected]
    assert len(expected) == 4096


@pytest.mark.parametrize(
    "bad",
    ["text", 42, None, 1.5, [1, 2], object()],
    ids=["str", "int", "None", "float", "list", "object"],
)
def test_non_buffer_payloads_raise_type_error(open_wal: OpenWal, bad: Any) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"keep")
    with pytest.raises(TypeError):
        wal.append_for_topic("t", bad)
    with pytest.raises(TypeError):
        wal.batch_append_for_topic("t", [b"ok", bad])
    assert wal.topic_entry_count("t") == 1
    assert wal.append_for_topic("t", b"next") == 1
    assert payloads(drain(wal, "t")) == [b"keep", b"next"]


# --- batch_read budget ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "n"),
    [(300, 3), (500, 5), (1, 1), (350, 3), (100, 1), (199, 1), (200, 2), (2000, 20), (10**12, 20)],
)
def test_batch_read_budget(open_wal: OpenWal, budget: int, n: int) -> None:
    wal = open_wal()
    wal.batch_append_for_topic("t", [bytes([i]) * 100 for i in range(20)])
    expected = [Entry(bytes([i]) * 100, i) for i in range(20)]
    assert wal.batch_read_for_topic("t", budget, checkpoint=False) == expected[:n]
    assert wal.batch_read_for_topic("t", budget, start_offset=4) == expected[4 : 4 + n]
    assert wal.batch_read_for_topic("t", budget) == expected[:n]
    assert wal.topic_entry_count("t") == 20 - n
    rest = wal.batch_read_for_topic("t", budget)
    assert rest == expected[n : 2 * n]


def test_batch_read_returns_one_oversized_entry(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"x" * 10_000)
    wal.append_for_topic("t", b"y")
    assert wal.batch_read_for_topic("t", 10) == [Entry(b"x" * 10_000, 0)]
    assert wal.batch_read_for_topic("t", 10) == [Entry(b"y", 1)]
    assert wal.batch_read_for_topic("t", 10) == []


def test_batch_read_caps_at_2000_entries(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.batch_append_for_topic("t", [b"%04d" % i for i in range(2000)])
    wal.batch_append_for_topic("t", [b"%04d" % i for i in range(2000, 2500)])
    first = wal.batch_read_for_topic("t", 10**12)
    assert len(first) == 2000
    assert [e.offset for e in first] == list(range(2000))
    assert payloads(first) == [b"%04d" % i for i in range(2000)]
    second = wal.batch_read_for_topic("t", 10**12)
    assert [e.offset for e in second] == list(range(2000, 2500))
    assert wal.batch_read_for_topic("t", 10**12) == []


# --- start_offset -----------------------------------------------------------------------------


def test_start_offset_reads_do_not_move_cursors(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.batch_append_for_topic("t", [b"e%d" % i for i in range(6)])
    assert wal.read_next("t") == Entry(b"e0", 0)
    got = wal.batch_read_for_topic("t", 1000, checkpoint=True, start_offset=3)
    assert got == [Entry(b"e%d" % i, i) for i in range(3, 6)]
    got = wal.batch_read_for_topic("t", 1000, True, 0, consumer="c")
    assert [e.offset for e in got] == list(range(6))
    assert wal.topic_entry_count("t") == 5
    assert wal.topic_entry_count("t", consumer="c") == 6
    assert wal.read_next("t") == Entry(b"e1", 1)
    assert wal.read_next("t", consumer="c") == Entry(b"e0", 0)
    assert wal.batch_read_for_topic("t", 1000, start_offset=6) == []
    with pytest.raises(OffsetOutOfRangeError):
        wal.batch_read_for_topic("t", 1000, start_offset=7)
    with pytest.raises(ValueError):
        wal.batch_read_for_topic("t", 1000, start_offset=-1)
    wal.close()
    wal = open_wal()
    assert wal.read_next("t") == Entry(b"e2", 2)
    assert wal.read_next("t", consumer="c") == Entry(b"e1", 1)


def test_start_offset_on_unknown_topic(open_wal: OpenWal) -> None:
    wal = open_wal()
    assert wal.batch_read_for_topic("nothing", 100, start_offset=0) == []
    with pytest.raises(OffsetOutOfRangeError):
        wal.batch_read_for_topic("nothing", 100, start_offset=1)


# --- lifecycle --------------------------------------------------------------------------------


def test_close_idempotent_and_closed_error(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"x")
    wal.close()
    wal.close()
    calls: list[Callable[[], Any]] = [
        lambda: wal.append_for_topic("t", b"y"),
        lambda: wal.batch_append_for_topic("t", [b"y"]),
        lambda: wal.batch_append_for_topic("t", []),
        lambda: wal.read_next("t"),
        lambda: wal.read_next("t", checkpoint=False),
        lambda: wal.batch_read_for_topic("t", 100),
        lambda: wal.batch_read_for_topic("t", 100, start_offset=0),
        lambda: wal.topic_entry_count("t"),
        lambda: wal.topic_entry_counts(),
        lambda: wal.topics(),
        lambda: wal.seek("t", 0),
        lambda: wal.flush(),
    ]
    for call in calls:
        with pytest.raises(WalrusClosedError):
            call()
    wal.close()


def test_context_manager(wal_dir: Path, backend_name: str) -> None:
    kw: dict[str, Any] = {
        "data_dir": wal_dir,
        "backend": backend_name,
        "fsync": FsyncSchedule.no_fsync(),
        **GEOMETRY,
    }
    with Walrus(**kw) as wal:
        assert isinstance(wal, Walrus)
        assert wal.append_for_topic("t", b"ctx") == 0
    with pytest.raises(WalrusClosedError):
        wal.read_next("t")
    with pytest.raises(RuntimeError, match="boom"), Walrus(**kw) as wal2:
        wal2.append_for_topic("t", b"ctx2")
        raise RuntimeError("boom")
    with pytest.raises(WalrusClosedError):
        wal2.append_for_topic("t", b"no")
    # Both instances released the directory and persisted everything.
    with Walrus(**kw) as wal3:
        assert payloads(drain(wal3, "t")) == [b"ctx", b"ctx2"]


def test_flush_returns_none(open_wal: OpenWal) -> None:
    wal = open_wal(fsync=FsyncSchedule.milliseconds(50))
    wal.append_for_topic("t", b"x")
    wal.read_next("t")
    assert wal.flush() is None


def test_backend_chain(open_wal: OpenWal, backend_name: str) -> None:
    wal = open_wal()
    chain = wal.backend_chain
    assert isinstance(chain, tuple)
    assert chain and all(isinstance(n, str) for n in chain)
    assert chain[0] in backend_name.split(",")
    if backend_name == "fd":
        assert chain == ("fd",)


# --- persistence across kill -9 (the log-level behaviour tests are in walrus_core.testing) -----


def test_strict_cursor_survives_sigkill(
    wal_dir: Path, backend_name: str, open_wal: OpenWal
) -> None:
    code = (
        "wal.batch_append_for_topic('t', [b'%d' % i for i in range(6)])\n"
        "print(wal.read_next('t').offset, wal.read_next('t').offset)\n"
        "print(len(wal.batch_read_for_topic('t', 1)))\n"
    )
    out = run_then_kill(wal_dir, backend_name, code, None)
    assert out.split() == ["0", "1", "1"]
    wal = open_wal()
    assert wal.read_next("t") == Entry(b"3", 3)


def test_at_least_once_cursor_after_sigkill(
    wal_dir: Path, backend_name: str, open_wal: OpenWal
) -> None:
    # persist_every=3: two reads are not persisted; the third read call persists.
    code = (
        "wal.batch_append_for_topic('t', [b'%d' % i for i in range(10)])\n"
        "wal.batch_append_for_topic('u', [b'%d' % i for i in range(10)])\n"
        "for _ in range(2): wal.read_next('t')\n"
        "for _ in range(4): wal.read_next('u')\n"
    )
    run_then_kill(wal_dir, backend_name, code, 3)
    wal = open_wal(consistency=ReadConsistency.at_least_once(persist_every=3))
    assert wal.read_next("t") == Entry(b"0", 0)  # 2 < 3 consumed: replayed
    assert wal.read_next("u") == Entry(b"3", 3)  # persisted at the 3rd read
    assert wal.topic_entry_counts() == {"t": 9, "u": 6}
    assert wal.read_next("u") == Entry(b"4", 4)


# --- namespaces and env defaults --------------------------------------------------------------


def test_key_namespace_directory(tmp_path: Path, backend_name: str) -> None:
    data_dir = tmp_path / "data"
    with env_open(backend_name, data_dir=data_dir, key="prod/payments::v1") as wal:
        wal.append_for_topic("t", b"payments")
    ns = data_dir / sanitize_key("prod/payments::v1")  # prod_payments__v1~<hash>
    assert ns.is_dir()
    assert (ns / META_NAME).is_file()
    assert not (data_dir / META_NAME).exists()
    with env_open(backend_name, data_dir=data_dir, key="other") as wal:
        assert wal.topics() == []
        assert wal.read_next("t") is None
        wal.append_for_topic("t", b"other")
    with env_open(backend_name, data_dir=data_dir, key="prod/payments::v1") as wal:
        assert payloads(drain(wal, "t")) == [b"payments"]
    assert sorted(p.name for p in data_dir.iterdir()) == ["other", ns.name]


@pytest.mark.parametrize(
    "key", ["..", ".", "../..", "../escape", "/abs/path", "a/../../b", "", "_", "...", "./."]
)
def test_keys_never_escape_data_dir(tmp_path: Path, backend_name: str, key: str) -> None:
    outer = tmp_path / "outer"
    data_dir = outer / "data"
    data_dir.mkdir(parents=True)
    with env_open(backend_name, data_dir=data_dir, key=key) as wal:
        wal.append_for_topic("t", b"inside")
    assert sorted(p.name for p in outer.iterdir()) == ["data"]
    assert not (data_dir / META_NAME).exists()
    subdirs = [p for p in data_dir.iterdir()]
    assert len(subdirs) == 1 and subdirs[0].is_dir()
    assert (subdirs[0] / META_NAME).is_file()
    assert not list(tmp_path.glob("*.wal"))
    with env_open(backend_name, data_dir=data_dir, key=key) as wal:
        assert payloads(drain(wal, "t")) == [b"inside"]


def test_env_data_dir_default(
    tmp_path: Path, backend_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_dir = tmp_path / "from-env"
    monkeypatch.setenv("WALRUS_DATA_DIR", str(env_dir))
    monkeypatch.delenv("WALRUS_INSTANCE_KEY", raising=False)
    with env_open(backend_name) as wal:
        wal.append_for_topic("t", b"env")
    assert (env_dir / META_NAME).is_file()
    with env_open(backend_name, data_dir=env_dir) as wal:
        assert payloads(drain(wal, "t")) == [b"env"]


def test_env_instance_key_default(
    tmp_path: Path, backend_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_dir = tmp_path / "from-env"
    monkeypatch.setenv("WALRUS_DATA_DIR", str(env_dir))
    monkeypatch.setenv("WALRUS_INSTANCE_KEY", "tenant:a/b")
    with env_open(backend_name) as wal:
        wal.append_for_topic("t", b"keyed")
    assert (env_dir / sanitize_key("tenant:a/b") / META_NAME).is_file()
    assert not (env_dir / META_NAME).exists()
    # An explicit key wins over $WALRUS_INSTANCE_KEY.
    with env_open(backend_name, key="explicit") as wal:
        assert wal.topics() == []
        wal.append_for_topic("t", b"explicit")
    assert (env_dir / "explicit" / META_NAME).is_file()
    with env_open(backend_name, data_dir=env_dir, key="tenant:a/b") as wal:
        assert payloads(drain(wal, "t")) == [b"keyed"]


def test_default_data_dir_is_wal_files_in_cwd(
    tmp_path: Path, backend_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WALRUS_DATA_DIR", raising=False)
    monkeypatch.delenv("WALRUS_INSTANCE_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    with env_open(backend_name) as wal:
        wal.append_for_topic("t", b"cwd")
    assert (tmp_path / "wal_files" / META_NAME).is_file()


def test_env_backend_default(
    wal_dir: Path, backend_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WALRUS_BACKEND", backend_name)
    with Walrus(data_dir=wal_dir, fsync=FsyncSchedule.no_fsync(), **GEOMETRY) as wal:
        assert wal.backend_chain[0] in backend_name.split(",")
    monkeypatch.setenv("WALRUS_BACKEND", "no-such-backend-xyz")
    with pytest.raises(BackendUnavailableError, match="no backend named 'no-such-backend-xyz'"):
        Walrus(data_dir=wal_dir, fsync=FsyncSchedule.no_fsync(), **GEOMETRY)


# --- geometry ---------------------------------------------------------------------------------


def _walrus_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("walrus_core")
    ]


def test_geometry_recorded_and_reused(
    wal_dir: Path, backend_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    kw: dict[str, Any] = {
        "data_dir": wal_dir,
        "backend": backend_name,
        "fsync": FsyncSchedule.no_fsync(),
    }
    with caplog.at_level(logging.WARNING):
        with Walrus(block_size=8192, blocks_per_file=3, **kw) as wal:
            wal.append_for_topic("t", b"a")
        assert _walrus_warnings(caplog) == []
        files = data_files(wal_dir)
        assert files and files[0].stat().st_size == 8192 * 3
        meta = json.loads((wal_dir / META_NAME).read_text())
        assert meta["block_size"] == 8192 and meta["blocks_per_file"] == 3

        # No geometry given: the recorded one is used, silently.
        with Walrus(**kw) as wal:
            for i in range(40):  # several blocks: new data files use the recorded geometry
                wal.append_for_topic(f"t{i}", b"x" * 3000)
        assert _walrus_warnings(caplog) == []
        files = data_files(wal_dir)
        assert len(files) > 1
        assert {f.stat().st_size for f in files} == {8192 * 3}

        # The same geometry: silent too.
        with Walrus(block_size=8192, blocks_per_file=3, **kw):
            pass
        assert _walrus_warnings(caplog) == []

        # Different geometry: a warning, and the recorded geometry still wins.
        n_files = len(data_files(wal_dir))
        with Walrus(block_size=4096, blocks_per_file=4, **kw) as wal:
            assert payloads(drain(wal, "t")) == [b"a"]
            for i in range(40):
                wal.append_for_topic(f"u{i}", b"y" * 3000)
        assert len(_walrus_warnings(caplog)) >= 1
        files = data_files(wal_dir)
        assert len(files) > n_files
        assert {f.stat().st_size for f in files} == {8192 * 3}
    meta = json.loads((wal_dir / META_NAME).read_text())
    assert meta["block_size"] == 8192 and meta["blocks_per_file"] == 3


# --- backends ---------------------------------------------------------------------------------


def _mmap_available() -> bool:
    return any(s.name == "mmap" and s.available for s in available_backends())


def _available(name: str) -> bool:
    return any(s.name == name and s.available for s in available_backends())


def test_disable_fd_backend_makes_auto_resolve_to_mmap(
    wal_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WALRUS_BACKEND", raising=False)
    kw: dict[str, Any] = {"data_dir": wal_dir, "fsync": FsyncSchedule.no_fsync(), **GEOMETRY}
    try:
        disable_fd_backend()
        for backend in ("auto", None):
            if _mmap_available():
                with Walrus(backend=backend, **kw) as wal:
                    assert wal.backend_chain[0] == "mmap"
            else:
                with pytest.raises(BackendUnavailableError, match=r"passing over families"):
                    Walrus(backend=backend, **kw)
        if _available("fd"):  # explicit names are not affected by the switch
            with Walrus(backend="fd", **kw) as wal:
                assert wal.backend_chain == ("fd",)
    finally:
        enable_fd_backend()
    # Enabled again, "auto" picks the fd family (fd, or io_uring layered over it) when installed.
    for backend in ("auto", None):
        with Walrus(backend=backend, **kw) as wal:
            if _available("fd"):
                assert wal.backend_chain[-1] == "fd"
            else:
                assert wal.backend_chain == ("mmap",)
            wal.append_for_topic("t", b"x")


def test_unknown_backend(wal_dir: Path) -> None:
    with pytest.raises(BackendUnavailableError, match=r"; installed: [a-z]") as info:
        Walrus(
            data_dir=wal_dir,
            backend="definitely-not-installed",
            fsync=FsyncSchedule.no_fsync(),
            **GEOMETRY,
        )
    assert "definitely-not-installed" in str(info.value)


def test_available_backends_lists_the_backend_under_test(backend_name: str) -> None:
    statuses = {s.name: s for s in available_backends()}
    for name in backend_name.split(","):
        assert name in statuses
    assert any(statuses[name].available for name in backend_name.split(","))
    for status in statuses.values():
        assert status.version, status


def test_reads_of_unknown_topics_create_nothing(open_wal: OpenWal) -> None:
    wal = open_wal()
    wal.append_for_topic("real", b"x")
    assert wal.read_next("ghost") is None
    assert wal.read_next("ghost", consumer="c") is None
    assert wal.batch_read_for_topic("ghost", 10) == []
    assert wal.batch_read_for_topic("ghost", 10, start_offset=0) == []
    assert wal.topic_entry_count("ghost") == 0
    wal.seek("ghost", 0)
    wal.seek("ghost", 0, consumer="c")
    assert wal.topics() == ["real"]
    assert wal.topic_entry_counts() == {"real": 1}
    wal.close()
    wal = open_wal()
    assert wal.topics() == ["real"]
    assert wal.topic_entry_counts() == {"real": 1}
    assert wal.append_for_topic("ghost", b"now real") == 0
    assert wal.read_next("ghost") == Entry(b"now real", 0)


def test_opening_without_writing_creates_no_data_files(open_wal: OpenWal, wal_dir: Path) -> None:
    wal = open_wal()
    wal.append_for_topic("t", b"x")
    wal.close()
    before = sorted((p.name, p.stat().st_size) for p in data_files(wal_dir))
    for _ in range(5):
        wal = open_wal()
        assert wal.read_next("t", checkpoint=False) == Entry(b"x", 0)
        wal.close()
    assert sorted((p.name, p.stat().st_size) for p in data_files(wal_dir)) == before


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_close_releases_descriptors_and_threads(open_wal: OpenWal) -> None:
    wal = open_wal(fsync=FsyncSchedule.milliseconds(5))
    wal.append_for_topic("t", b"warm-up")
    wal.close()
    fds, threads = _open_fds(), threading.active_count()
    for i in range(5):
        wal = open_wal(fsync=FsyncSchedule.milliseconds(5))
        for j in range(20):
            wal.append_for_topic(f"topic-{j}", b"%d" % i)  # many blocks and files
        wal.read_next("t")
        wal.close()
        assert _open_fds() == fds
        assert threading.active_count() == threads
