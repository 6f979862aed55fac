"""Instance lifetime across ``fork()`` and garbage collection.

An open log owns a directory lock, file handles and possibly a flusher thread. Two ways to
lose track of them are handled here:

* ``fork()`` copies every open instance into the child. The copy describes the log as it was
  at the fork, while the parent keeps appending: if the child used it, or closed it (which
  writes clean-close seals), it would contradict the parent's acknowledged data. So in the
  child every inherited instance is disowned: its calls raise :class:`ForkedInstanceError`,
  its ``close()`` touches nothing, and the child's copy of the lock descriptor is closed so
  that the child does not keep the directory locked once the parent closed it.
* An instance dropped without ``close()`` is closed by its finalizer, with a
  ``ResourceWarning``, like an unclosed file.
"""

from __future__ import annotations

import logging
import os
import warnings
import weakref
from typing import NoReturn, Protocol

from walrus_core.errors import ForkedInstanceError

log = logging.getLogger("walrus_core")


class ForkSensitive(Protocol):
    """What :func:`track` needs from an instance."""

    def _after_fork_in_child(self) -> None:
        """Disown the instance in a freshly forked child; must take no lock and do no I/O
        on the log (a lock may be held by a thread that does not exist in the child)."""


class Closeable(Protocol):
    """What :func:`close_unreachable` needs from an instance."""

    def close(self) -> None:
        """Release everything the instance owns."""


#: Instances that may still own the directory; weak, so that tracking never keeps one alive.
_live: weakref.WeakSet[ForkSensitive] = weakref.WeakSet()


def track(instance: ForkSensitive) -> None:
    """Disown ``instance`` (``instance._after_fork_in_child()``) in every child forked while it
    lives."""
    _live.add(instance)


def _disown_inherited_instances() -> None:
    inherited = list(_live)
    # They belong to the parent: a grandchild forked from here has nothing more to disown.
    _live.clear()
    for instance in inherited:
        try:
            instance._after_fork_in_child()
        except Exception:
            # There is no caller to raise to, and the other instances must still let go.
            log.exception("disowning an inherited Walrus instance after fork() failed")


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork()
    os.register_at_fork(after_in_child=_disown_inherited_instances)


def forked_error(root: str) -> ForkedInstanceError:
    """The error every call on an instance inherited through ``fork()`` raises."""
    return ForkedInstanceError(
        f"this Walrus instance on {root!r} was inherited through fork(); it belongs to the"
        " parent process and cannot be used here: open a new Walrus in the child after the"
        " parent closed it (or start the child with the 'spawn' or 'forkserver' method)"
    )


def refuse_copy(action: str) -> NoReturn:
    """Raise the TypeError for pickling or copying an instance; ``action`` is e.g.
    ``"pickled"``."""
    raise TypeError(
        f"a Walrus instance cannot be {action}: an open log owns a directory lock and file"
        " handles, which only one instance may hold; pass its data_dir and key instead and open"
        " a new Walrus once this one is closed"
    )


def close_unreachable(instance: Closeable) -> None:
    """Close an open instance that became garbage, with a ``ResourceWarning`` like an unclosed
    file: the directory lock would otherwise stay taken for the life of the process."""
    warnings.warn(f"unclosed {instance!r}", ResourceWarning, stacklevel=2, source=instance)
    instance.close()
