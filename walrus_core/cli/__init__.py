"""The ``walrus`` command line: inspect, verify, read and write a Walrus log directory.

Built on click (commands and options) and rich (tables and progress bars). Every command
takes ``--data-dir`` and ``--key`` (also accepted before the command name, and read from
``$WALRUS_DATA_DIR`` and ``$WALRUS_INSTANCE_KEY``, as the library does). Read-only commands
open the log read-only, so they work on a directory a running process holds; commands that
write say so in their help. Errors are one ``Error: ...`` line on stderr and exit status 1.
"""

from __future__ import annotations

import click

from walrus_core import __version__
from walrus_core.cli.bench import bench
from walrus_core.cli.common import (
    WalrusGroup,
    backend_option,
    data_dir_option,
    key_option,
)
from walrus_core.cli.entries import append, tail
from walrus_core.cli.inspection import backends, consumers, info, stats
from walrus_core.cli.integrity import verify
from walrus_core.cli.maintenance import delete_consumer, delete_topic, reclaim

__all__ = ["cli", "main"]


@click.group(cls=WalrusGroup, context_settings={"help_option_names": ["-h", "--help"]})
@data_dir_option
@key_option
@backend_option
@click.version_option(__version__, prog_name="walrus")
def cli(data_dir: str, key: str | None, backend: str) -> None:
    """Inspect and operate Walrus write-ahead log directories.

    The directory options may be given here, before the command, or after it.

    \b
    Examples:
      walrus info --data-dir /var/lib/app/wal
      walrus --data-dir /var/lib/app/wal tail orders -f
      printf 'hello\\n' | walrus append orders
    """


for _command in (
    backends,
    info,
    stats,
    consumers,
    verify,
    tail,
    append,
    reclaim,
    delete_consumer,
    delete_topic,
    bench,
):
    cli.add_command(_command)


def main() -> None:
    """The ``walrus`` console script."""
    cli(prog_name="walrus")
