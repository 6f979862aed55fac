"""Background work: the periodic flusher of ``FsyncSchedule.milliseconds(n)``, and the
housekeeping (reclamation) that runs on the same thread."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable

from walrus_core.stats import LatencyRecorder
from walrus_core.storage import Flushable

log = logging.getLogger("walrus_core")


def flush_dirty(
    storages: Iterable[Flushable],
    *,
    force: bool = False,
    latency: LatencyRecorder | None = None,
) -> None:
    """Flush every storage written since its last flush (every storage with ``force``); raise
    the first OSError after trying all of them (a failed storage stays dirty so the next round
    retries it).

    ``force`` is what ``Walrus.flush()`` needs: a storage whose flag the background flusher has
    just cleared may still be in the middle of its fsync, so skipping it would return early.
    """
    first: OSError | None = None
    for storage in storages:
        if not storage.dirty and not force:
            continue
        storage.dirty = False  # cleared first: a write racing with the flush re-marks it
        try:
            if latency is None:
                storage.flush()
            else:
                latency.timed(storage.flush)
        except OSError as exc:
            storage.dirty = True
            if first is None:
                first = exc
    if first is not None:
        raise first


class Flusher:
    """A daemon thread that flushes dirty storages every ``interval_ms`` (unless ``flush`` is
    false) and calls ``housekeeping`` at most every ``housekeeping_s`` seconds.

    ``storages``, ``on_error`` and ``housekeeping`` must be bound methods of the flusher's
    owner. They are held
    through :class:`weakref.WeakMethod`, so the thread never keeps its owner alive: an owner
    dropped without ``close()`` can still be collected (and closed by its finalizer), and the
    thread ends by itself once the owner is gone.

    Errors are handed to ``on_error`` (the engine reports them on the next call and from
    ``flush()``); they are never swallowed.
    """

    def __init__(
        self,
        interval_ms: int,
        storages: Callable[[], Iterable[Flushable]],
        on_error: Callable[[OSError], None],
        *,
        flush: bool = True,
        housekeeping: Callable[[], None] | None = None,
        housekeeping_s: float = 1.0,
        latency: LatencyRecorder | None = None,
    ) -> None:
        try:
            self._storages = weakref.WeakMethod(storages)
            self._on_error = weakref.WeakMethod(on_error)
            self._housekeeping = (
                weakref.WeakMethod(housekeeping) if housekeeping is not None else None
            )
        except TypeError:
            raise TypeError(
                "Flusher needs bound methods of its owner, which it holds weakly"
            ) from None
        self._interval = interval_ms / 1000.0
        self._flush = flush
        self._housekeeping_s = housekeeping_s
        self._latency = latency
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="walrus-flusher", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def _run(self) -> None:
        last_housekeeping = time.monotonic()
        while not self._stop.wait(self._interval):
            if self._flush:
                storages = self._current_storages()
                # Dropping the owner's last reference in _current_storages runs its finalizer
                # on this thread, which closes the storages and stops us: check before flushing.
                if storages is None or self._stop.is_set():
                    return
                try:
                    flush_dirty(storages, latency=self._latency)
                except OSError as exc:
                    log.error("background fsync failed: %s", exc)
                    self._report(exc)
            if self._housekeeping is not None:
                now = time.monotonic()
                if now - last_housekeeping < self._housekeeping_s:
                    continue
                last_housekeeping = now
                if not self._run_housekeeping():
                    return

    def _run_housekeeping(self) -> bool:
        """One housekeeping call; False once the owner is gone. Its strong reference lives
        only in this frame (see ``_current_storages``)."""
        assert self._housekeeping is not None
        task = self._housekeeping()
        if task is None or self._stop.is_set():
            return False
        try:
            task()
        except Exception:  # reported, and tried again next time
            log.exception("background reclamation failed")
        return True

    def _current_storages(self) -> list[Flushable] | None:
        """The owner's storages, None once the owner is gone. The strong reference to the
        owner lives only in this frame: never in ``_run``'s, which an error's traceback keeps
        (and the owner keeps the error)."""
        storages = self._storages()
        return None if storages is None else list(storages())

    def _report(self, exc: OSError) -> None:
        on_error = self._on_error()
        if on_error is not None:
            on_error(exc)

    def stop(self) -> None:
        """Stop and wait for the thread (idempotent). Called from the thread itself (the owner
        finalized there) it only stops it."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
