"""``verify``: check every entry's checksum, and optionally repair torn tails first."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from walrus_core.cli.common import (
    Target,
    cell,
    directory_options,
    emit_json,
    json_option,
    stderr_console,
    stdout_console,
)
from walrus_core.info import as_dict

if TYPE_CHECKING:
    from walrus_core.verify import VerifyReport


@click.command()
@click.option(
    "--repair",
    is_flag=True,
    help="First truncate torn tails (writes: needs the directory not held), then verify.",
)
@directory_options(writes=True)
@json_option
def verify(target: Target, repair: bool, as_json: bool) -> None:
    """Scan every entry of every topic and check its checksum; report each damaged entry
    (topic, offset, file, byte position) and each torn tail. Exit status 1 if anything is
    damaged. Read-only (works while another process writes) unless --repair is given.

    --repair truncates torn tails, the incomplete last writes a crash leaves, and nothing
    else: damaged entries inside the log are reported, never removed. It opens the log for
    writing, so it fails while another process holds the directory. --backend applies to it.

    \b
    Examples:
      walrus verify --data-dir /var/lib/app/wal
      walrus verify --repair
      walrus verify --json | jq '.damaged | length'
    """
    target.require_existing()
    from walrus_core import verify as verifying

    actions: tuple[str, ...] | None = None
    if repair:
        actions = verifying.repair_directory(
            target.data_dir, target.key, backend=target.backend
        ).actions
        if not as_json:
            console = stdout_console()
            if actions:
                for action in actions:
                    console.print(f"repaired: {action}", markup=False)
            else:
                console.print("nothing to repair")
    err = stderr_console()
    progress = Progress(
        TextColumn("verifying"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
        transient=True,
    )
    with progress:
        task = progress.add_task("verify", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        report = verifying.verify_directory(target.data_dir, target.key, progress=advance)
    if as_json:
        doc = {"ok": report.ok, **as_dict(report)}  # ok is a property: as_dict skips it
        if actions is not None:
            doc["repair"] = list(actions)
        emit_json(doc)
    else:
        _print_report(report)
    if not report.ok:
        click.get_current_context().exit(1)


def _print_report(report: VerifyReport) -> None:
    console = stdout_console()
    if report.damaged:
        table = Table(title="Damaged entries")
        for column in ("topic", "offset", "file", "position", "reason"):
            table.add_column(
                column, justify="right" if column in ("offset", "position") else "left"
            )
        for damaged in report.damaged:
            table.add_row(
                cell(damaged.topic),
                str(damaged.offset),
                cell(damaged.path),
                str(damaged.position),
                cell(damaged.reason),
            )
        console.print(table)
    if report.torn_tails:
        table = Table(title="Torn tails (walrus verify --repair truncates them)")
        for column in ("topic", "file", "position", "bytes"):
            table.add_column(column, justify="right" if column in ("position", "bytes") else "left")
        for torn in report.torn_tails:
            table.add_row(cell(torn.topic), cell(torn.path), str(torn.position), str(torn.bytes))
        console.print(table)
    verdict = "OK" if report.ok else "DAMAGED"
    console.print(
        f"{verdict}: {report.entries_checked} entries ({report.bytes_checked} bytes) in"
        f" {report.files} files checked, {len(report.damaged)} damaged,"
        f" {len(report.torn_tails)} torn tails",
        markup=False,
    )
