"""Commands that change a log without appending: ``reclaim``, ``delete-consumer`` and
``delete-topic``. Each opens the log for writing, so the directory must not be held."""

from __future__ import annotations

import click
from rich.filesize import decimal as human_bytes
from rich.table import Table

from walrus_core.cli.common import (
    WRITER_NOTE,
    Target,
    directory_options,
    emit_json,
    json_option,
    stdout_console,
)
from walrus_core.info import as_dict


@click.command(epilog=WRITER_NOTE)
@directory_options(writes=True)
@json_option
def reclaim(target: Target, as_json: bool) -> None:
    """Give disk space back: delete data files and punch out blocks that every consumer has
    read or that retention dropped, and report what was freed.

    \b
    Examples:
      walrus reclaim --data-dir /var/lib/app/wal
      walrus reclaim --json
    """
    with target.writer() as wal:
        result = wal.reclaim()
    if as_json:
        emit_json(as_dict(result))
        return
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("files deleted", str(result.files_deleted))
    table.add_row("blocks punched", str(result.blocks_punched))
    table.add_row("bytes freed", f"{result.bytes_freed} ({human_bytes(result.bytes_freed)})")
    table.add_row("blocks dropped", str(result.blocks_dropped))
    table.add_row("unread entries dropped by retention", str(result.entries_dropped))
    stdout_console().print(table)


@click.command("delete-consumer", epilog=WRITER_NOTE)
@click.argument("topic")
@click.argument("consumer")
@directory_options(writes=True)
def delete_consumer(target: Target, topic: str, consumer: str) -> None:
    """Delete the consumer named CONSUMER of TOPIC: its cursor is forgotten and it no longer
    holds back reclamation. Exit status 1 if there is no such consumer.

    CONSUMER is always a name: the topic's default cursor (shown as "(default)") cannot be
    deleted this way.

    \b
    Example:
      walrus delete-consumer orders billing
    """
    with target.writer() as wal:
        deleted = wal.delete_consumer(topic, consumer)
    if not deleted:
        raise click.ClickException(f"topic {topic!r} has no consumer {consumer!r}")
    click.echo(f"deleted consumer {consumer!r} of topic {topic!r}")


@click.command("delete-topic", epilog=WRITER_NOTE)
@click.argument("topic")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@directory_options(writes=True)
def delete_topic(target: Target, topic: str, yes: bool) -> None:
    """Delete TOPIC: all its entries and consumers. Asks for confirmation (read from stdin)
    unless --yes is given; declining exits with status 1. Exit status 1 if there is no such
    topic. The name can be used again later; its offsets continue where they stopped.

    \b
    Examples:
      walrus delete-topic scratch
      walrus delete-topic scratch --yes
    """
    with target.writer() as wal:
        if topic not in wal.topics():
            raise click.ClickException(f"no topic {topic!r} in {target.root}")
        if not yes:
            entries = wal.topic_info(topic).entries
            click.confirm(
                f"Delete topic {topic!r} and its {entries} retained entries from {target.root}?",
                abort=True,
            )
        deleted = wal.delete_topic(topic)
    if not deleted:
        raise click.ClickException(f"no topic {topic!r} in {target.root}")
    click.echo(f"deleted topic {topic!r}")
