"""Where the project's own backends come from, for messages about missing ones.

Selection knows backends only from the plugins that are installed (their ``BackendInfo``);
this module is for the other case, a backend asked for that is *not* installed. It names the
distributions this project publishes, the folder of a checkout each is built from, and finds
that checkout when walrus-core was installed from one, so that an error can say exactly what
to run. A third party's backend is not listed here: its own documentation says how to get it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

import attrs

__all__ = [
    "PROJECT_BACKENDS",
    "ProjectBackend",
    "checkout_root",
    "close_matches",
    "install_instructions",
]


@attrs.frozen
class ProjectBackend:
    """A backend this project publishes: its name, its distribution and its source folder."""

    name: str
    distribution: str
    folder: str  # relative to the root of a checkout of the project


PROJECT_BACKENDS: dict[str, ProjectBackend] = {
    b.name: b
    for b in (
        ProjectBackend("fd", "walrus-fd", "plugins/walrus_fd"),
        ProjectBackend("mmap", "walrus-mmap", "plugins/walrus_mmap"),
        ProjectBackend("uring", "walrus-uring", "plugins/walrus_uring"),
        ProjectBackend("faults", "walrus-faults", "plugins/walrus_faults"),
    )
}


def checkout_root() -> Path | None:
    """The checkout this walrus-core runs from (an editable install or the source tree), found
    by the plugin folders beside the package; ``None`` for an install from a wheel."""
    root = Path(__file__).resolve().parent.parent
    if all((root / b.folder / "pyproject.toml").is_file() for b in PROJECT_BACKENDS.values()):
        return root
    return None


def install_instructions(name: str) -> str | None:
    """How to install the project's backend ``name`` (``None`` for a name the project does not
    publish): the distribution, the command for this checkout when there is one, else the
    commands for a checkout and for an index that serves the distribution."""
    backend = PROJECT_BACKENDS.get(name)
    if backend is None:
        return None
    root = checkout_root()
    if root is not None:
        return (
            f"it is the distribution {backend.distribution}; install it from this checkout"
            f" with: pip install {root / backend.folder}"
        )
    return (
        f"it is the distribution {backend.distribution}; install it from a checkout of Walrus"
        f" for Python with: pip install {backend.folder} (in the checkout's root), or from an"
        f" index that serves it with: pip install {backend.distribution}"
    )


def close_matches(name: str, candidates: Iterable[str]) -> list[str]:
    """Candidates that ``name`` may be a misspelling of, best first: an exact match ignoring
    case, then similar spellings."""
    pool = sorted(set(candidates))
    same_case = [c for c in pool if c.casefold() == name.casefold()]
    if same_case:
        return same_case
    folded = {c.casefold(): c for c in pool}
    return [folded[m] for m in difflib.get_close_matches(name.casefold(), folded, n=3, cutoff=0.6)]
