"""The pytest plugin of the conformance suite: options, backend parametrisation and fixtures.

Registered through the ``pytest11`` entry point, so it is active in every pytest run of an
environment where walrus-core is installed (it only adds options and fixtures; the suite's
tests run when collected, e.g. ``pytest --pyargs walrus_core.testing``).

Options:

``--walrus-backend NAME``
    The backend the tests run against. Repeat it, or give ``all`` (every installed backend that
    can run here), to run every test once per backend. A comma-separated value
    (``uring,fd``) is one backend: the first of the list that can run here. Default:
    ``$WALRUS_TEST_BACKEND``, else ``auto``.
``--walrus-plugin NAME=MODULE[:ATTRIBUTE]``
    Register the plugin object ``MODULE:ATTRIBUTE`` (or the module itself) as backend ``NAME``
    for this run, without installing it (a backend in development). Repeatable.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from walrus_core.api import Walrus
from walrus_core.config import FsyncSchedule
from walrus_core.errors import BackendUnavailableError
from walrus_core.plugins import BackendRegistry, default_registry
from walrus_core.storage import BackendInfo, OpenSpec, Storage

ALL = "all"
#: Small blocks, so that a few KiB of data already cross blocks and files.
SMALL_GEOMETRY: dict[str, int] = {"block_size": 4096, "blocks_per_file": 4}

OpenWalrus = Callable[..., Walrus]
#: The name the ``faulty_walrus`` fixture registers its fault layer under.
FAULT_LAYER = "conformance-faults"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--walrus-backend`` and ``--walrus-plugin``."""
    group = parser.getgroup("walrus", "Walrus backend conformance")
    group.addoption(
        "--walrus-backend",
        action="append",
        default=None,
        metavar="NAME",
        help="backend to test (repeatable; 'all': every installed backend that can run here;"
        " default: $WALRUS_TEST_BACKEND or 'auto')",
    )
    group.addoption(
        "--walrus-plugin",
        action="append",
        default=[],
        metavar="NAME=MODULE[:ATTR]",
        help="register MODULE:ATTR (or MODULE) as backend NAME for this run, uninstalled",
    )


def load_plugin_spec(spec: str) -> tuple[str, Any]:
    """``"NAME=MODULE:ATTR"`` (or ``"NAME=MODULE"``, a module that is the plugin) -> ``(NAME,
    the object)``; raises ``pytest.UsageError``."""
    name, sep, target = spec.partition("=")
    module_name, _, attr = target.partition(":")
    if not (sep and name and module_name):
        raise pytest.UsageError(f"--walrus-plugin {spec!r}: expected NAME=MODULE[:ATTRIBUTE]")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
    except Exception as exc:  # whatever the module raises while it is imported
        raise pytest.UsageError(f"--walrus-plugin {spec!r}: {type(exc).__name__}: {exc}") from exc
    return name, obj


def registry_for(plugin_specs: list[str]) -> BackendRegistry:
    """The installed backends plus those named by ``--walrus-plugin`` specs."""
    registry = default_registry()
    if plugin_specs:
        registry = registry.with_plugins(dict(load_plugin_spec(s) for s in plugin_specs))
    return registry


def _requested(config: pytest.Config) -> list[str]:
    names: list[str] | None = config.getoption("--walrus-backend")
    if not names:
        names = [os.environ.get("WALRUS_TEST_BACKEND") or "auto"]
    return names


#: The backends this run tests, worked out once per run.
_BACKENDS_KEY = pytest.StashKey[list[str]]()


