"""Backend discovery, selection and chaining: the explicit pluggy ``PluginManager`` setup.

Backends are found through the entry-point group ``walrus.backends`` (entry point name =
backend name). :class:`BackendRegistry` holds them; :meth:`BackendRegistry.chain` turns a
backend name (or ``"auto"``) into a :class:`BackendChain`, which opens files as
:class:`~walrus_core.storage.Storage` objects with every operation resolved once.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import sys
import threading
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import pluggy

from walrus_core import distributions, hookspecs
from walrus_core.contract import (
    BACKEND_INFO,
    NOT_A_FUNCTION,
    Violation,
    check_plugin,
    implemented_hooks,
)
from walrus_core.errors import BackendUnavailableError
from walrus_core.storage import BackendInfo, OpenSpec, Storage

__all__ = [
    "AUTO",
    "ENTRY_POINT_GROUP",
    "OBSERVER_ENTRY_POINT_GROUP",
    "BackendChain",
    "BackendInfo",
    "BackendRegistry",
    "BackendStatus",
    "available_backends",
    "default_registry",
    "disable_fd_backend",
    "enable_fd_backend",
]

log = logging.getLogger("walrus_core.plugins")

ENTRY_POINT_GROUP = "walrus.backends"
#: Plugins that are not backends, only observers (e.g. a stats exporter).
OBSERVER_ENTRY_POINT_GROUP = "walrus.observers"
AUTO = "auto"
_OPS = ("walrus_write", "walrus_read", "walrus_flush", "walrus_batch_submit", "walrus_close")
#: Operations a chain may lack (the engine then does without them).
_OPTIONAL_OPS = ("walrus_discard",)


@attrs.frozen
class BackendStatus:
    """One line of :func:`available_backends`. ``broken_rules`` names the rules of
    :mod:`walrus_core.contract` a refused plugin broke (empty otherwise)."""

    name: str
    version: str | None
    available: bool
    reason: str | None
    layers_over: str | None
    broken_rules: tuple[str, ...] = ()
    description: str = ""


class _Refused(Exception):
    def __init__(self, violation: Violation) -> None:
        super().__init__(str(violation))
        self.violation = violation


@attrs.frozen
class _Backend:
    name: str
    plugin: Any
    info: BackendInfo
    impls: Mapping[str, Callable[..., Any]]


class _AutoPreference:
    """The seed's process-wide switch: backend families ``"auto"`` passes over. Nothing needs
    it (``Walrus(backend=...)`` picks per instance); it is kept for code written for the seed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.skipped_families: frozenset[str] = frozenset()

    def skip(self, family: str, skipped: bool) -> None:
        with self._lock:
            families = set(self.skipped_families)
            (families.add if skipped else families.discard)(family)
            self.skipped_families = frozenset(families)


_auto_preference = _AutoPreference()
_FD_FAMILY = "fd"


def enable_fd_backend() -> None:
    """Let ``backend="auto"`` pick the FD family again for instances created later (default)."""
    _auto_preference.skip(_FD_FAMILY, False)


def disable_fd_backend() -> None:
    """Make ``backend="auto"`` pass over the FD family (FD and layers over it) for instances
    created later, so it picks the best other backend (mmap where it is installed)."""
    _auto_preference.skip(_FD_FAMILY, True)


