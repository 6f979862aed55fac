"""The rules a backend plugin must keep, checked when it is discovered.

Storage hooks are resolved once per file and called directly with positional arguments (see
:mod:`walrus_core.hookspecs`), so what pluggy would tolerate in a 1:N event hook breaks a
backend silently: a misspelled hook is never called, parameters in another order receive each
other's values, a ``wrapper=True`` implementation returns a generator instead of writing.
:func:`check_plugin` finds every such mistake before the plugin is registered; the registry
refuses the plugin and reports the rules it broke.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

import attrs

from walrus_core import hookspecs

#: Prefix of every hook name; any attribute with it is taken for an attempted hook.
HOOK_PREFIX = "walrus_"
#: pluggy options the chain does not honour: the chain's order is the only order, and a hook
#: is called once, directly, so it cannot wrap another.
UNSUPPORTED_OPTIONS = ("wrapper", "hookwrapper", "tryfirst", "trylast")

#: Rule identifiers, as they appear in reports.
UNKNOWN_HOOK = "unknown-hook"
UNMARKED_HOOK = "unmarked-hook"
PARAMETER_ORDER = "parameter-order"
UNSUPPORTED_OPTION = "unsupported-option"
GENERATOR_FUNCTION = "generator-function"
ASYNC_FUNCTION = "async-function"
BACKEND_INFO = "backend-info"

RULES: dict[str, str] = {
    UNKNOWN_HOOK: "every walrus_* hook implementation names a hook of the spec",
    UNMARKED_HOOK: "a function named like a hook is marked with @hookimpl",
    PARAMETER_ORDER: "a hook takes exactly the spec's parameters, in the spec's order",
    UNSUPPORTED_OPTION: "no wrapper, hookwrapper, tryfirst or trylast option",
    GENERATOR_FUNCTION: "a hook returns its value; it is not a generator function",
    ASYNC_FUNCTION: "a hook returns its value; it is not an async function",
    BACKEND_INFO: "a backend implements walrus_backend_info and it returns a BackendInfo",
}


@attrs.frozen
class Violation:
    """One broken rule: its identifier (a key of :data:`RULES`) and what broke it."""

    rule: str
    detail: str

    def __str__(self) -> str:
        return f"rule {self.rule!r} ({RULES[self.rule]}): {self.detail}"


def _spec_signatures() -> dict[str, tuple[str, ...]]:
    specs: dict[str, tuple[str, ...]] = {}
    for name in hookspecs.__all__:
        fn = getattr(hookspecs, name)
        if name.startswith(HOOK_PREFIX) and callable(fn):
            specs[name] = tuple(inspect.signature(fn).parameters)
    return specs


#: Hook name -> parameter names, in the order the engine passes them.
SPEC_PARAMETERS: dict[str, tuple[str, ...]] = _spec_signatures()


def _signature(name: str, params: tuple[str, ...]) -> str:
    return f"{name}({', '.join(params)})"


def _parameters(fn: Callable[..., Any]) -> tuple[str, ...] | None:
    """Positional parameter names of ``fn`` as the engine calls it (``self`` of a bound
    method excluded); None when it takes ``*args`` or keyword-only parameters."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    names = []
    for param in params:
        if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            return None
        names.append(param.name)
    return tuple(names)


def _hookimpl_options(plugin: Any, attr: str) -> dict[str, Any] | None:
    """The options of ``@hookimpl`` on ``plugin.attr``, None if it is not marked."""
    try:
        fn = getattr(plugin, attr)
    except Exception:
        return None
    opts = getattr(fn, hookspecs.PROJECT + "_impl", None)
    return dict(opts) if isinstance(opts, dict) else None


def _attributes(plugin: Any) -> list[str]:
    if isinstance(plugin, ModuleType):
        return sorted(vars(plugin))
    return sorted(dir(plugin))


def check_plugin(plugin: Any) -> list[Violation]:
    """Every rule ``plugin`` (a module or an object with hook methods) breaks; empty if none.

    Checks what :func:`walrus_core.hookspecs` requires of each ``walrus_*`` attribute; whether
    ``walrus_backend_info`` answers well is checked by the registry, which calls it.
    """
    found: list[Violation] = []
    for attr in _attributes(plugin):
        if attr.startswith("__"):
            continue
        opts = _hookimpl_options(plugin, attr)
        if opts is None and not attr.startswith(HOOK_PREFIX):
            continue  # neither marked nor named like a hook: not ours to judge
        fn = getattr(plugin, attr, None)
        if opts is None:
            if not callable(fn) or isinstance(fn, type):
                continue
            if attr in SPEC_PARAMETERS:
                found.append(
                    Violation(
                        UNMARKED_HOOK,
                        f"{attr} is not marked with @hookimpl, so it would never be called",
                    )
                )
            else:
                found.append(
                    Violation(
                        UNKNOWN_HOOK,
                        f"{attr} is named like a hook but is none (and is not marked with"
                        f" @hookimpl); hooks: {', '.join(sorted(SPEC_PARAMETERS))}",
                    )
                )
            continue
        hook = opts.get("specname") or attr
        spec = SPEC_PARAMETERS.get(hook)
        if spec is None:
            known = ", ".join(sorted(SPEC_PARAMETERS))
            found.append(Violation(UNKNOWN_HOOK, f"{hook} is not a hook (hooks: {known})"))
            continue
        for option in UNSUPPORTED_OPTIONS:
            if opts.get(option):
                found.append(
                    Violation(
                        UNSUPPORTED_OPTION,
                        f"{attr} is marked with {option}=True; storage hooks are called"
                        " once, directly, in the chain's order",
                    )
                )
        assert callable(fn)
        target = inspect.unwrap(fn)
        if inspect.isgeneratorfunction(target):
            found.append(
                Violation(GENERATOR_FUNCTION, f"{attr} is a generator function (it yields)")
            )
        elif inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target):
            found.append(Violation(ASYNC_FUNCTION, f"{attr} is an async function"))
        params = _parameters(fn)
        if params != spec:
            shown = (
                "*args or keyword-only parameters" if params is None else _signature(attr, params)
            )
            found.append(
                Violation(
                    PARAMETER_ORDER,
                    f"{shown} differs from the spec {_signature(hook, spec)}; hooks are"
                    " called with positional arguments",
                )
            )
    return found
