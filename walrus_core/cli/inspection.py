"""Read-only inspection commands: ``backends``, ``info``, ``stats`` and ``consumers``.

Apart from ``backends`` (which looks at no directory) they open the log read-only, so they
work on a directory a running process holds.
"""

from __future__ import annotations

from typing import Any

import click
from rich.filesize import decimal as human_bytes
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from walrus_core.cli.common import (
    Target,
    cell,
    directory_options,
    emit_json,
    json_option,
    one_line,
    stdout_console,
)
from walrus_core.errors import BackendUnavailableError
from walrus_core.info import ConsumerInfo, LogInfo, Retention, TopicInfo, as_dict
from walrus_core.plugins import AUTO, default_registry

#: How the topic's default cursor (a consumer without a name) appears in tables.
DEFAULT_CONSUMER_LABEL = "(default)"


def _selection(requested: str) -> tuple[str | None, str | None]:
    """The backend ``requested`` resolves to here, or None and the reason none can run."""
    try:
        return default_registry().select(requested), None
    except BackendUnavailableError as exc:
        return None, one_line(exc)


@click.command()
@click.option(
    "--backend",
    metavar="NAME",
    envvar="WALRUS_BACKEND",
    show_envvar=True,
    default=AUTO,
    show_default=True,
    help="Also say what this backend request resolves to.",
)
@json_option
def backends(backend: str, as_json: bool) -> None:
    """List the installed storage backends: version, whether each can run here (and why
    not), and which one "auto" picks.

    \b
    Examples:
      walrus backends
      walrus backends --json | jq .auto
    """
    statuses = default_registry().statuses()
    auto, auto_error = _selection(AUTO)
    requested = None if backend == AUTO else (backend, *_selection(backend))
    if as_json:
        doc: dict[str, Any] = {
            "backends": as_dict(statuses),
            "auto": auto,
            "auto_error": auto_error,
        }
        if requested is not None:
            doc["requested"] = {
                "name": requested[0],
                "selected": requested[1],
                "error": requested[2],
            }
        emit_json(doc)
        return
    table = Table(title="Installed storage backends")
    for column in ("backend", "version", "usable here", "layers over", "why not"):
        table.add_column(column)
    for status in statuses:
        table.add_row(
            cell(status.name),
            cell(status.version or "-"),
            Text("yes", style="green") if status.available else Text("no", style="red"),
            cell(status.layers_over or "-"),
            cell(status.reason or ""),
        )
    console = stdout_console()
    if statuses:
        console.print(table)
    else:
        console.print("No storage backend is installed; see below for how to install one.")
    console.print(
        f"auto selects: {auto}" if auto else f"auto selects nothing: {auto_error}", markup=False
    )
    if requested is not None:
        name, selected, error = requested
        console.print(
            f"{name} selects: {selected}" if selected else f"{name}: {error}", markup=False
        )


def _retention_text(retention: Retention) -> str:
    if retention.unlimited:
        return "unlimited"
    parts = []
    if retention.max_bytes is not None:
        parts.append(f"max {human_bytes(retention.max_bytes)}")
    if retention.max_age_seconds is not None:
        parts.append(f"max age {retention.max_age_seconds:g} s")
    return ", ".join(parts)


def consumer_label(name: str | None) -> str:
    """A consumer's name for a table: the default cursor has none."""
    return DEFAULT_CONSUMER_LABEL if name is None else name


def _max_lag(topic: TopicInfo) -> int:
    return max((c.lag for c in topic.consumers), default=0)


def _topics_table(topics: tuple[TopicInfo, ...]) -> Table:
    table = Table(title="Topics")
    # "first": the oldest retained offset; "end": the offset the next append gets.
    for column in ("topic", "first", "end", "entries", "blocks", "on disk"):
        table.add_column(column, justify="left" if column == "topic" else "right")
    table.add_column("consumers", justify="right")
    table.add_column("max lag", justify="right")
    for topic in topics:
        table.add_row(
            cell(topic.name),
            str(topic.first_offset),
            str(topic.end_offset),
            str(topic.entries),
            str(topic.blocks),
            human_bytes(topic.bytes_on_disk),
            str(len(topic.consumers)),
            str(_max_lag(topic)),
        )
    return table


def consumers_table(topic: str, consumers: list[ConsumerInfo] | tuple[ConsumerInfo, ...]) -> Table:
    """The consumers of ``topic``, one row each."""
    table = Table(title=f"Consumers of {escape(topic)}")
    table.add_column("consumer")
    for column in ("next offset", "lag", "skipped"):
        table.add_column(column, justify="right")
    for consumer in consumers:
        table.add_row(
            cell(consumer_label(consumer.name)),
            str(consumer.offset),
            str(consumer.lag),
            str(consumer.skipped),
        )
    return table


