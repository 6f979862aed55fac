"""Moving entries in and out: ``tail`` prints a topic, ``append`` writes stdin to one."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from typing import IO

import click
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from walrus_core.cli.common import (
    WRITER_NOTE,
    Target,
    directory_options,
    emit_json,
    json_option,
    stderr_console,
)
from walrus_core.config import Limits
from walrus_core.entry import Entry

#: Payload bytes one stateless read asks for (a read returns at least one entry regardless).
READ_CHUNK_BYTES = 4 * 1024 * 1024
#: A batch being collected from stdin is appended once it holds this many payload bytes,
#: whatever ``--batch`` says, so memory stays bounded for large entries.
BATCH_BYTE_CAP = 64 * 1024 * 1024
LENGTH_PREFIX_BYTES = 4


# -- tail -------------------------------------------------------------------------------------


def format_entry(entry: Entry, fmt: str, topic: str) -> str:
    """One output line for ``entry`` in the ``--format`` named ``fmt``."""
    if fmt == "hex":
        return f"{entry.offset}\t{entry.data.hex()}"
    if fmt == "json":
        return json.dumps(
            {
                "topic": topic,
                "offset": entry.offset,
                "data_b64": base64.b64encode(entry.data).decode("ascii"),
            }
        )
    text = entry.data.decode("utf-8", "backslashreplace")
    # One line per entry, whatever the payload holds: line breaks are shown escaped.
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return f"{entry.offset}\t{text}"


class _Printer:
    """Writes entries to stdout, flushing after each group so a follower sees them at once,
    and counts them against ``--limit``."""

    def __init__(self, topic: str, fmt: str, limit: int | None) -> None:
        self.topic = topic
        self.fmt = fmt
        self.remaining = limit
        self.out = sys.stdout

    @property
    def done(self) -> bool:
        return self.remaining is not None and self.remaining <= 0

    def take(self, entries: list[Entry]) -> list[Entry]:
        """The part of ``entries`` the limit still allows."""
        if self.remaining is None:
            return entries
        return entries[: max(0, self.remaining)]

    def write(self, entries: list[Entry]) -> None:
        entries = self.take(entries)
        if not entries:
            return
        self.out.write("".join(format_entry(e, self.fmt, self.topic) + "\n" for e in entries))
        self.out.flush()
        if self.remaining is not None:
            self.remaining -= len(entries)


def _peek(
    target: Target,
    topic: str,
    start: int | None,
    consumer: str | None,
    follow: bool,
    printer: _Printer,
) -> None:
    """Stateless reads through the read-only reader: no cursor of the log moves."""
    with target.reader() as reader:
        exists = topic in reader.topics()
        if not exists and not follow:
            raise click.ClickException(f"no topic {topic!r} in {target.root}")
        if exists and start is None:
            if consumer is not None:
                by_name = {c.name: c for c in reader.consumers(topic)}
                if consumer not in by_name:
                    raise click.ClickException(f"topic {topic!r} has no consumer {consumer!r}")
                start = by_name[consumer].offset
            else:
                start = reader.topic_info(topic).first_offset
        next_offset = 0 if start is None else start
        if exists:
            end = reader.topic_info(topic).end_offset
            if next_offset > end:
                raise click.ClickException(
                    f"--from {next_offset} is past the end of topic {topic!r}"
                    f" (the next append gets offset {end})"
                )
            while not printer.done and next_offset < end:
                entries = reader.batch_read_for_topic(
                    topic, READ_CHUNK_BYTES, start_offset=next_offset
                )
                if not entries:
                    break
                printer.write(entries)
                next_offset = entries[-1].offset + 1
        if not follow or printer.done:
            return
        for entry in reader.follow(topic, start_offset=next_offset):
            printer.write([entry])
            if printer.done:
                return


def _consume(target: Target, topic: str, consumer: str | None, printer: _Printer) -> None:
    """Read as ``consumer`` and move its cursor past what was printed.

    Entries are read without checkpointing and the cursor is moved only once they are on
    stdout, so an interrupted or failed output never loses an entry (it is printed again).
    """
    with target.writer() as wal:
        if topic not in wal.topics():
            raise click.ClickException(f"no topic {topic!r} in {target.root}")
        while not printer.done:
            entries = printer.take(
                wal.batch_read_for_topic(
                    topic, READ_CHUNK_BYTES, checkpoint=False, consumer=consumer
                )
            )
            if not entries:
                return
            printer.write(entries)
            wal.seek(topic, entries[-1].offset + 1, consumer=consumer)


@click.command()
@click.argument("topic")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new entries until Ctrl-C.")
@click.option(
    "--from",
    "start",
    type=click.IntRange(min=0),
    metavar="OFFSET",
    help="First offset to print (default: the oldest retained entry).",
)
@click.option(
    "--consumer",
    metavar="NAME",
    help="Start where consumer NAME is; with --commit, consume as NAME.",
)
@click.option(
    "--commit",
    is_flag=True,
    help="Consume: move the consumer's cursor past what is printed (opens the log to write).",
)
@click.option(
    "-n", "--limit", type=click.IntRange(min=1), metavar="N", help="Print at most N entries."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "hex", "json"]),
    default="text",
    show_default=True,
    help="How each entry is printed (see above).",
)
@directory_options(writes=True)
def tail(
    target: Target,
    topic: str,
    follow: bool,
    start: int | None,
    consumer: str | None,
    commit: bool,
    limit: int | None,
    fmt: str,
) -> None:
    """Print the entries of TOPIC, one line each.

    By default this peeks: it reads the log read-only (so it works while another process
    writes), from --from OFFSET, or where --consumer NAME is, or the oldest retained entry,
    and moves no cursor. With -f it then waits for new appends until Ctrl-C (exit status 0).

    With --commit it consumes instead: it opens the log for writing and moves the cursor of
    --consumer NAME (the topic's default cursor without --consumer) past every entry once it
    was printed. It then needs the directory not held by another process, and cannot follow
    (nothing else can append while it holds the log) or start at --from.

    \b
    Formats:
      text  OFFSET<TAB>payload as UTF-8 (undecodable bytes as \\xNN, line breaks as \\n, \\r)
      hex   OFFSET<TAB>payload in hexadecimal
      json  one object a line: {"topic": ..., "offset": N, "data_b64": "<base64 payload>"}

    \b
    Examples:
      walrus tail orders -n 10
      walrus tail orders -f --format json
      walrus tail orders --consumer billing --commit
    """
    if commit and follow:
        raise click.UsageError(
            "--follow cannot be combined with --commit: while this command holds the log for"
            " writing, nothing else can append to it"
        )
    if commit and start is not None:
        raise click.UsageError(
            "--from cannot be combined with --commit: the consumer's cursor says"
        )
    printer = _Printer(topic, fmt, limit)
    try:
        if commit:
            _consume(target, topic, consumer, printer)
        else:
            _peek(target, topic, start, consumer, follow, printer)
    except KeyboardInterrupt:
        # Ctrl-C is how a follower is meant to stop: not an error.
        return


# -- append -----------------------------------------------------------------------------------


class TruncatedFrameError(click.ClickException):
    """Stdin ended inside a length-prefixed entry."""


def newline_entries(stream: IO[bytes]) -> Iterator[tuple[bytes, int]]:
    """Each line of ``stream`` without its ``\\n`` (a ``\\r`` stays), with the bytes it took."""
    for line in stream:
        yield (line[:-1] if line.endswith(b"\n") else line), len(line)


def length_entries(stream: IO[bytes], max_entry_bytes: int) -> Iterator[tuple[bytes, int]]:
    """Frames of ``stream``: a 4-byte big-endian length, then that many bytes."""
    position = 0
    while True:
        prefix = stream.read(LENGTH_PREFIX_BYTES)
        if not prefix:
            return
        if len(prefix) < LENGTH_PREFIX_BYTES:
            raise TruncatedFrameError(
                f"stdin ends inside the length prefix of the frame at byte {position}"
            )
        length = int.from_bytes(prefix, "big")
        if length > max_entry_bytes:
            raise click.ClickException(
                f"the frame at byte {position} announces {length} bytes, more than the largest"
                f" entry ({max_entry_bytes} bytes)"
            )
        payload = _read_exactly(stream, length)
        if len(payload) < length:
            raise TruncatedFrameError(
                f"stdin ends inside the frame at byte {position}: {len(payload)} of its"
                f" {length} bytes arrived"
            )
        position += LENGTH_PREFIX_BYTES + length
        yield payload, LENGTH_PREFIX_BYTES + length


def _read_exactly(stream: IO[bytes], length: int) -> bytes:
    """``length`` bytes of ``stream``, fewer only at its end (a pipe may return less)."""
    chunks = []
    missing = length
    while missing > 0:
        chunk = stream.read(missing)
        if not chunk:
            break
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def batches(
    entries: Iterable[tuple[bytes, int]], batch_entries: int
) -> Iterator[tuple[list[bytes], int]]:
    """Groups of at most ``batch_entries`` entries (and about :data:`BATCH_BYTE_CAP` bytes),
    with the input bytes each group consumed. A group is yielded only once complete, so an
    input error inside it appends none of it."""
    group: list[bytes] = []
    group_bytes = 0
    consumed = 0
    for payload, took in entries:
        group.append(payload)
        group_bytes += len(payload)
        consumed += took
        if len(group) >= batch_entries or group_bytes >= BATCH_BYTE_CAP:
            yield group, consumed
            group, group_bytes, consumed = [], 0, 0
    if group:
        yield group, consumed


def _input_size(stream: IO[bytes]) -> int | None:
    """The size of stdin when it is a regular file (so the bar can show a total)."""
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


@click.command(epilog=WRITER_NOTE)
@click.argument("topic")
@click.option(
    "--batch",
    "batch_entries",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    metavar="N",
    help="Entries per atomic batch (at most the log's batch limit, 2000 by default).",
)
@click.option(
    "--delimiter",
    type=click.Choice(["newline", "length"]),
    default="newline",
    show_default=True,
    help="How stdin is cut into entries (see above).",
)
@directory_options(writes=True)
@json_option
def append(target: Target, topic: str, batch_entries: int, delimiter: str, as_json: bool) -> None:
    """Append the entries read from stdin to TOPIC, in atomic batches of --batch N.

    \b
    Delimiters:
      newline  one entry per line, without its "\\n" (empty lines are empty entries)
      length   each entry is a 4-byte big-endian length, then that many bytes

    Each batch is appended atomically, all of it or none. If stdin ends inside a
    length-prefixed frame, the command fails and nothing of the batch being collected is
    appended (earlier batches stay). It creates the log directory if there is none.

    On a terminal a progress bar is drawn on stderr; when stderr is not a terminal nothing
    is drawn. At the end the appended offset range is reported on stderr ("appended N
    entries to TOPIC: offsets A..B"), so stdout stays empty; --json prints it to stdout as
    {"topic", "entries", "first_offset", "end_offset"} instead (end_offset is exclusive).

    \b
    Examples:
      printf 'a\\nb\\n' | walrus append orders
      walrus append images --delimiter length < frames.bin
    """
    stdin = sys.stdin.buffer
    console = stderr_console()
    limit = Limits().max_batch_entries  # the writer below is opened with the default limits
    if batch_entries > limit:
        raise click.UsageError(f"--batch {batch_entries} exceeds the batch limit of {limit}")
    with target.writer(create=True) as wal:
        source = (
            newline_entries(stdin)
            if delimiter == "newline"
            else length_entries(stdin, wal.limits.max_entry_bytes)
        )
        first: int | None = None
        end: int | None = None
        count = 0
        progress = Progress(
            TextColumn("appending to [bold]{task.fields[topic]}[/]"),
            BarColumn(),
            TaskProgressColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[entries]} entries"),
            TimeElapsedColumn(),
            console=console,
            disable=not console.is_terminal,
            transient=True,
        )
        try:
            with progress:
                task = progress.add_task(
                    "append", total=_input_size(stdin), topic=escape(topic), entries=0
                )
                for group, consumed in batches(source, batch_entries):
                    offsets = wal.batch_append_for_topic(topic, group)
                    if first is None:
                        first = offsets.start
                    end = offsets.stop
                    count += len(group)
                    progress.update(task, advance=consumed, entries=count)
        except TruncatedFrameError as exc:
            done = (
                f"; {count} entries before it were appended (offsets {first}..{end - 1})"
                if first is not None and end is not None
                else "; nothing was appended"
            )
            raise click.ClickException(exc.message + done) from None
    if as_json:
        emit_json({"topic": topic, "entries": count, "first_offset": first, "end_offset": end})
    elif first is None or end is None:
        console.print(f"appended nothing to {topic}: stdin was empty", markup=False)
    else:
        console.print(
            f"appended {count} entries to {topic}: offsets {first}..{end - 1}", markup=False
        )
