"""The ``walrus`` command line: every command through click's ``CliRunner``, and the parts that
only real processes show (piped stdin, ``tail -f`` and Ctrl-C, a directory another process
holds) through ``python -m walrus_core`` and the installed ``walrus`` script.
"""

from __future__ import annotations

import base64
import inspect
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from helpers.reading import drain

from walrus_core import Walrus
from walrus_core.cli import cli
from walrus_core.plugins import default_registry

#: The ``open_wal`` fixture's factory (see conftest.py).
OpenWal = Callable[..., Walrus]

COMMANDS = [
    "backends",
    "info",
    "stats",
    "consumers",
    "verify",
    "tail",
    "append",
    "reclaim",
    "delete-consumer",
    "delete-topic",
]
WRITING_COMMANDS = ["append", "reclaim", "delete-consumer", "delete-topic"]
#: Every waiting step of the subprocess tests gives up after this long, so a broken build
#: fails instead of hanging; nothing asserts how long anything took.
DEADLINE_SECONDS = 60.0
#: Wide enough that no table cell of these tests wraps.
WIDE = {"COLUMNS": "250"}


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_walrus_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's own $WALRUS_* settings must not leak into what the tests run."""
    for name in ("WALRUS_DATA_DIR", "WALRUS_INSTANCE_KEY", "WALRUS_BACKEND"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def runner() -> CliRunner:
    # click < 8.2 mixes stderr into stdout unless told not to; later versions keep both.
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    return CliRunner()


Invoke = Callable[..., Result]


@pytest.fixture
def walrus(runner: CliRunner, wal_dir: Path, backend_name: str) -> Invoke:
    """``walrus(*args, input=...)``: run the CLI on the test's directory and backend."""

    def run(
        *args: str, input: str | bytes | None = None, env: dict[str, str] | None = None
    ) -> Result:
        argv = ["--data-dir", str(wal_dir), "--backend", backend_name, *args]
        return runner.invoke(cli, argv, input=input, env={**WIDE, **(env or {})})

    return run


@pytest.fixture
def populated(open_wal: OpenWal) -> dict[str, list[bytes]]:
    """A closed log: "orders" (3 entries; "billing" consumed 1, the default cursor 2) and
    "logs" (2 entries, unread)."""
    content = {
        "orders": [b"order-0", b"order-1", b"order-2"],
        "logs": [b"line one", b"line two"],
    }
    with open_wal() as wal:
        for topic, payloads in content.items():
            wal.batch_append_for_topic(topic, payloads)
        wal.read_next("orders", consumer="billing")
        wal.read_next("orders")
        wal.read_next("orders")
    return content


def assert_one_line_error(result: Result, *needles: str, code: int = 1) -> str:
    """The command failed with exit status ``code`` and one ``Error:`` line, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def read_all(open_wal: OpenWal, topic: str) -> list[bytes]:
    """Every payload of ``topic``, peeked (no cursor moves)."""
    with open_wal() as wal:
        return [e.data for e in wal.batch_read_for_topic(topic, 1 << 30, start_offset=0)]


def frames(*payloads: bytes) -> bytes:
    return b"".join(len(p).to_bytes(4, "big") + p for p in payloads)


# -- help, options, errors --------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(runner: CliRunner, command: str) -> None:
    result = runner.invoke(cli, [command, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "Example" in result.stdout
    assert f"walrus {command}" in result.stdout.split("Example", 1)[1]
    if command != "backends":
        assert "--data-dir" in result.stdout and "--key" in result.stdout
        assert "WALRUS_DATA_DIR" in result.stdout and "WALRUS_INSTANCE_KEY" in result.stdout


@pytest.mark.parametrize("command", WRITING_COMMANDS)
def test_writing_commands_say_they_need_the_directory(runner: CliRunner, command: str) -> None:
    result = runner.invoke(cli, [command, "--help"], env=WIDE)
    assert "This command writes" in result.stdout
    assert "holds the directory" in result.stdout


def test_group_help_lists_every_command(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--help"], env=WIDE)
    assert result.exit_code == 0
    for command in [*COMMANDS, "bench"]:
        assert command in result.stdout
    assert "Example" in result.stdout


def test_python_dash_m_and_the_script_run_the_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "walrus_core", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "walrus" in out.stdout
    script = _installed_script()
    out = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "tail" in out.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["info"],
        ["stats"],
        ["consumers", "orders"],
        ["tail", "orders"],
        ["tail", "orders", "--commit"],
        ["reclaim"],
        ["delete-consumer", "orders", "billing"],
        ["delete-topic", "orders", "--yes"],
        ["verify"],
    ],
)
def test_commands_on_a_missing_directory_fail_and_create_nothing(
    walrus: Invoke, wal_dir: Path, argv: list[str]
) -> None:
    result = walrus(*argv)
    assert_one_line_error(result, "no Walrus directory", str(wal_dir))
    assert not wal_dir.exists()
    wal_dir.mkdir()  # an empty directory is no log either, and stays empty
    result = walrus(*argv)
    assert_one_line_error(result, "no Walrus directory", str(wal_dir))
    assert list(wal_dir.iterdir()) == []


def test_library_errors_are_one_line(walrus: Invoke, populated: dict[str, list[bytes]]) -> None:
    # An invalid topic name: the library's InvalidTopicError, as one line.
    result = walrus("append", "bad\0topic", input="x\n")
    assert_one_line_error(result)


def test_os_errors_are_one_line(
    walrus: Invoke, populated: dict[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> Walrus:
        raise PermissionError(13, "Permission denied", "/somewhere/LOCK")

    monkeypatch.setattr("walrus_core.cli.common.Walrus", refuse)
    result = walrus("append", "orders", input="x\n")
    assert_one_line_error(result, "Permission denied")


def test_unknown_backend_is_one_line(walrus: Invoke, populated: dict[str, list[bytes]]) -> None:
    result = walrus("--backend", "no-such-backend", "append", "orders", input="x\n")
    assert_one_line_error(result, "no-such-backend")


def test_a_held_directory_is_named_in_one_line(
    walrus: Invoke, open_wal: OpenWal, wal_dir: Path
) -> None:
    with open_wal() as wal:
        wal.append_for_topic("orders", b"x")
        for argv in (
            ["append", "orders"],
            ["tail", "orders", "--commit"],
            ["reclaim"],
            ["delete-topic", "orders", "--yes"],
        ):
            result = walrus(*argv, input="y\n")
            assert_one_line_error(result, "held by another process", str(wal_dir))


def test_options_after_the_command_win_over_those_before_it(
    runner: CliRunner, open_wal: OpenWal, wal_dir: Path, tmp_path: Path, backend_name: str
) -> None:
    open_wal().close()
    other = tmp_path / "other"
    argv = ["--data-dir", str(other), "--backend", backend_name, "append", "t"]
    result = runner.invoke(cli, [*argv, "--data-dir", str(wal_dir)], input="a\n")
    assert result.exit_code == 0, result.output
    assert read_all(open_wal, "t") == [b"a"]
    assert not other.exists()


def test_environment_names_the_directory_and_key(
    runner: CliRunner, tmp_path: Path, backend_name: str
) -> None:
    base = tmp_path / "base"
    env = {
        "WALRUS_DATA_DIR": str(base),
        "WALRUS_INSTANCE_KEY": "tenant",
        "WALRUS_BACKEND": backend_name,
    }
    result = runner.invoke(cli, ["append", "t"], input="a\n", env=env)
    assert result.exit_code == 0, result.output
    with Walrus(base, key="tenant", backend=backend_name) as wal:
        assert [e.data for e in drain(wal, "t")] == [b"a"]


# -- backends ---------------------------------------------------------------------------------


def test_backends_table_names_every_backend_and_the_auto_choice(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["backends"], env=WIDE)
    assert result.exit_code == 0, result.output
    registry = default_registry()
    for status in registry.statuses():
        assert status.name in result.stdout
    assert f"auto selects: {registry.select('auto')}" in result.stdout


def test_backends_json(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["backends", "--json", "--backend", "no-such,fd"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    registry = default_registry()
    assert [b["name"] for b in doc["backends"]] == [s.name for s in registry.statuses()]
    assert {"name", "version", "available", "reason", "layers_over"} <= set(doc["backends"][0])
    assert doc["auto"] == registry.select("auto")
    assert doc["auto_error"] is None
    assert doc["requested"]["name"] == "no-such,fd"
    if "fd" in registry.names():
        assert doc["requested"]["selected"] == "fd"


# -- append -----------------------------------------------------------------------------------


def test_append_newline_delimited(
    walrus: Invoke, open_wal: OpenWal, populated: dict[str, list[bytes]]
) -> None:
    result = walrus("append", "t", "--batch", "2", input=b"one\ntwo\r\n\nlast without newline")
    assert result.exit_code == 0, result.output
    assert read_all(open_wal, "t") == [b"one", b"two\r", b"", b"last without newline"]
    assert result.stdout == ""  # the summary goes to stderr: stdout stays clean for pipes
    assert "appended 4 entries to t: offsets 0..3" in result.stderr


def test_append_json_reports_the_offset_range(
    walrus: Invoke, open_wal: OpenWal, populated: dict[str, list[bytes]]
) -> None:
    result = walrus("append", "orders", "--json", input="a\nb\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "topic": "orders",
        "entries": 2,
        "first_offset": 3,
        "end_offset": 5,
    }
    assert read_all(open_wal, "orders")[3:] == [b"a", b"b"]


def test_append_of_nothing(walrus: Invoke, populated: dict[str, list[bytes]]) -> None:
    result = walrus("append", "t", "--json", input="")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["entries"] == 0


def test_append_length_delimited(
    walrus: Invoke, open_wal: OpenWal, populated: dict[str, list[bytes]]
) -> None:
    payloads = [b"\x00binary\nwith newline", b"", b"\xff" * 5000]
    result = walrus("append", "bin", "--delimiter", "length", input=frames(*payloads))
    assert result.exit_code == 0, result.output
    assert read_all(open_wal, "bin") == payloads


@pytest.mark.parametrize("cut", [2, 7], ids=["inside-the-length", "inside-the-payload"])
def test_a_truncated_frame_fails_and_appends_nothing_of_its_batch(
    walrus: Invoke, open_wal: OpenWal, populated: dict[str, list[bytes]], cut: int
) -> None:
    data = frames(b"p0", b"p1", b"p2", b"payload3")
    data = data[: len(data) - len(frames(b"payload3")) + cut]
    result = walrus("append", "bin", "--delimiter", "length", "--batch", "2", input=data)
    line = assert_one_line_error(result, "stdin ends inside")
    # The first batch (p0, p1) was complete and stays; p2 was in the batch the cut broke.
    assert "2 entries before it were appended (offsets 0..1)" in line
    assert read_all(open_wal, "bin") == [b"p0", b"p1"]


def test_a_truncated_first_batch_appends_nothing(
    walrus: Invoke, open_wal: OpenWal, populated: dict[str, list[bytes]]
) -> None:
    result = walrus("append", "bin", "--delimiter", "length", input=frames(b"abc")[:-1])
    assert_one_line_error(result, "nothing was appended")
    assert read_all(open_wal, "bin") == []


def test_append_batch_over_the_limit_is_a_usage_error(
    walrus: Invoke, populated: dict[str, list[bytes]]
) -> None:
    result = walrus("append", "t", "--batch", "1000000", input="a\n")
    assert result.exit_code == 2
    assert "batch limit" in result.stderr


def test_append_usage_errors_create_no_directory(walrus: Invoke, wal_dir: Path) -> None:
    assert walrus("append", "t", "--batch", "1000000", input="a\n").exit_code == 2
    assert not wal_dir.exists()


# -- tail -------------------------------------------------------------------------------------


def test_tail_commit_consumes_what_it_printed(
    walrus: Invoke, open_wal: OpenWal, populated: dict[str, list[bytes]]
) -> None:
    result = walrus("tail", "logs", "--commit", "-n", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout == "0\tline one\n"
    result = walrus("tail", "logs", "--commit")
    assert result.stdout == "1\tline two\n"
    result = walrus("tail", "logs", "--commit")
    assert result.exit_code == 0 and result.stdout == ""
    with open_wal() as wal:
        assert wal.read_next("logs") is None


def test_tail_commit_as_a_named_consumer_leaves_the_default_cursor(
    walrus: Invoke, open_wal: OpenWal, populated: dict[str, list[bytes]]
) -> None:
    result = walrus("tail", "orders", "--commit", "--consumer", "billing", "--format", "json")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(d["offset"], base64.b64decode(d["data_b64"])) for d in lines] == [
        (1, b"order-1"),
        (2, b"order-2"),
    ]
    with open_wal() as wal:
        assert wal.read_next("orders", consumer="billing") is None
        entry = wal.read_next("orders")
        assert entry is not None and entry.offset == 2


@pytest.mark.parametrize("extra", [["-f"], ["--from", "0"]])
def test_tail_commit_refuses_follow_and_from(
    walrus: Invoke, populated: dict[str, list[bytes]], extra: list[str]
) -> None:
    result = walrus("tail", "orders", "--commit", *extra)
    assert result.exit_code == 2
    assert "--commit" in result.stderr


def test_tail_commit_of_an_unknown_topic(walrus: Invoke, populated: dict[str, list[bytes]]) -> None:
    assert_one_line_error(walrus("tail", "nope", "--commit"), "no topic 'nope'")


def test_entry_formats() -> None:
    from walrus_core.cli.entries import format_entry
    from walrus_core.entry import Entry

    entry = Entry(data=b"a\tb\nc\xff", offset=7)
    assert format_entry(entry, "text", "t") == "7\ta\tb\\nc\\xff"
    assert format_entry(entry, "hex", "t") == "7\t" + entry.data.hex()
    assert json.loads(format_entry(entry, "json", "t")) == {
        "topic": "t",
        "offset": 7,
        "data_b64": base64.b64encode(entry.data).decode(),
    }


def test_tail_peeks_from_the_oldest_entry_and_moves_no_cursor(
    walrus: Invoke, open_wal: OpenWal, populated: dict[str, list[bytes]]
) -> None:
    result = walrus("tail", "orders")
    assert result.exit_code == 0, result.output
    assert result.stdout == "0\torder-0\n1\torder-1\n2\torder-2\n"
    with open_wal() as wal:
        entry = wal.read_next("orders")
        assert entry is not None and entry.offset == 2  # where the fixture left it


def test_tail_from_limit_consumer_and_formats(
    walrus: Invoke, populated: dict[str, list[bytes]]
) -> None:
    assert walrus("tail", "orders", "--from", "1", "-n", "1").stdout == "1\torder-1\n"
    assert walrus("tail", "orders", "--consumer", "billing").stdout == "1\torder-1\n2\torder-2\n"
    hexed = walrus("tail", "logs", "--format", "hex").stdout.splitlines()
    assert hexed == [f"0\t{b'line one'.hex()}", f"1\t{b'line two'.hex()}"]
    docs = [
        json.loads(line) for line in walrus("tail", "logs", "--format", "json").stdout.splitlines()
    ]
    assert [base64.b64decode(d["data_b64"]) for d in docs] == [b"line one", b"line two"]
    # -f with a limit already reached returns without waiting for anything new.
    assert walrus("tail", "logs", "-f", "-n", "2").stdout.count("\n") == 2


def test_tail_errors(walrus: Invoke, populated: dict[str, list[bytes]]) -> None:
    assert_one_line_error(walrus("tail", "nope"), "no topic 'nope'")
    assert_one_line_error(walrus("tail", "orders", "--consumer", "ghost"), "no consumer 'ghost'")
    assert_one_line_error(walrus("tail", "orders", "--from", "99"), "past the end", "offset 3")


# -- info, stats, consumers -------------------------------------------------------------------


def test_info_table_and_json(
    walrus: Invoke, wal_dir: Path, populated: dict[str, list[bytes]]
) -> None:
    table = walrus("info")
    assert table.exit_code == 0, table.output
    for word in ("orders", "logs", "format version", "block_size=4096", "blocks_per_file=4"):
        assert word in table.stdout
    result = walrus("info", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["block_size"] == 4096 and doc["blocks_per_file"] == 4
    assert doc["read_only"] is True
    assert doc["files"] >= 1 and doc["bytes_on_disk"] > 0
    by_name = {t["name"]: t for t in doc["topics"]}
    assert by_name["orders"]["entries"] == 3 and by_name["logs"]["entries"] == 2
    lags = {c["name"]: c["lag"] for c in by_name["orders"]["consumers"]}
    assert lags == {None: 1, "billing": 2}


def test_info_of_one_topic(walrus: Invoke, populated: dict[str, list[bytes]]) -> None:
    doc = json.loads(walrus("info", "orders", "--json").stdout)
    assert doc["name"] == "orders" and doc["end_offset"] == 3
    table = walrus("info", "orders")
    assert table.exit_code == 0 and "billing" in table.stdout and "(default)" in table.stdout
    assert_one_line_error(walrus("info", "nope"), "no topic 'nope'")


def test_stats(walrus: Invoke, populated: dict[str, list[bytes]]) -> None:
    doc = json.loads(walrus("stats", "--json").stdout)
    assert doc["entries"] == 5 and doc["files"] >= 1 and doc["bytes_on_disk"] > 0
    by_name = {t["name"]: t for t in doc["topics"]}
    assert by_name["orders"]["max_lag"] == 2 and by_name["logs"]["entries"] == 2
    table = walrus("stats")
    assert table.exit_code == 0 and "orders" in table.stdout and "data files" in table.stdout


def test_consumers(walrus: Invoke, populated: dict[str, list[bytes]]) -> None:
    doc = json.loads(walrus("consumers", "orders", "--json").stdout)
    assert {(c["name"], c["offset"], c["lag"]) for c in doc} == {(None, 2, 1), ("billing", 1, 2)}
    table = walrus("consumers", "orders")
    assert table.exit_code == 0 and "billing" in table.stdout
    assert_one_line_error(walrus("consumers", "nope"), "no topic 'nope'")


def test_read_only_commands_work_while_a_writer_holds_the_directory(
    walrus: Invoke, open_wal: OpenWal, populated: dict[str, list[bytes]]
) -> None:
    with open_wal() as wal:
        wal.append_for_topic("logs", b"line three")
        assert walrus("info", "--json").exit_code == 0
        assert walrus("stats", "--json").exit_code == 0
        assert walrus("consumers", "orders").exit_code == 0
        assert walrus("tail", "logs").stdout.endswith("2\tline three\n")


# -- reclaim, delete-consumer, delete-topic ---------------------------------------------------


def test_reclaim(walrus: Invoke, populated: dict[str, list[bytes]]) -> None:
    doc = json.loads(walrus("reclaim", "--json").stdout)
    assert set(doc) == {
        "files_deleted",
        "blocks_punched",
        "bytes_freed",
        "entries_dropped",
        "blocks_dropped",
    }
    table = walrus("reclaim")
    assert table.exit_code == 0 and "bytes freed" in table.stdout


def test_delete_consumer(
    walrus: Invoke, open_wal: OpenWal, populated: dict[str, list[bytes]]
) -> None:
    result = walrus("delete-consumer", "orders", "billing")
    assert result.exit_code == 0, result.output
    assert "deleted consumer 'billing'" in result.stdout
    with open_wal() as wal:
        assert [c.name for c in wal.consumers("orders")] == [None]
    assert_one_line_error(walrus("delete-consumer", "orders", "billing"), "no consumer 'billing'")


def test_delete_topic_asks_first(
    walrus: Invoke, open_wal: OpenWal, populated: dict[str, list[bytes]]
) -> None:
    refused = walrus("delete-topic", "orders", input="n\n")
    assert refused.exit_code == 1
    with open_wal() as wal:
        assert "orders" in wal.topics()
    agreed = walrus("delete-topic", "orders", input="y\n")
    assert agreed.exit_code == 0, agreed.output
    assert "deleted topic 'orders'" in agreed.stdout
    forced = walrus("delete-topic", "logs", "--yes")
    assert forced.exit_code == 0, forced.output
    with open_wal() as wal:
        assert wal.topics() == []
    assert_one_line_error(walrus("delete-topic", "orders", "--yes"), "no topic 'orders'")


# -- verify -----------------------------------------------------------------------------------


def _damage_payload(wal_dir: Path, marker: bytes) -> None:
    """Flip one byte of the only stored copy of ``marker``."""
    for path in sorted(wal_dir.glob("*.wal")):
        data = bytearray(path.read_bytes())
        at = data.find(marker)
        if at >= 0:
            data[at] ^= 0xFF
            path.write_bytes(bytes(data))
            return
    raise AssertionError(f"{marker!r} is in no data file")


def test_verify_a_clean_log(walrus: Invoke, populated: dict[str, list[bytes]]) -> None:
    result = walrus("verify")
    assert result.exit_code == 0, result.output
    assert "OK" in result.stdout
    doc = json.loads(walrus("verify", "--json").stdout)
    assert doc["ok"] is True and doc["damaged"] == [] and doc["entries_checked"] == 5


def test_verify_reports_a_damaged_entry(walrus: Invoke, open_wal: OpenWal, wal_dir: Path) -> None:
    with open_wal() as wal:
        wal.batch_append_for_topic("orders", [b"fine-0", b"DAMAGE-THIS-PAYLOAD", b"fine-2"])
    _damage_payload(wal_dir, b"DAMAGE-THIS-PAYLOAD")
    result = walrus("verify", "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    [damaged] = doc["damaged"]
    assert damaged["topic"] == "orders" and damaged["offset"] == 1
    assert damaged["path"].endswith(".wal") and isinstance(damaged["position"], int)
    table = walrus("verify")
    assert table.exit_code == 1 and "DAMAGED" in table.stdout and "orders" in table.stdout


def test_verify_works_on_a_held_directory_but_repair_needs_it(
    walrus: Invoke, open_wal: OpenWal, wal_dir: Path, populated: dict[str, list[bytes]]
) -> None:
    with open_wal():
        assert walrus("verify").exit_code == 0
        assert_one_line_error(walrus("verify", "--repair"), "held by another process")
    repaired = walrus("verify", "--repair", "--json")
    assert repaired.exit_code == 0, repaired.output
    assert isinstance(json.loads(repaired.stdout)["repair"], list)


# -- real processes ---------------------------------------------------------------------------


def _installed_script() -> str:
    script = shutil.which("walrus", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the walrus console script is not installed in this environment")
    return script


def _child_env(backend_name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALRUS_")}
    env.update(WIDE, WALRUS_BACKEND=backend_name, PYTHONUNBUFFERED="1")
    return env


def _cli_commands() -> list[list[str]]:
    return [[sys.executable, "-m", "walrus_core"], [_installed_script()]]


@pytest.mark.parametrize("how", ["python -m", "script"])
def test_append_from_piped_stdin(
    open_wal: OpenWal, wal_dir: Path, backend_name: str, how: str
) -> None:
    open_wal().close()
    command = _cli_commands()[0 if how == "python -m" else 1]
    env = _child_env(backend_name)
    lines = subprocess.run(
        [*command, "append", "lines", "--data-dir", str(wal_dir)],
        input=b"alpha\nbeta\ngamma\n",
        capture_output=True,
        env=env,
        timeout=DEADLINE_SECONDS,
    )
    assert lines.returncode == 0, lines.stderr
    assert lines.stdout == b""  # no progress bar, no summary on stdout when piped
    assert b"offsets 0..2" in lines.stderr
    payloads = [b"\x00\x01", b"", b"x" * 70000]
    framed = subprocess.run(
        [*command, "append", "frames", "--delimiter", "length", "--data-dir", str(wal_dir)],
        input=frames(*payloads),
        capture_output=True,
        env=env,
        timeout=DEADLINE_SECONDS,
    )
    assert framed.returncode == 0, framed.stderr
    assert read_all(open_wal, "lines") == [b"alpha", b"beta", b"gamma"]
    assert read_all(open_wal, "frames") == payloads


class _LineReader:
    """Lines of a child's stdout, collected by a thread so the test can wait with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        self._thread = threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)

    def take(self, count: int) -> list[str]:
        out = []
        for _ in range(count):
            line = self.lines.get(timeout=DEADLINE_SECONDS)
            assert line is not None, f"the child ended after {out}"
            out.append(line)
        return out


@pytest.fixture
def spawn() -> Iterator[Callable[[Sequence[str], dict[str, str]], subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(argv: Sequence[str], env: dict[str, str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.mark.parametrize("how", ["python -m", "script"])
def test_tail_follow_prints_appends_made_while_it_runs_and_stops_on_sigint(
    open_wal: OpenWal, wal_dir: Path, backend_name: str, spawn: Any, how: str
) -> None:
    command = _cli_commands()[0 if how == "python -m" else 1]
    with open_wal() as wal:
        wal.append_for_topic("events", b"before")
        wal.flush()
        proc = spawn(
            [*command, "tail", "events", "-f", "--data-dir", str(wal_dir)], _child_env(backend_name)
        )
        reader = _LineReader(proc)
        assert reader.take(1) == ["0\tbefore\n"]
        wal.append_for_topic("events", b"during one")
        wal.batch_append_for_topic("events", [b"during two", b"during three"])
        wal.flush()
        assert reader.take(3) == ["1\tduring one\n", "2\tduring two\n", "3\tduring three\n"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=DEADLINE_SECONDS) == 0
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()


def _hold_directory_in_a_child(wal_dir: Path, backend_name: str) -> subprocess.Popen[str]:
    """A child process that opens the log for writing, appends, and holds it until killed."""
    script = (
        "import sys\n"
        "from walrus_core import FsyncSchedule, Walrus\n"
        f"wal = Walrus({str(wal_dir)!r}, backend={backend_name!r},"
        " fsync=FsyncSchedule.no_fsync(), block_size=4096, blocks_per_file=4)\n"
        "wal.batch_append_for_topic('held', [b'h0', b'h1'])\n"
        "wal.flush()\n"
        "print('holding', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_env(backend_name),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "holding\n", proc.stderr.read() if proc.stderr else ""
    return proc


@pytest.fixture
def held_by_a_child(wal_dir: Path, backend_name: str) -> Iterator[Path]:
    """``wal_dir``, held for writing by another process for the test's duration."""
    holder = _hold_directory_in_a_child(wal_dir, backend_name)
    try:
        yield wal_dir
    finally:
        holder.kill()
        holder.wait()


def _run(
    argv: Sequence[str], backend_name: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        input=stdin,
        capture_output=True,
        text=True,
        env=_child_env(backend_name),
        timeout=DEADLINE_SECONDS,
    )


def test_writing_commands_fail_on_a_directory_another_process_holds(
    held_by_a_child: Path, backend_name: str
) -> None:
    where = ["--data-dir", str(held_by_a_child)]
    for argv in (
        [sys.executable, "-m", "walrus_core", "append", "held", *where],
        [_installed_script(), "tail", "held", "--commit", *where],
    ):
        result = _run(argv, backend_name, stdin="x\n")
        assert result.returncode == 1, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("Error: ") and "held by another process" in line


def test_info_on_a_directory_another_process_holds(
    held_by_a_child: Path, backend_name: str
) -> None:
    for command in _cli_commands():
        info = _run([*command, "info", "--json", "--data-dir", str(held_by_a_child)], backend_name)
        assert info.returncode == 0, info.stderr
        topics = json.loads(info.stdout)["topics"]
        assert {t["name"]: t["entries"] for t in topics} == {"held": 2}


def test_verify_on_a_directory_another_process_holds(
    held_by_a_child: Path, backend_name: str
) -> None:
    for command in _cli_commands():
        verify = _run([*command, "verify", "--data-dir", str(held_by_a_child)], backend_name)
        assert verify.returncode == 0, verify.stderr
        assert "OK" in verify.stdout
        repair = _run(
            [*command, "verify", "--repair", "--data-dir", str(held_by_a_child)], backend_name
        )
        assert repair.returncode == 1
        assert "held by another process" in repair.stderr


def test_click_is_what_parses(runner: CliRunner) -> None:
    # A guard that the commands are click commands (hand-written parsing would not be).
    assert isinstance(cli, click.Group)
    # bench passes its arguments (--help included) to the benchmark suite: tested below.
    assert sorted(cli.commands) == sorted([*COMMANDS, "bench"])


# --- bench -------------------------------------------------------------------------------------


def test_bench_runs_the_suite_from_a_checkout(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the repository root, ``walrus bench ARGS`` is ``python -m benchmarks ARGS``."""
    repo = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(repo)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(repo))])
    monkeypatch.delitem(sys.modules, "benchmarks", raising=False)
    monkeypatch.delitem(sys.modules, "benchmarks.__main__", raising=False)
    result = runner.invoke(cli, ["bench", "--help"])
    assert result.exit_code == 0, result.output
    assert "--quick" in result.output and "--json" in result.output


def test_bench_outside_a_checkout_says_where_the_suite_is(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    repo = str(Path(__file__).resolve().parent.parent)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", repo)])
    monkeypatch.delitem(sys.modules, "benchmarks", raising=False)
    monkeypatch.delitem(sys.modules, "benchmarks.__main__", raising=False)
    result = runner.invoke(cli, ["bench", "--quick"])
    assert result.exit_code == 1
    assert "source checkout" in result.stderr
