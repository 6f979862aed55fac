"""Registration enforces the plugin contract: a backend breaking one rule is refused, named
with the rule, and the others stay usable; a backend that registers but breaks a behaviour
fails the conformance suite with the guarantee named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from helpers import broken_backends

from walrus_core import Walrus, available_backends
from walrus_core.contract import RULES, check_plugin
from walrus_core.errors import BackendUnavailableError
from walrus_core.plugins import BackendRegistry

HELPERS = Path(__file__).parent / "helpers"


def _broken_cases() -> list[tuple[str, Any]]:
    return [
        (rule, plugin)
        for rule, plugins in broken_backends.BROKEN_RULES.items()
        for plugin in plugins
    ]


def test_every_rule_has_a_broken_backend() -> None:
    assert set(broken_backends.BROKEN_RULES) == set(RULES)


def test_the_working_twin_of_the_broken_backends_registers_and_works(tmp_path: Path) -> None:
    registry = BackendRegistry(
        {"base": broken_backends.WorkingFd(), "twin": broken_backends.WorkingFd()}
    )
    status = {s.name: s for s in registry.statuses()}["twin"]
    assert status.available and status.broken_rules == ()
    with Walrus(tmp_path / "wal", backend="twin", registry=registry) as wal:
        wal.append_for_topic("t", b"x")
        assert wal.read_next("t") is not None


@pytest.mark.parametrize(
    ("rule", "plugin"), _broken_cases(), ids=[type(p).__name__ for _, p in _broken_cases()]
)
def test_a_backend_breaking_a_rule_is_refused_and_named(
    rule: str, plugin: Any, tmp_path: Path
) -> None:
    registry = BackendRegistry({"base": broken_backends.WorkingFd(), "broken": plugin})
    statuses = {s.name: s for s in registry.statuses()}
    broken = statuses["broken"]
    assert not broken.available
    assert rule in broken.broken_rules  # a wrapper also yields: it may break two
    assert broken.reason is not None and f"rule {rule!r}" in broken.reason
    assert "broken" not in registry.names()
    with pytest.raises(BackendUnavailableError, match=rule) as refused:
        registry.chain("broken")
    assert "pip install" not in str(refused.value)  # it is installed: reinstalling won't help
    # The other backends stay usable.
    assert statuses["base"].available
    with Walrus(tmp_path / "wal", backend="base", registry=registry) as wal:
        assert wal.append_for_topic("t", b"still fine") == 0


def test_the_swapped_parameters_are_named_in_the_refusal() -> None:
    registry = BackendRegistry({"broken": broken_backends.SwappedReadParameters()})
    reason = registry.statuses()[0].reason or ""
    assert "walrus_read(handle, size, offset)" in reason
    assert "walrus_read(handle, offset, size)" in reason


def test_walrus_backends_reports_an_installed_broken_plugin(tmp_path: Path) -> None:
    # Installed for real: a dist-info with an entry point, found by importlib.metadata.
    site = tmp_path / "site"
    dist = site / "walrus_broken_demo-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: walrus-broken-demo\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text("[walrus.backends]\nswapped = broken_backends:swapped\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(HELPERS)])}
    script = textwrap.dedent(
        """
        import sys
        from walrus_core.cli import main
        sys.argv = ["walrus", "backends", "--json"]
        main()
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    rows = {row["name"]: row for row in doc["backends"]}
    assert rows["swapped"]["available"] is False
    assert rows["swapped"]["broken_rules"] == ["parameter-order"]
    # The other installed backends are still listed, as in this process.
    assert set(rows) - {"swapped"} == {s.name for s in available_backends()}
    table = subprocess.run(
        [sys.executable, "-c", script.replace(', "--json"', "")],
        env={**env, "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "parameter-order" in table.stdout, table.stdout


def _conformance(backend_spec: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(HELPERS)}
    env.pop("WALRUS_TEST_BACKEND", None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            "--walrus-plugin",
            f"suspect={backend_spec}",
            "--walrus-backend",
            "suspect",
            "--pyargs",
            "walrus_core.testing",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_conformance_suite_passes_the_working_twin(tmp_path: Path) -> None:
    proc = _conformance("broken_backends:working", tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]


@pytest.mark.parametrize(
    ("spec", "guarantees"),
    [
        (
            "broken_backends:lossy",
            [
                "guarantee broken: a read returns the bytes written",
                "guarantee broken: bytes written stay in the file after a reopen",
            ],
        ),
        (
            "broken_backends:off_by_one",
            [
                "guarantee broken: a read returns the bytes written",
                "guarantee broken: an append that returned is never lost to a crash",
            ],
        ),
    ],
    ids=["loses-writes", "reads-wrong-offset"],
)
def test_the_conformance_suite_names_the_broken_guarantee(
    spec: str, guarantees: list[str], tmp_path: Path
) -> None:
    proc = _conformance(spec, tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:]
    for guarantee in guarantees:
        assert guarantee in proc.stdout, proc.stdout[-5000:]


def test_inspection_runs_no_property_of_the_plugin(tmp_path: Path) -> None:
    registry = BackendRegistry({"hostile": broken_backends.HostileProperty()})
    status = registry.statuses()[0]
    assert status.available, status.reason  # a property is no hook: accepted, never run
    with Walrus(tmp_path / "wal", backend="hostile", registry=registry) as wal:
        assert wal.append_for_topic("t", b"x") == 0


def test_static_hook_methods_are_accepted_whichever_way_they_are_decorated() -> None:
    assert check_plugin(broken_backends.StaticHooks()) == []


def test_one_plugin_object_can_serve_under_a_second_name(tmp_path: Path) -> None:
    plugin = broken_backends.WorkingFd()
    registry = BackendRegistry({"first": plugin}).with_plugins({"second": plugin})
    assert {s.name: s.available for s in registry.statuses()} == {"first": True, "second": True}
    with Walrus(tmp_path / "wal", backend="second", registry=registry) as wal:
        assert wal.backend_chain == ("second",)
        assert wal.append_for_topic("t", b"x") == 0