def _backends_to_test(config: pytest.Config) -> list[str]:
    cached = config.stash.get(_BACKENDS_KEY, None)
    if cached is not None:
        return cached
    requested = _requested(config)
    plugin_specs: list[str] = config.getoption("--walrus-plugin")
    registry = registry_for(plugin_specs)
    statuses = {status.name: status for status in registry.statuses()}
    for spec in plugin_specs:  # a backend asked for explicitly must not vanish quietly
        name = spec.partition("=")[0]
        if not statuses[name].available:
            raise pytest.UsageError(f"--walrus-plugin {spec}: {statuses[name].reason}")
    names: list[str] = []
    for name in requested:
        if name == ALL:
            names.extend(s.name for s in statuses.values() if s.available)
            continue
        try:
            registry.select(name)
        except BackendUnavailableError as exc:
            raise pytest.UsageError(f"--walrus-backend {name}: {exc}") from exc
        names.append(name)
    names = list(dict.fromkeys(names))
    if not names:
        raise pytest.UsageError("--walrus-backend=all: no installed backend can run here")
    config.stash[_BACKENDS_KEY] = names
    return names


def pytest_configure(config: pytest.Config) -> None:
    """Check backends named on the command line at once: one usage error, not an error per
    test module. (Nothing is loaded in a run that names none.)"""
    if config.getoption("--walrus-backend") or config.getoption("--walrus-plugin"):
        _backends_to_test(config)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Which backends this run tests, and what is installed but cannot run."""
    if not config.getoption("--walrus-backend") and not os.environ.get("WALRUS_TEST_BACKEND"):
        return []
    lines = [f"walrus backends under test: {', '.join(_backends_to_test(config))}"]
    registry = registry_for(config.getoption("--walrus-plugin"))
    for status in registry.statuses():
        if not status.available:
            lines.append(f"walrus backend {status.name} cannot be tested: {status.reason}")
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every test that uses ``walrus_backend`` once per backend under test, unless a
    conftest or test module defines a ``walrus_backend`` fixture of its own (it wins)."""
    if "walrus_backend" not in metafunc.fixturenames:
        return
    definitions = getattr(metafunc, "_arg2fixturedefs", {}).get("walrus_backend", ())
    if definitions and definitions[-1].baseid:  # "" is a plugin's fixture: ours
        return
    names = _backends_to_test(metafunc.config)
    metafunc.parametrize("walrus_backend", names, ids=names, indirect=True, scope="session")


