"""``walrus bench``: the benchmark suite, from a source checkout.

The suite (the ``benchmarks`` package at the repository root) is not part of the installed
distribution: it needs the peers it compares against (``pip install walrus-core[bench]``) and
scratch space beside the checkout. This command runs it when it can be imported (from the
checkout's root, or with the checkout on ``PYTHONPATH``) and says how to get it otherwise.
"""

from __future__ import annotations

import importlib
import os
import sys

import click


@click.command(
    "bench",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the benchmark suite (python -m benchmarks) with ARGS, e.g. --quick or --help.

    Run it from the root of a source checkout; the suite is not installed with the package.
    """
    # A console script's sys.path starts at its own folder, not at the working directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        suite = importlib.import_module("benchmarks.__main__")
    except ImportError as exc:
        raise click.ClickException(
            "the benchmark suite is not importable here: run `walrus bench` (or"
            " `python -m benchmarks`) from the root of a source checkout of walrus-core, with"
            f" `pip install -e '.[bench]'` for the peers ({exc})"
        ) from None
    status = suite.main(list(args))
    sys.exit(status or 0)
