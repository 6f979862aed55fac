"""The FD backend's vectored writes: more buffers than IOV_MAX, and short writes continued
exactly where they stopped (what a signal or a nearly full disk does to pwritev)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

walrus_fd = pytest.importorskip("walrus_fd", reason="walrus-fd is not installed")


def _buffers() -> list[Any]:
    out: list[Any] = []
    for i in range(3 * walrus_fd._IOV_MAX + 7):
        data = bytes([i % 256]) * (i % 13 + 1)
        out.append(data if i % 3 else memoryview(bytearray(data)))
    return out


def test_more_buffers_than_iov_max_land_in_order(tmp_path: Path) -> None:
    bufs = _buffers()
    expected = b"".join(bytes(b) for b in bufs)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        walrus_fd._pwritev_all(fd, bufs, 4096, len(expected))
        assert os.pread(fd, len(expected) + 10, 4096) == expected
    finally:
        os.close(fd)


@pytest.mark.parametrize("cap", [1, 7, 100, 4093])
def test_short_writes_are_continued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cap: int
) -> None:
    real = os.pwritev
    calls = []

    def short_pwritev(fd: int, buffers: list[Any], offset: int) -> int:
        data = b"".join(bytes(b) for b in buffers)[:cap]  # the kernel wrote only this much
        calls.append(len(data))
        return real(fd, [data], offset)

    monkeypatch.setattr(walrus_fd.os, "pwritev", short_pwritev)
    bufs = _buffers()
    expected = b"".join(bytes(b) for b in bufs)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        walrus_fd._pwritev_all(fd, bufs, 0, len(expected))
        assert os.pread(fd, len(expected) + 10, 0) == expected
    finally:
        os.close(fd)
    assert sum(calls) == len(expected) and len(calls) > 1


def test_a_write_that_makes_no_progress_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(walrus_fd.os, "pwritev", lambda fd, buffers, offset: 0)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        with pytest.raises(OSError, match="no progress"):
            walrus_fd._pwritev_all(fd, [b"abc"], 0, 3)
    finally:
        os.close(fd)
