"""What every command shares: the directory options, opening the log, errors and output.

Errors the library raises on purpose (:class:`~walrus_core.WalrusError`) and ``OSError`` become
one ``Error: ...`` line and exit status 1, never a traceback: :class:`WalrusGroup` translates
them for every command.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import click
from rich.console import Console
from rich.text import Text

from walrus_core.api import DEFAULT_DATA_DIR, Walrus
from walrus_core.errors import DirectoryLockedError, WalrusError
from walrus_core.format import META_NAME, parse_data_file_name
from walrus_core.names import namespace_dir
from walrus_core.plugins import AUTO

if TYPE_CHECKING:
    from walrus_core.readonly import WalrusReader

F = TypeVar("F", bound=Callable[..., Any])

#: Where the command's resolved :class:`Target` is kept for the group's error messages.
TARGET_KEY = "walrus.target"

#: Shown in every writing command's help: the reason it fails while a process holds the log.
WRITER_NOTE = (
    "This command writes: it opens the log for writing and fails while another process"
    " (or another Walrus instance) holds the directory."
)


def one_line(message: object) -> str:
    """``message`` with every run of whitespace (newlines too) collapsed to one space."""
    return " ".join(str(message).split())


class WalrusGroup(click.Group):
    """A command group that turns the library's errors into one-line ``Error:`` messages."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DirectoryLockedError as exc:
            target = ctx.meta.get(TARGET_KEY)
            where = target.root if isinstance(target, Target) else "the data directory"
            pid = "" if exc.holder_pid is None else f" (pid {exc.holder_pid})"
            who = f"another process{pid}"
            raise click.ClickException(
                f"{where} is held by {who} (a running Walrus writer); this command"
                " writes and needs it closed (read-only commands such as info and tail work"
                " while it runs)"
            ) from None
        except WalrusError as exc:
            raise click.ClickException(one_line(exc) or type(exc).__name__) from None
        except OSError as exc:
            # BrokenPipeError is handled by main(): a closed pipe is not an error to report.
            if isinstance(exc, BrokenPipeError):
                raise
            raise click.ClickException(one_line(exc)) from None


@attrs.define
class Target:
    """The directory a command works on, resolved from its options and the environment."""

    data_dir: str
    key: str | None
    backend: str

    @property
    def root(self) -> str:
        """The directory the log lives in: ``data_dir``, or ``data_dir/<key>``."""
        return namespace_dir(self.data_dir, self.key)

    def require_existing(self) -> None:
        """Fail unless the log directory exists: commands that only inspect or change an
        existing log must never create an empty one as a side effect of a typo."""
        root = self.root
        if not os.path.isdir(root):
            raise click.ClickException(f"no Walrus directory at {root}")
        names = os.listdir(root)
        # A log whose metadata file was lost still has data files, and opening recovers it.
        if META_NAME not in names and not any(parse_data_file_name(n) is not None for n in names):
            raise click.ClickException(
                f"no Walrus directory at {root} (it holds no {META_NAME} and no data files)"
            )

    @contextmanager
    def writer(self, *, create: bool = False) -> Iterator[Walrus]:
        """The log opened for writing (holding the directory lock) for the ``with`` body."""
        if not create:
            self.require_existing()
        with Walrus(self.data_dir, key=self.key, backend=self.backend) as wal:
            yield wal

    @contextmanager
    def reader(self) -> Iterator[WalrusReader]:
        """The log opened read-only: works while another process writes to it."""
        self.require_existing()
        from walrus_core.readonly import WalrusReader

        with WalrusReader(self.data_dir, key=self.key) as reader:
            yield reader


def _from_command_line(ctx: click.Context | None, name: str) -> bool:
    return (
        ctx is not None and ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE
    )


def _resolve(ctx: click.Context, name: str, own: Any) -> Any:
    """A command's own option if given on its command line, else the group's (``walrus
    --data-dir X info``), else the environment variable or default both share."""
    if _from_command_line(ctx, name):
        return own
    parent = ctx.parent
    if parent is not None and _from_command_line(parent, name):
        return parent.params[name]
    return own


def directory_options(*, writes: bool = False) -> Callable[[F], F]:
    """Add ``--data-dir`` and ``--key`` (and ``--backend`` for commands that write) to a
    command, and pass it a resolved :class:`Target` as ``target`` instead."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ctx = click.get_current_context()
            data_dir = _resolve(ctx, "data_dir", kwargs.pop("data_dir"))
            key = _resolve(ctx, "key", kwargs.pop("key"))
            if writes:
                backend = _resolve(ctx, "backend", kwargs.pop("backend"))
            else:
                backend = ctx.parent.params.get("backend") if ctx.parent is not None else None
            target = Target(
                data_dir=data_dir or DEFAULT_DATA_DIR, key=key or None, backend=backend or AUTO
            )
            ctx.meta[TARGET_KEY] = target  # meta is shared with the group's context
            return command(*args, target=target, **kwargs)

        decorated: Callable[..., Any] = wrapper
        if writes:
            decorated = backend_option(decorated)
        decorated = key_option(decorated)
        decorated = data_dir_option(decorated)
        return decorated  # type: ignore[return-value]

    return decorate


data_dir_option = click.option(
    "--data-dir",
    metavar="DIR",
    envvar="WALRUS_DATA_DIR",
    show_envvar=True,
    default=DEFAULT_DATA_DIR,
    show_default=True,
    help="The data directory, as the library's data_dir.",
)
key_option = click.option(
    "--key",
    metavar="KEY",
    envvar="WALRUS_INSTANCE_KEY",
    show_envvar=True,
    default=None,
    help="Instance key: the log lives in DIR/<KEY>.",
)
backend_option = click.option(
    "--backend",
    metavar="NAME",
    envvar="WALRUS_BACKEND",
    show_envvar=True,
    default=AUTO,
    show_default=True,
    help='Storage backend for opening the log to write: a name, "a,b" (first that runs) or auto.',
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the result as JSON instead of a table."
)


def emit_json(value: Any) -> None:
    """Print ``value`` (plain data: see :func:`walrus_core.info.as_dict`) as indented JSON."""
    click.echo(json.dumps(value, indent=2, sort_keys=False))


def stdout_console() -> Console:
    """A rich console on the current stdout (tables); plain text when it is not a terminal."""
    return Console(highlight=False, soft_wrap=False)


def stderr_console() -> Console:
    """A rich console on stderr: progress bars and status lines, off the data stream."""
    return Console(stderr=True, highlight=False)


def cell(value: object) -> Text:
    """``value`` as literal table text: names and paths may hold ``[...]``, which rich would
    otherwise read as markup."""
    return Text(str(value))
