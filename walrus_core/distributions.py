"""Where the project's own backends come from, for messages about missing ones.

Selection knows backends only from the plugins that are installed (their ``BackendInfo``);
this module is for the other case, a backend asked for that is *not* installed. It names the
distributions this project publishes, the folder of a checkout each is built from, and finds
that checkout when walrus-core was installed from one, so that an error can say exactly what
to run. A third party's backend is not listed here: its own documentation says how to get it.
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Iterable
from pathlib import Path

import attrs

__all__ = [
    "PROJECT_BACKENDS",
    "ProjectBackend",
    "auto_candidates",
    "checkout_root",
    "close_matches",
    "install_instructions",
    "remote_install_instructions",
]


@attrs.frozen
class ProjectBackend:
    """A backend this project publishes: its name, its distribution, its source folder, the
    project's backends it needs installed too, and the platforms ``"auto"`` picks it on."""

    name: str
    distribution: str
    folder: str  # relative to the root of a checkout of the project
    needs: tuple[str, ...] = ()
    auto_platforms: tuple[str, ...] = ()  # prefixes of sys.platform; "*" for any


_POSIX = ("linux", "darwin", "freebsd", "openbsd", "netbsd", "sunos", "aix")

PROJECT_BACKENDS: dict[str, ProjectBackend] = {
    b.name: b
    for b in (
        ProjectBackend("fd", "walrus-fd", "plugins/walrus_fd", auto_platforms=_POSIX),
        ProjectBackend("mmap", "walrus-mmap", "plugins/walrus_mmap", auto_platforms=("*",)),
        ProjectBackend("uring", "walrus-uring", "plugins/walrus_uring", needs=("fd",)),
        ProjectBackend("faults", "walrus-faults", "plugins/walrus_faults", needs=("fd",)),
    )
}


#: The remote logs this project publishes, by the URL scheme ``connect()`` opens them with.
PROJECT_REMOTES: dict[str, ProjectBackend] = {
    scheme: ProjectBackend(scheme, "walrus-nats", "plugins/walrus_nats")
    for scheme in ("nats", "tls")
}


def checkout_root() -> Path | None:
    """The checkout this walrus-core runs from (an editable install or the source tree), found
    by the plugin folders beside the package; ``None`` for an install from a wheel."""
    root = Path(__file__).resolve().parent.parent
    if all((root / b.folder / "pyproject.toml").is_file() for b in PROJECT_BACKENDS.values()):
        return root
    return None


def install_instructions(name: str, installed: Iterable[str] = ()) -> str | None:
    """How to install the project's backend ``name`` (``None`` for a name the project does not
    publish): its distribution, the command for a checkout (this one when walrus-core runs
    from one) and the one for an index that serves the project's distributions. Backends it
    needs that are not in ``installed`` are installed with it."""
    backend = PROJECT_BACKENDS.get(name)
    if backend is None:
        return None
    return _instructions(backend, installed)


def remote_install_instructions(scheme: str) -> str | None:
    """How to install the project's remote log for ``scheme``: URLs (``None`` for a scheme
    the project does not serve)."""
    remote = PROJECT_REMOTES.get(scheme)
    return None if remote is None else _instructions(remote, ())


def _instructions(backend: ProjectBackend, installed: Iterable[str]) -> str:
    have = set(installed)
    wanted = [PROJECT_BACKENDS[n] for n in backend.needs if n not in have] + [backend]
    root = checkout_root()
    if root is not None:
        checkout = " ".join(shlex.quote(str(root / b.folder)) for b in wanted)
        where = "from this checkout"
    else:
        checkout = " ".join(b.folder for b in wanted)
        where = "from a checkout of Walrus for Python, in its root"
    index = " ".join(b.distribution for b in wanted)
    return (
        f"it is the distribution {backend.distribution}; install it {where} with: pip install"
        f" {checkout} (or, from an index that serves the project's distributions: pip install"
        f" {index})"
    )


def auto_candidates(platform: str) -> list[str]:
    """The project's base backends that ``"auto"`` would pick on ``platform``."""
    return [
        b.name
        for b in PROJECT_BACKENDS.values()
        if any(p == "*" or platform.startswith(p) for p in b.auto_platforms)
    ]


def close_matches(name: str, candidates: Iterable[str]) -> list[str]:
    """Candidates that ``name`` may be a misspelling of, best first: an exact match ignoring
    case, then similar spellings."""
    pool = sorted(set(candidates))
    same_case = [c for c in pool if c.casefold() == name.casefold()]
    if same_case:
        return same_case
    folded = {c.casefold(): c for c in pool}
    return [folded[m] for m in difflib.get_close_matches(name.casefold(), folded, n=3, cutoff=0.6)]
