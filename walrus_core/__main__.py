"""``python -m walrus_core``: what is installed here, and where to go next.

With arguments it is the ``walrus`` command line (``python -m walrus_core info --data-dir d``).
"""

from __future__ import annotations

import os
import sys

from walrus_core import BackendUnavailableError, __version__
from walrus_core.plugins import AUTO, default_registry


def summary() -> str:
    """The version, the backend ``"auto"`` picks here (or why none), and the next steps."""
    registry = default_registry()
    requested = os.environ.get("WALRUS_BACKEND") or AUTO  # what Walrus() would ask for
    try:
        picked = "/".join(registry.chain(requested).names)
    except BackendUnavailableError as exc:
        picked = f"nothing: {exc}"
    installed = ", ".join(registry.names()) or "none"
    return "\n".join(
        [
            f"walrus-core {__version__} (Python {sys.version.split()[0]}, {sys.platform})",
            (
                f'backend "auto" picks here: {picked}'
                if requested == AUTO
                else f"backend $WALRUS_BACKEND={requested!r} picks here: {picked}"
            ),
            f"installed backends: {installed}",
            "",
            "next:",
            "  python -m walrus_core.demo        a producer and a consumer, in a temp directory",
            "  walrus --help                     the command line (also: python -m walrus_core"
            " --help)",
            "  walrus backends                   every installed backend and why it can or cannot"
            " run",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Print :func:`summary`, or run the command line when given arguments."""
    args = sys.argv[1:] if argv is None else argv
    if args:
        from walrus_core.cli import cli

        cli.main(args=args, prog_name="python -m walrus_core")
        return 0
    print(summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