@pytest.fixture(scope="session")
def walrus_backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend under test (one per ``--walrus-backend``)."""
    return str(getattr(request, "param", None) or _backends_to_test(request.config)[0])


@pytest.fixture(scope="session")
def walrus_registry(pytestconfig: pytest.Config) -> BackendRegistry:
    """The backends this run can use: the installed ones plus ``--walrus-plugin`` ones."""
    return registry_for(pytestconfig.getoption("--walrus-plugin"))


@pytest.fixture(scope="session")
def walrus_base_backend(walrus_backend: str, walrus_registry: BackendRegistry) -> str:
    """The one backend the name (or preference list) under test selects here: what a test
    layer (a spy, the fault layer) stacks over. Fails the test if it cannot run here."""
    try:
        return walrus_registry.select(walrus_backend)
    except BackendUnavailableError as exc:
        pytest.fail(f"backend {walrus_backend!r} cannot be tested: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def walrus_backend_info(walrus_base_backend: str, walrus_registry: BackendRegistry) -> BackendInfo:
    """What the backend under test says about itself."""
    return walrus_registry.info(walrus_base_backend)


@pytest.fixture(scope="session")
def walrus_durable(walrus_base_backend: str, walrus_registry: BackendRegistry) -> bool:
    """Whether the backend under test (its whole chain) keeps writes beyond the process."""
    return walrus_registry.durable(walrus_base_backend)


@pytest.fixture
def walrus_dir(tmp_path: Path) -> Path:
    """A fresh data directory path (not created yet)."""
    return tmp_path / "wal"


@pytest.fixture
def open_walrus(
    walrus_dir: Path, walrus_backend: str, walrus_registry: BackendRegistry
) -> Iterator[OpenWalrus]:
    """Factory: ``open_walrus(**overrides)`` opens a :class:`~walrus_core.Walrus` on
    ``walrus_dir`` with small geometry (4 KiB blocks, 4 per file), ``no_fsync`` and the
    backend under test; every instance it opened is closed at teardown."""
    opened: list[Walrus] = []

    def factory(**overrides: Any) -> Walrus:
        kwargs: dict[str, Any] = {
            "data_dir": walrus_dir,
            "backend": walrus_backend,
            "fsync": FsyncSchedule.no_fsync(),
            "registry": walrus_registry,
            **SMALL_GEOMETRY,
        }
        kwargs.update(overrides)
        wal = Walrus(**kwargs)
        opened.append(wal)
        return wal

    yield factory
    for wal in opened:
        wal.close()


@pytest.fixture
def walrus(open_walrus: OpenWalrus) -> Walrus:
    """An open log on a fresh directory, through the backend under test."""
    return open_walrus()


class StorageOpener:
    """Opens files through the chain of the backend under test, as the engine does; closes at
    teardown whatever the test did not close through :meth:`close`."""

    def __init__(self, registry: BackendRegistry, backend: str, directory: Path) -> None:
        self.chain = registry.chain(backend)
        self.directory = directory
        self._open: list[Storage] = []

    def __call__(
        self,
        name: str = "file",
        size: int = 1 << 20,
        *,
        create: bool = True,
        sync_each: bool = False,
        kind: str = "data",
    ) -> Storage:
        """Open ``directory/name`` (at least ``size`` bytes) and return its :class:`Storage`."""
        spec = OpenSpec(str(self.directory / name), size, create, sync_each, kind)
        storage = self.chain.open(spec)
        self._open.append(storage)
        return storage

    def close(self, storage: Storage) -> None:
        """Close ``storage`` now (the hook is called once: teardown will not close it again)."""
        self._open.remove(storage)
        storage.close()

    def close_all(self) -> None:
        """Close every storage still open."""
        while self._open:
            self._open.pop().close()


@pytest.fixture
def open_storage(
    tmp_path: Path, walrus_backend: str, walrus_registry: BackendRegistry
) -> Iterator[StorageOpener]:
    """Factory: ``open_storage(name, size, create=, sync_each=, kind=)`` opens a file in a fresh
    directory through the backend under test's chain and returns its
    :class:`~walrus_core.storage.Storage` (the resolved hook implementations)."""
    directory = tmp_path / "files"
    directory.mkdir()
    opener = StorageOpener(walrus_registry, walrus_backend, directory)
    yield opener
    opener.close_all()


@pytest.fixture
def faulty_walrus(
    open_walrus: OpenWalrus, walrus_base_backend: str, walrus_registry: BackendRegistry
) -> Callable[..., tuple[Walrus, Any]]:
    """Factory: ``faulty_walrus(**overrides)`` returns ``(wal, plan)``, a log whose storage goes
    through the fault layer of ``walrus-faults`` stacked over the backend under test, and the
    layer's ``FaultPlan`` (``plan.fail("write", nth=1, errno=ENOSPC)``, ``plan.power_loss()``).
    Skips, saying so, when walrus-faults is not installed."""
    try:
        # Imported by name: walrus-faults is a separate distribution the core does not need.
        faults: Any = importlib.import_module("walrus_faults")
    except ImportError:
        pytest.skip(
            "walrus-faults is not installed (pip install walrus-faults, or from a checkout:"
            " pip install plugins/walrus_faults)"
        )

    def factory(**overrides: Any) -> tuple[Walrus, Any]:
        plan = faults.FaultPlan()
        # A name of its own, so that the fault layer can also stack over the faults backend.
        registry = walrus_registry.with_plugins(
            {FAULT_LAYER: faults.FaultLayer(plan, over=walrus_base_backend)}
        )
        return open_walrus(backend=FAULT_LAYER, registry=registry, **overrides), plan

    return factory
