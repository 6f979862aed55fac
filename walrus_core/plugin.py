"""Everything a backend plugin imports: ``from walrus_core.plugin import hookimpl, ...``.

A backend is a module (or an object) with :data:`hookimpl`-marked functions named after the
hooks of :mod:`walrus_core.hookspecs`, published under the entry-point group
``walrus.backends``. It describes itself with :class:`BackendInfo`, opens files described by an
:class:`OpenSpec`, writes :data:`Buffers` and batches of :class:`WriteOp`, and a layer receives
the :class:`Storage` opened below it. I/O errors are ``OSError`` with an errno;
:class:`BackendUnavailableError` says the backend cannot run here. A layer configured per
instance (``over=``) is registered with ``default_registry().with_plugins({name: layer})``.
The guide is ``docs/plugins.md``; the conformance suite is ``pytest --walrus-backend=NAME
--pyargs walrus_core.testing``.
"""

from __future__ import annotations

from walrus_core.contract import RULES, Violation, check_plugin
from walrus_core.errors import BackendUnavailableError, StorageError, WalrusError
from walrus_core.holes import punch_hole
from walrus_core.hookspecs import PROJECT, hookimpl
from walrus_core.plugins import (
    ENTRY_POINT_GROUP,
    OBSERVER_ENTRY_POINT_GROUP,
    BackendRegistry,
    default_registry,
)
from walrus_core.storage import (
    FILE_CURSORS,
    FILE_DATA,
    BackendInfo,
    Buffers,
    OpenSpec,
    Storage,
    WriteOp,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "FILE_CURSORS",
    "FILE_DATA",
    "OBSERVER_ENTRY_POINT_GROUP",
    "PROJECT",
    "RULES",
    "BackendInfo",
    "BackendRegistry",
    "BackendUnavailableError",
    "Buffers",
    "OpenSpec",
    "Storage",
    "StorageError",
    "Violation",
    "WalrusError",
    "WriteOp",
    "check_plugin",
    "default_registry",
    "hookimpl",
    "punch_hole",
]
