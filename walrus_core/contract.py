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
NOT_A_FUNCTION = "not-a-function"
DUPLICATE_HOOK = "duplicate-hook"
BACKEND_INFO = "backend-info"

RULES: dict[str, str] = {
    UNKNOWN_HOOK: "every walrus_* hook implementation names a hook of the spec",
    UNMARKED_HOOK: "a function named like a hook is marked with @hookimpl",
    PARAMETER_ORDER: "a hook takes exactly the spec's parameters, in the spec's order",
    UNSUPPORTED_OPTION: "no wrapper, hookwrapper, tryfirst or trylast option",
    GENERATOR_FUNCTION: "a hook returns its value; it is not a generator function",
    ASYNC_FUNCTION: "a hook returns its value; it is not an async function",
    NOT_A_FUNCTION: "a hook is a function or a method (not a partial or a callable object)",
    DUPLICATE_HOOK: "a plugin implements each hook once",
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


_MARK = hookspecs.PROJECT + "_impl"


def _static(plugin: Any, attr: str) -> tuple[bool, Any]:
    """``plugin.attr`` without running properties or ``__getattr__`` (``(False, None)`` when
    there is no such attribute)."""
    try:
        return True, inspect.getattr_static(plugin, attr)
    except AttributeError:
        return False, None


def _marker(static: Any) -> dict[str, Any] | None:
    """The options ``@hookimpl`` left on an attribute (above or below a staticmethod or
    classmethod decorator), None if it is not marked."""
    for obj in (static, getattr(static, "__func__", None)):
        if obj is None:
            continue
        try:
            opts = inspect.getattr_static(obj, _MARK)
        except AttributeError:
            continue
        if isinstance(opts, dict):
            return dict(opts)
    return None


def _is_function(static: Any) -> bool:
    """What pluggy registers as a hook: functions and methods, static or class methods."""
    return isinstance(static, (staticmethod, classmethod)) or inspect.isroutine(static)


def _attributes(plugin: Any) -> list[str]:
    names = vars(plugin) if isinstance(plugin, ModuleType) else dir(plugin)
    return sorted(n for n in names if not (n.startswith("__") and n.endswith("__")))


def implemented_hooks(plugin: Any) -> set[str]:
    """The hooks ``plugin`` marks functions for (what pluggy must have registered)."""
    hooks = set()
    for attr in _attributes(plugin):
        exists, static = _static(plugin, attr)
        opts = _marker(static) if exists else None
        if opts is not None and _is_function(static):
            hooks.add(opts.get("specname") or attr)
    return hooks


def check_plugin(plugin: Any) -> list[Violation]:
    """Every rule ``plugin`` (a module or an object with hook methods) breaks; empty if none.

    Looks at the attributes statically (no property or ``__getattr__`` of the plugin runs).
    Whether ``walrus_backend_info`` answers well is checked by the registry, which calls it.
    """
    found: list[Violation] = []
    bound_to: dict[str, list[str]] = {}
    for attr in _attributes(plugin):
        exists, static = _static(plugin, attr)
        if not exists:
            continue
        opts = _marker(static)
        if opts is None:
            if attr.startswith(HOOK_PREFIX) and _is_function(static):
                if attr in SPEC_PARAMETERS:
                    detail = f"{attr} is not marked with @hookimpl, so it would never be called"
                    found.append(Violation(UNMARKED_HOOK, detail))
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
        if not _is_function(static):
            found.append(
                Violation(
                    NOT_A_FUNCTION,
                    f"{attr} is a {type(static).__name__}, not a function or method: pluggy"
                    " would not register it and it would never be called",
                )
            )
            continue
        bound_to.setdefault(hook, []).append(attr)
        for option in UNSUPPORTED_OPTIONS:
            if opts.get(option):
                found.append(
                    Violation(
                        UNSUPPORTED_OPTION,
                        f"{attr} is marked with {option}=True; storage hooks are called"
                        " once, directly, in the chain's order",
                    )
                )
        fn = getattr(plugin, attr)  # a function or method: no user code runs to get it
        try:
            target = inspect.unwrap(fn)
        except ValueError:  # a __wrapped__ loop
            target = fn
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
    for hook, attrs_ in sorted(bound_to.items()):
        if len(attrs_) > 1:
            found.append(
                Violation(
                    DUPLICATE_HOOK,
                    f"{', '.join(attrs_)} all implement {hook}; the chain calls one"
                    " implementation per plugin",
                )
            )
    return found
