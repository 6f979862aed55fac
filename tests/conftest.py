"""Shared fixtures. The backend under test (``--walrus-backend`` or ``$WALRUS_TEST_BACKEND``),
the registry and the log factory come from the conformance suite's pytest plugin
(:mod:`walrus_core.testing.plugin`); the names below are the ones this suite was written with."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from walrus_core import Walrus
from walrus_core.testing import SMALL_GEOMETRY

__all__ = ["SMALL_GEOMETRY"]

OpenWal = Callable[..., Walrus]


@pytest.fixture(scope="session")
def backend_name(walrus_backend: str) -> str:
    """The backend under test."""
    return walrus_backend


@pytest.fixture(scope="session")
def base_backend(walrus_base_backend: str) -> str:
    """The one backend the name or preference list under test (``"uring,fd"``) selects here:
    what a test layer (spy, faults, ...) must layer over."""
    return walrus_base_backend


@pytest.fixture
def wal_dir(walrus_dir: Path) -> Path:
    """A fresh data directory (not created yet)."""
    return walrus_dir


@pytest.fixture
def open_wal(open_walrus: OpenWal) -> OpenWal:
    """Factory: ``open_wal(**overrides)`` opens a Walrus on ``wal_dir`` with small geometry,
    ``no_fsync`` and the backend under test; every instance is closed at teardown."""
    return open_walrus
