"""A griffe extension for the docs build: turn Sphinx cross-reference roles into links.

The project's docstrings use Sphinx roles (``:class:`BackendInfo```,
``:mod:`walrus_core.contract```, ``:data:`RULES```). Griffe's Sphinx parser reads the
``:param:``, ``:return:`` and ``:raises:`` fields but leaves roles in the text as they are, so
they would show up literally. This extension rewrites
each role, before the docstrings are parsed, into an *optional* autorefs cross-reference: a link
when the target is rendered somewhere on the site, plain code otherwise (never a warning, so
``mkdocs build --strict`` is not affected by a role pointing at an undocumented object).

It only touches the in-memory docstrings of the docs build; the Python files are not changed.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(
    r":(?:py:)?(?:class|mod|func|meth|data|attr|exc|obj|const):`(?P<tilde>~?)(?P<target>[\w.]+)(?:\(\))?`"
)


def _qualify(obj: griffe.Object, target: str) -> str | None:
    """The full path of ``target`` as written in ``obj``'s docstring, None if unknown."""
    if target.startswith("walrus_core"):
        return target
    first, _, rest = target.partition(".")
    scope: griffe.Object | None = obj
    try:
        path = scope.resolve(first) if scope is not None else None
    except Exception:
        return None
    if path is None:
        return None
    return f"{path}.{rest}" if rest else path


def _rewrite(obj: griffe.Object) -> None:
    docstring = obj.docstring
    if docstring is None or ":" not in docstring.value:
        return

    def replace(match: re.Match[str]) -> str:
        target = match["target"]
        shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
        identifier = _qualify(obj, target)
        if identifier is None:
            return f"`{shown}`"
        return f'<autoref identifier="{identifier}" optional>`{shown}`</autoref>'

    docstring.value = _ROLE.sub(replace, docstring.value)


def _walk(obj: griffe.Object, seen: set[int]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    _rewrite(obj)
    for member in obj.members.values():
        if member.is_alias:
            continue  # its target is rewritten where it is defined
        _walk(member, seen)  # type: ignore[arg-type]


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        _walk(pkg, set())
