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
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import pluggy

from walrus_core import hookspecs
from walrus_core.errors import BackendUnavailableError
from walrus_core.storage import OpenSpec, Storage

log = logging.getLogger("walrus_core.plugins")

ENTRY_POINT_GROUP = "walrus.backends"
AUTO = "auto"
_OPS = ("walrus_write", "walrus_read", "walrus_flush", "walrus_batch_submit", "walrus_close")


def _always_available() -> str | None:
    return None


@attrs.frozen
class BackendInfo:
    """What a backend plugin says about itself (returned by ``walrus_backend_info``).

    ``probe`` returns None when the backend can run here, else the reason it cannot.
    ``layers_over`` names the backend this one is stacked on (None for a base backend).
    """

    version: str
    layers_over: str | None = None
    platforms: tuple[str, ...] = ("*",)
    install: str = ""
    description: str = ""
    probe: Callable[[], str | None] = _always_available


@attrs.frozen
class BackendStatus:
    """One line of :func:`available_backends`."""

    name: str
    version: str | None
    available: bool
    reason: str | None
    layers_over: str | None


@attrs.frozen
class _Backend:
    name: str
    plugin: Any
    info: BackendInfo
    impls: Mapping[str, Callable[..., Any]]


class _AutoPreference:
    """The seed's process-wide switch: which base backend ``"auto"`` resolves to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.prefer_fd = True

    def set(self, prefer_fd: bool) -> None:
        with self._lock:
            self.prefer_fd = prefer_fd


_auto_preference = _AutoPreference()


def enable_fd_backend() -> None:
    """Make ``backend="auto"`` resolve to the FD backend for instances created later (default)."""
    _auto_preference.set(True)


def disable_fd_backend() -> None:
    """Make ``backend="auto"`` resolve to the mmap backend for instances created later."""
    _auto_preference.set(False)


def _install_hint(name: str) -> str:
    return f"pip install walrus-{name}"


class BackendRegistry:
    """The installed backends, validated against the hook specs by one ``PluginManager``."""

    def __init__(
        self,
        plugins: Mapping[str, Any],
        broken: Mapping[str, str] | None = None,
    ) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._plugins = dict(plugins)
        self._broken = dict(broken or {})
        self._backends: dict[str, _Backend] = {}
        for name, plugin in self._plugins.items():
            try:
                self._pm.register(plugin, name=name)
                impls = self._impls_of(plugin)
                info_fn = impls.get("walrus_backend_info")
                if info_fn is None:
                    raise TypeError("it does not implement walrus_backend_info")
                info = info_fn()
                if not isinstance(info, BackendInfo):
                    raise TypeError("walrus_backend_info did not return a BackendInfo")
            except Exception as exc:  # a broken third-party plugin must not break the others
                self._broken[name] = f"{type(exc).__name__}: {exc}"
                log.warning("walrus backend %r is unusable: %s", name, exc)
                continue
            self._backends[name] = _Backend(name=name, plugin=plugin, info=info, impls=impls)

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
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in plugins:
                continue
            try:
                plugins[ep.name] = ep.load()
            except Exception as exc:
                broken[ep.name] = f"cannot import {ep.value}: {type(exc).__name__}: {exc}"
        return cls(plugins, broken)

    def with_plugins(self, extra: Mapping[str, Any]) -> BackendRegistry:
        """A new registry with ``extra`` backends added (or replacing ones of the same name)."""
        merged = dict(self._plugins)
        merged.update(extra)
        return BackendRegistry(merged, self._broken)

    def names(self) -> list[str]:
        """Names of the usable installed backends."""
        return sorted(self._backends)

    def statuses(self) -> list[BackendStatus]:
        """Every installed backend with its version and whether it can run here."""
        out = []
        for name in sorted(set(self._backends) | set(self._broken)):
            backend = self._backends.get(name)
            if backend is None:
                out.append(BackendStatus(name, None, False, self._broken[name], None))
                continue
            reason = self._unusable_reason(name)
            out.append(
                BackendStatus(
                    name, backend.info.version, reason is None, reason, backend.info.layers_over
                )
            )
        return out

    def _unusable_reason(self, name: str, seen: tuple[str, ...] = ()) -> str | None:
        backend = self._backends.get(name)
        if backend is None:
            why = self._broken.get(name, "it is not installed")
            return (
                f"backend {name!r} is unavailable ({why}); install it with: {_install_hint(name)}"
            )
        if name in seen:
            return f"backend {name!r} layers over itself: {' -> '.join((*seen, name))}"
        try:
            reason = backend.info.probe()
        except Exception as exc:
            reason = f"its probe failed: {exc}"
        if reason is not None:
            return f"backend {name!r} cannot run here: {reason}"
        below = backend.info.layers_over
        return None if below is None else self._unusable_reason(below, (*seen, name))

    def resolve_name(self, requested: str) -> str:
        """The backend ``requested`` means: itself, or what ``"auto"`` picks here."""
        if requested != AUTO:
            return requested
        return "fd" if _auto_preference.prefer_fd else "mmap"

    def chain(self, requested: str) -> BackendChain:
        """Build the chain for ``requested`` (a backend name or ``"auto"``), or raise
        :class:`BackendUnavailableError` naming what to install."""
        if not isinstance(requested, str):
            raise TypeError(f"backend must be a str, not {type(requested).__name__}")
        name = self.resolve_name(requested)
        reason = self._unusable_reason(name)
        if reason is not None:
            raise BackendUnavailableError(reason)
        names: list[str] = []
        current: str | None = name
        while current is not None:
            names.append(current)
            current = self._backends[current].info.layers_over
        return BackendChain([self._backends[n] for n in reversed(names)])


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
                for op in _OPS:
                    fn = impls.get(op)
                    if fn is not None:
                        bound[op] = functools.partial(fn, handle)
                missing = [op for op in _OPS if op not in bound]
                if missing:
                    raise BackendUnavailableError(
                        f"backend chain {'/'.join(self.names)} implements none of {missing}"
                    )
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
