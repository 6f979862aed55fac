"""Background work: the periodic flusher of ``FsyncSchedule.milliseconds(n)``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from walrus_core.storage import Storage

log = logging.getLogger("walrus_core")


def flush_dirty(storages: Iterable[Storage], *, force: bool = False) -> None:
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
            storage.flush()
        except OSError as exc:
            storage.dirty = True
            if first is None:
                first = exc
    if first is not None:
        raise first


class Flusher:
    """A daemon thread that flushes dirty storages every ``interval_ms``.

    Errors are handed to ``on_error`` (the engine reports them on the next call and from
    ``flush()``); they are never swallowed.
    """

    def __init__(
        self,
        interval_ms: int,
        storages: Callable[[], Iterable[Storage]],
        on_error: Callable[[OSError], None],
    ) -> None:
        self._interval = interval_ms / 1000.0
        self._storages = storages
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="walrus-flusher", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                flush_dirty(self._storages())
            except OSError as exc:
                log.error("background fsync failed: %s", exc)
                self._on_error(exc)

    def stop(self) -> None:
        """Stop and wait for the thread (idempotent)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