def _log_summary(info: LogInfo) -> Table:
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    rows = [
        ("directory", info.data_dir),
        ("format version", str(info.format_version)),
        (
            "geometry",
            f"block_size={info.block_size} ({human_bytes(info.block_size)}),"
            f" blocks_per_file={info.blocks_per_file}",
        ),
        ("data files", str(info.files)),
        *([("backend chain", " over ".join(info.backend_chain))] if info.backend_chain else []),
        ("bytes on disk", f"{info.bytes_on_disk} ({human_bytes(info.bytes_on_disk)})"),
        ("retention", _retention_text(info.retention)),
        ("topics", str(len(info.topics))),
    ]
    for label, value in rows:
        summary.add_row(label, cell(value))
    return summary


def _known_topic(target: Target, topics: list[str], topic: str) -> None:
    if topic not in topics:
        raise click.ClickException(f"no topic {topic!r} in {target.root}")


@click.command()
@click.argument("topic", required=False)
@directory_options()
@json_option
def info(target: Target, topic: str | None, as_json: bool) -> None:
    """Describe a log: format version, geometry, files and bytes on disk, and each topic's
    retained range, entries, space and consumers (with their lag). With TOPIC, that topic
    only, with its consumers. Read-only: works while another process writes.

    \b
    Examples:
      walrus info --data-dir /var/lib/app/wal
      walrus info orders --json
    """
    with target.reader() as reader:
        if topic is not None:
            _known_topic(target, reader.topics(), topic)
            topic_info = reader.topic_info(topic)
            if as_json:
                emit_json(as_dict(topic_info))
                return
            console = stdout_console()
            console.print(_topics_table((topic_info,)))
            if topic_info.consumers:
                console.print(consumers_table(topic, topic_info.consumers))
            else:
                console.print(f"{topic} has no consumers", markup=False)
            console.print(f"retention: {_retention_text(topic_info.retention)}", markup=False)
            return
        log_info = reader.info()
    if as_json:
        emit_json(as_dict(log_info))
        return
    console = stdout_console()
    console.print(_log_summary(log_info))
    if log_info.topics:
        console.print(_topics_table(log_info.topics))


def space_report(log_info: LogInfo) -> dict[str, Any]:
    """The space accounting of ``walrus stats --json``."""
    topics = [
        {
            "name": topic.name,
            "entries": topic.entries,
            "blocks": topic.blocks,
            "bytes_on_disk": topic.bytes_on_disk,
            "consumers": len(topic.consumers),
            "max_lag": _max_lag(topic),
        }
        for topic in log_info.topics
    ]
    return {
        "data_dir": log_info.data_dir,
        "files": log_info.files,
        "bytes_on_disk": log_info.bytes_on_disk,
        "topic_bytes": sum(topic.bytes_on_disk for topic in log_info.topics),
        "entries": sum(topic.entries for topic in log_info.topics),
        "topics": topics,
    }


@click.command()
@directory_options()
@json_option
def stats(target: Target, as_json: bool) -> None:
    """Space accounting: data files and bytes on disk, and per topic its entries, bytes and
    consumer lag. Read-only: works while another process writes.

    "bytes on disk" counts every allocated byte of the directory; a topic's bytes count its
    blocks. The difference is space the next reclaim may give back, cursors and metadata.

    \b
    Examples:
      walrus stats
      walrus stats --json | jq .bytes_on_disk
    """
    with target.reader() as reader:
        report = space_report(reader.info())
    if as_json:
        emit_json(report)
        return
    table = Table(title=f"Space in {escape(report['data_dir'])}")
    table.add_column("topic")
    for column in ("entries", "blocks", "bytes", "consumers", "max lag"):
        table.add_column(column, justify="right")
    for row in report["topics"]:
        table.add_row(
            cell(row["name"]),
            str(row["entries"]),
            str(row["blocks"]),
            human_bytes(row["bytes_on_disk"]),
            str(row["consumers"]),
            str(row["max_lag"]),
        )
    console = stdout_console()
    console.print(table)
    console.print(
        f"{report['files']} data files, {human_bytes(report['bytes_on_disk'])} on disk"
        f" ({report['bytes_on_disk']} bytes), {human_bytes(report['topic_bytes'])} in topics,"
        f" {report['entries']} entries"
    )


@click.command()
@click.argument("topic")
@directory_options()
@json_option
def consumers(target: Target, topic: str, as_json: bool) -> None:
    """List the consumers of TOPIC: the next offset each reads, its lag, and the entries
    retention dropped before it read them. The topic's default cursor is shown as
    "(default)" (null in JSON). Read-only: works while another process writes.

    \b
    Examples:
      walrus consumers orders
      walrus consumers orders --json
    """
    with target.reader() as reader:
        _known_topic(target, reader.topics(), topic)
        found = reader.consumers(topic)
    if as_json:
        emit_json(as_dict(found))
        return
    if found:
        stdout_console().print(consumers_table(topic, found))
    else:
        stdout_console().print(f"{topic} has no consumers", markup=False)
