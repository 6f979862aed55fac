"""What a new user sees first: ``help(Walrus)``, the reprs of public values, and
``python -m walrus_core``."""

from __future__ import annotations

import inspect
import pydoc
import subprocess
import sys
from pathlib import Path

import pytest

import walrus_core
from walrus_core import (
    FsyncSchedule,
    Geometry,
    Limits,
    ReadConsistency,
    Retention,
    Walrus,
)
from walrus_core.plugin import default_registry


def test_help_documents_every_constructor_parameter() -> None:
    text = pydoc.render_doc(Walrus, renderer=pydoc.plaintext)
    doc = inspect.getdoc(Walrus) or ""
    section = doc.split("Parameters:", 1)[1].split("Attributes:", 1)[0]
    for name in inspect.signature(Walrus.__init__).parameters:
        if name == "self":
            continue
        assert f"\n    {name}: " in f"\n{section}", f"help(Walrus) does not describe {name}"
    assert "Parameters:" in text


def test_help_documents_every_public_attribute(walrus: Walrus) -> None:
    doc = inspect.getdoc(Walrus) or ""
    section = doc.split("Attributes:", 1)[1].split("Raises:", 1)[0]
    public = {
        name
        for name in dir(walrus)
        if not name.startswith("_") and not callable(getattr(walrus, name))
    }
    assert {"root", "geometry", "backend_chain", "closed"} <= public
    for name in sorted(public):
        assert f"\n    {name}: " in f"\n{section}", f"help(Walrus) does not describe {name}"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (ReadConsistency.strictly_at_once(), "ReadConsistency.strictly_at_once()"),
        (
            ReadConsistency.at_least_once(persist_every=50),
            "ReadConsistency.at_least_once(persist_every=50)",
        ),
        (FsyncSchedule.milliseconds(200), "FsyncSchedule.milliseconds(200)"),
        (FsyncSchedule.sync_each(), "FsyncSchedule.sync_each()"),
        (FsyncSchedule.no_fsync(), "FsyncSchedule.no_fsync()"),
        (Geometry(), "Geometry(block_size=10485760, blocks_per_file=100)"),
    ],
)
def test_reprs_show_public_values_that_rebuild_the_value(value: object, text: str) -> None:
    assert repr(value) == text
    namespace = {
        "ReadConsistency": ReadConsistency,
        "FsyncSchedule": FsyncSchedule,
        "Geometry": Geometry,
    }
    assert eval(text, namespace) == value


@pytest.mark.parametrize("value", [Limits(), Retention(max_bytes=1 << 20), Geometry()])
def test_other_config_reprs_name_no_private_type(value: object) -> None:
    assert "_" not in type(value).__name__
    assert "<" not in repr(value), repr(value)  # no enum or object reprs


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "walrus_core", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def test_python_m_walrus_core_says_version_auto_and_where_to_go(tmp_path: Path) -> None:
    proc = run_module(cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"walrus-core {walrus_core.__version__}" in out
    try:
        expected = "/".join(default_registry().chain("auto").names)
    except walrus_core.BackendUnavailableError:
        expected = "nothing: "
    assert f'backend "auto" picks here: {expected}' in out
    assert "python -m walrus_core.demo" in out
    assert "walrus --help" in out
    assert list(tmp_path.iterdir()) == []  # it opened no log


def test_python_m_walrus_core_with_arguments_is_the_command_line(tmp_path: Path) -> None:
    proc = run_module("--version", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert walrus_core.__version__ in proc.stdout
    proc = run_module("info", "--data-dir", str(tmp_path / "missing"), cwd=tmp_path)
    assert proc.returncode == 1
    assert "Error:" in proc.stderr