class BackendRegistry:
    """The installed backends, validated against the hook specs by one ``PluginManager``."""

    def __init__(
        self,
        plugins: Mapping[str, Any],
        broken: Mapping[str, str] | None = None,
        observers: Mapping[str, Any] | None = None,
    ) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._plugins = dict(plugins)
        self._import_failures = {k: v for k, v in (broken or {}).items() if k not in plugins}
        self._broken = dict(self._import_failures)
        self._observers = dict(observers or {})
        for name, observer in self._observers.items():
            try:
                violations = check_plugin(observer)
            except Exception as exc:
                log.warning("walrus observer %r cannot be inspected: %s", name, exc)
                continue
            if violations:
                log.warning(
                    "walrus observer %r is refused: it breaks %s",
                    name,
                    "; ".join(str(v) for v in violations),
                )
                continue
            try:
                self._pm.register(observer, name=f"observer:{name}")
            except Exception as exc:
                log.warning("walrus observer %r is unusable: %s", name, exc)
        self._backends: dict[str, _Backend] = {}
        self._broken_rules: dict[str, tuple[str, ...]] = {}
        for name, plugin in self._plugins.items():
            twin = next((b for b in self._backends.values() if b.plugin is plugin), None)
            if twin is not None:  # one plugin object under a second name: the same backend
                self._backends[name] = attrs.evolve(twin, name=name)
                continue
            try:
                violations = check_plugin(plugin)
            except Exception as exc:  # a plugin whose attributes cannot even be listed
                self._broken[name] = f"cannot be inspected: {type(exc).__name__}: {exc}"
                log.warning("walrus backend %r is unusable: %s", name, self._broken[name])
                continue
            if violations:
                self._refuse(name, violations)
                continue
            try:
                self._pm.register(plugin, name=name)
                impls = self._impls_of(plugin)
                unregistered = implemented_hooks(plugin) - set(impls)
                if unregistered:
                    raise _Refused(
                        Violation(
                            NOT_A_FUNCTION,
                            f"pluggy {pluggy.__version__} did not register"
                            f" {', '.join(sorted(unregistered))}: mark plain functions or"
                            " methods (put @hookimpl below @staticmethod or @classmethod)",
                        )
                    )
                info_fn = impls.get("walrus_backend_info")
                if info_fn is None:
                    raise _Refused(Violation(BACKEND_INFO, "walrus_backend_info is missing"))
                try:
                    info = info_fn()
                except Exception as exc:
                    message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else exc
                    raise _Refused(
                        Violation(
                            BACKEND_INFO,
                            f"walrus_backend_info raised {type(exc).__name__}: {message}",
                        )
                    ) from exc
                if not isinstance(info, BackendInfo):
                    raise _Refused(
                        Violation(
                            BACKEND_INFO,
                            f"walrus_backend_info returned {type(info).__name__},"
                            " not a BackendInfo",
                        )
                    )
            except _Refused as refused:
                self._unregister(plugin)
                self._refuse(name, [refused.violation])
                continue
            except Exception as exc:  # a broken third-party plugin must not break the others
                self._unregister(plugin)
                message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else exc
                self._broken[name] = f"{type(exc).__name__}: {message}"
                log.warning("walrus backend %r is unusable: %s", name, exc)
                continue
            self._backends[name] = _Backend(name=name, plugin=plugin, info=info, impls=impls)

    def _refuse(self, name: str, violations: list[Violation]) -> None:
        """Record ``name`` as refused for breaking ``violations``; warn once, here."""
        self._broken_rules[name] = tuple(dict.fromkeys(v.rule for v in violations))
        self._broken[name] = "refused: it breaks " + "; ".join(str(v) for v in violations)
        log.warning("walrus backend %r is %s", name, self._broken[name])

    def _unregister(self, plugin: Any) -> None:
        if self._pm.is_registered(plugin):
            self._pm.unregister(plugin)

    def _impls_of(self, plugin: Any) -> dict[str, Callable[..., Any]]:
        impls: dict[str, Callable[..., Any]] = {}
        for caller in self._pm.get_hookcallers(plugin) or ():
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin:
                    impls[caller.name] = impl.function
        return impls

    @classmethod
    def from_entry_points(cls) -> BackendRegistry:
        """Load every backend published under the ``walrus.backends`` entry-point group."""
        plugins: dict[str, Any] = {}
        broken: dict[str, str] = {}
        sources: dict[str, str] = {}
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in sources:
                # Two distributions claim one name: keep the first, say which one was ignored.
                log.warning(
                    "walrus backend %r is published twice (%s and %s); using %s",
                    ep.name,
                    sources[ep.name],
                    ep.value,
                    sources[ep.name],
                )
                continue
            sources[ep.name] = ep.value
            try:
                plugins[ep.name] = ep.load()
            except Exception as exc:
                broken[ep.name] = f"cannot import {ep.value}: {type(exc).__name__}: {exc}"
        observers: dict[str, Any] = {}
        for ep in importlib.metadata.entry_points(group=OBSERVER_ENTRY_POINT_GROUP):
            try:
                observers.setdefault(ep.name, ep.load())
            except Exception as exc:
                log.warning("walrus observer %r cannot be imported: %s", ep.name, exc)
        return cls(plugins, broken, observers)

    def with_plugins(self, extra: Mapping[str, Any]) -> BackendRegistry:
        """A new registry with ``extra`` backends added (or replacing ones of the same name)."""
        merged = dict(self._plugins)
        merged.update(extra)
        return BackendRegistry(merged, self._import_failures, self._observers)

    def with_observers(self, extra: Mapping[str, Any]) -> BackendRegistry:
        """A new registry with ``extra`` observer plugins added (``walrus_stats_report``)."""
        return BackendRegistry(self._plugins, self._import_failures, {**self._observers, **extra})

    def report_stats(self, data_dir: str, stats: Any) -> None:
        """Hand ``stats`` to every plugin implementing ``walrus_stats_report``; errors are
        logged, never raised (an exporter must not break the log)."""
        if not self._pm.hook.walrus_stats_report.get_hookimpls():
            return
        try:
            self._pm.hook.walrus_stats_report(data_dir=data_dir, stats=stats)
        except Exception:
            log.exception("a walrus_stats_report hook failed")

    def info(self, name: str) -> BackendInfo:
        """What backend ``name`` says about itself; raises :class:`BackendUnavailableError` for
        a backend that is not installed or was refused."""
        backend = self._backends.get(name)
        if backend is None:
            raise BackendUnavailableError(self._unusable_reason(name) or name)
        return backend.info

    def durable(self, name: str) -> bool:
        """Whether writes through ``name``'s whole chain outlive the process: false as soon as
        one backend of it declares ``durable=False``."""
        current: str | None = name
        seen: set[str] = set()
        while current is not None and current not in seen:
            seen.add(current)
            info = self.info(current)
            if not info.durable:
                return False
            current = info.layers_over
        return True

    def names(self) -> list[str]:
        """Names of the usable installed backends."""
        return sorted(self._backends)

    def statuses(self) -> list[BackendStatus]:
        """Every installed backend with its version and whether it can run here."""
        out = []
        for name in sorted(set(self._backends) | set(self._broken)):
            backend = self._backends.get(name)
            if backend is None:
                out.append(
                    BackendStatus(
                        name,
                        None,
                        False,
                        self._broken[name],
                        None,
                        self._broken_rules.get(name, ()),
                    )
                )
                continue
            reason = self._unusable_reason(name)
            info = backend.info
            out.append(
                BackendStatus(
                    name,
                    info.version,
                    reason is None,
                    reason,
                    info.layers_over,
                    description=info.description,
                )
            )
        return out

    def _unusable_reason(self, name: str, seen: tuple[str, ...] = ()) -> str | None:
        backend = self._backends.get(name)
        if backend is None:
            if name in self._broken:  # installed, but refused or broken: reinstalling won't help
                return f"backend {name!r} is unavailable ({self._broken[name]})"
            return self._missing_reason(name)
        if name in seen:
            return f"backend {name!r} layers over itself: {' -> '.join((*seen, name))}"
        try:
            reason = backend.info.probe()
        except Exception as exc:
            reason = f"its probe failed: {exc}"
        if reason is not None:
            return f"backend {name!r} cannot run here: {reason}"
        below = backend.info.layers_over
        if below is None:
            return None
        reason = self._unusable_reason(below, (*seen, name))
        if reason is None or seen:  # said once, by the top of the chain
            return reason
        return f"backend {name!r} layers over {below!r}, which is unusable: {reason}"

    def _missing_reason(self, name: str) -> str:
        """Why ``name`` is not here: how to install it when the project publishes it, else
        what is installed and which name was probably meant."""
        instructions = distributions.install_instructions(name, self._backends)
        if instructions is not None:
            return f"backend {name!r} is not installed; {instructions}"
        installed = ", ".join(self.names()) or "none"
        message = f"no backend named {name!r}; installed: {installed}"
        if self._broken:
            message += f" (refused or broken: {', '.join(sorted(self._broken))})"
        known = {*self._backends, *self._broken, *distributions.PROJECT_BACKENDS, AUTO}
        matches = distributions.close_matches(name, known)
        if matches:
            meant = matches[0]
            message += f"; did you mean {meant!r}?"
            if meant in self._broken:
                message += f" (it is installed but unusable: {self._broken[meant]})"
            elif meant not in self._backends and meant != AUTO:
                message += f" ({self._missing_reason(meant)})"
        return message

    def _installable_for_auto(self, platform: str) -> str:
        """The project's base backends for ``platform`` that are not installed, with how to
        install them."""
        hints = [
            f"{name}: {distributions.install_instructions(name, self._backends)}"
            for name in distributions.auto_candidates(platform)
            if name not in self._backends and name not in self._broken
        ]
        return f" The project's base backends: {'; '.join(hints)}" if hints else ""

    def _candidates(self, platform: str) -> list[str]:
        """Backends ``"auto"`` may pick on ``platform``, best first."""
        skipped = _auto_preference.skipped_families
        ranked: list[tuple[int, str]] = []
        for name, backend in self._backends.items():
            info = backend.info
            if info.auto_priority <= 0:
                continue
            if not any(p == "*" or platform.startswith(p) for p in info.platforms):
                continue
            if skipped and self._family(name) in skipped:
                continue
            ranked.append((info.auto_priority, name))
        ranked.sort(key=lambda item: (-item[0], item[1]))
        return [name for _, name in ranked]

    def _family(self, name: str) -> str:
        seen: set[str] = set()
        current: str | None = name
        while current is not None and current not in seen:
            seen.add(current)
            backend = self._backends.get(current)
            if backend is None:
                return current
            if backend.info.family:
                return backend.info.family
            if backend.info.layers_over is None:
                return current
            current = backend.info.layers_over
        return name

    def select(self, requested: str, platform: str | None = None) -> str:
        """The backend to use for ``requested``: a name, a comma-separated preference list
        (``"uring,fd"``: the first that can run here), or ``"auto"`` (the best backend for
        ``platform``, default ``$WALRUS_PLATFORM`` or ``sys.platform``).

        Raises :class:`BackendUnavailableError` with every reason when none can run. When a
        preferred backend is skipped, one INFO line says why.
        """
        if platform is None:
            platform = os.environ.get("WALRUS_PLATFORM") or sys.platform
        if requested == AUTO:
            choices = self._candidates(platform)
            if not choices:
                skipped = sorted(_auto_preference.skipped_families)
                passed_over = f" (passing over families {skipped})" if skipped else ""
                installed = ", ".join(self.names()) or "none"
                raise BackendUnavailableError(
                    f"no installed storage backend serves platform {platform!r}{passed_over};"
                    f" installed: {installed}. Install a backend plugin or ask for one by"
                    f" name.{self._installable_for_auto(platform)}"
                )
        else:
            choices = [part.strip() for part in requested.split(",") if part.strip()]
            if not choices:
                installed = ", ".join(self.names()) or "none"
                raise BackendUnavailableError(
                    f'no backend named in {requested!r}; installed: {installed} (or "auto")'
                )
        reasons: list[str] = []
        for name in choices:
            reason = self._unusable_reason(name)
            if reason is None:
                if reasons:
                    _log_fallback(name, tuple(reasons))
                return name
            reasons.append(reason)
        raise BackendUnavailableError("; ".join(reasons))

    def chain(self, requested: str, platform: str | None = None) -> BackendChain:
        """Build the chain for ``requested`` (see :meth:`select`), or raise
        :class:`BackendUnavailableError` naming what to install or why it cannot run."""
        if not isinstance(requested, str):
            raise TypeError(f"backend must be a str, not {type(requested).__name__}")
        name = self.select(requested, platform)
        names: list[str] = []
        current: str | None = name
        while current is not None:
            names.append(current)
            current = self._backends[current].info.layers_over
        return BackendChain([self._backends[n] for n in reversed(names)])


