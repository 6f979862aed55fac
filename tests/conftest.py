"""Shared fixtures. Every test opens its WAL through ``open_wal`` so that the backend under test
(``--walrus-backend`` or ``$WALRUS_TEST_BACKEND``, default ``fd``) and small geometry apply."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from walrus_core import FsyncSchedule, Walrus
from walrus_core.plugins import default_registry

#: Small blocks so that a few KiB of data already crosses blocks and files.
SMALL_GEOMETRY: dict[str, int] = {"block_size": 4096, "blocks_per_file": 4}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--walrus-backend",
        default=os.environ.get("WALRUS_TEST_BACKEND", "fd"),
        help="backend the behaviour suite runs against (default: fd)",
    )


@pytest.fixture(scope="session")
def backend_name(request: pytest.FixtureRequest) -> str:
    """The backend under test."""
    return str(request.config.getoption("--walrus-backend"))


@pytest.fixture(scope="session")
def base_backend(backend_name: str) -> str:
    """The one backend the name or preference list under test (``"uring,fd"``) selects here:
    what a test layer (spy, faults, ...) must layer over."""
    return default_registry().select(backend_name)


@pytest.fixture
def wal_dir(tmp_path: Path) -> Path:
    """A fresh data directory (not created yet)."""
    return tmp_path / "wal"


OpenWal = Callable[..., Walrus]


@pytest.fixture
def open_wal(wal_dir: Path, backend_name: str) -> Iterator[OpenWal]:
    """Factory: ``open_wal(**overrides)`` opens a Walrus on ``wal_dir`` with small geometry,
    ``no_fsync`` and the backend under test; every instance is closed at teardown."""
    opened: list[Walrus] = []

    def factory(**overrides: Any) -> Walrus:
        kwargs: dict[str, Any] = {
            "data_dir": wal_dir,
            "backend": backend_name,
            "fsync": FsyncSchedule.no_fsync(),
            **SMALL_GEOMETRY,
        }
        kwargs.update(overrides)
        wal = Walrus(**kwargs)
        opened.append(wal)
        return wal

    yield factory
    for wal in opened:
        wal.close()