_logged_fallbacks: set[tuple[str, tuple[str, ...]]] = set()
_logged_lock = threading.Lock()


def _log_fallback(chosen: str, reasons: tuple[str, ...]) -> None:
    """One INFO line per process and distinct reason: why a preferred backend was skipped."""
    with _logged_lock:
        if (chosen, reasons) in _logged_fallbacks:
            return
        _logged_fallbacks.add((chosen, reasons))
    log.info("using backend %r: %s", chosen, "; ".join(reasons))


class BackendChain:
    """Backends stacked bottom (base) to top; opens files with each operation resolved once."""

    def __init__(self, bottom_up: Iterable[_Backend]) -> None:
        self._levels = list(bottom_up)
        for backend in self._levels[:1]:
            if "walrus_open" not in backend.impls:
                raise BackendUnavailableError(
                    f"base backend {backend.name!r} does not implement walrus_open"
                )
        self.names: tuple[str, ...] = tuple(b.name for b in reversed(self._levels))
        # Checked before any file is opened: a level that leaves an operation unanswered would
        # otherwise be found only after its walrus_open succeeded, leaking that handle.
        covered: set[str] = set()
        for depth, backend in enumerate(self._levels):
            covered.update(op for op in _OPS if op in backend.impls)
            missing = [op for op in _OPS if op not in covered]
            if missing:
                names = "/".join(b.name for b in reversed(self._levels[: depth + 1]))
                raise BackendUnavailableError(f"backend chain {names} implements none of {missing}")

    def open(self, spec: OpenSpec) -> Storage:
        """Open ``spec`` through the whole chain (raises ``OSError`` from the backend)."""
        lower: Storage | None = None
        handle: Any = None
        bound: dict[str, Callable[..., Any]] = {}
        opened: list[Storage] = []
        try:
            for depth, backend in enumerate(self._levels):
                impls = backend.impls
                if "walrus_open" in impls:
                    handle = impls["walrus_open"](spec, lower)
                for op in (*_OPS, *_OPTIONAL_OPS):
                    fn = impls.get(op)
                    if fn is not None:
                        # A bound method: the cheapest callable that carries the handle.
                        bound[op] = types.MethodType(fn, handle)
                names = tuple(b.name for b in reversed(self._levels[: depth + 1]))
                lower = Storage(
                    spec,
                    handle,
                    names,
                    write=bound["walrus_write"],
                    read=bound["walrus_read"],
                    flush=bound["walrus_flush"],
                    batch_submit=bound["walrus_batch_submit"],
                    close=bound["walrus_close"],
                    discard=bound.get("walrus_discard"),
                )
                opened.append(lower)
        except BaseException:
            if opened:
                try:
                    opened[-1].close()
                except OSError:
                    pass
            raise
        assert lower is not None
        return lower


@functools.lru_cache(maxsize=1)
def default_registry() -> BackendRegistry:
    """The registry of installed backends, loaded once per process."""
    return BackendRegistry.from_entry_points()


def available_backends() -> list[BackendStatus]:
    """Every installed backend with its version, whether it can run here and why not."""
    return default_registry().statuses()
