"""A background thread that makes data durable every 200 ms: how D1 is given to a baseline or a
peer that has a sync call but no schedule of its own (the same interval as Walrus's default
``FsyncSchedule.milliseconds(200)``)."""

from __future__ import annotations

import threading
from collections.abc import Callable

INTERVAL_S = 0.2


class PeriodicSync:
    """Calls ``sync`` every ``interval`` seconds until :meth:`stop` (which syncs once more)."""

    def __init__(self, sync: Callable[[], None], interval: float = INTERVAL_S) -> None:
        self._sync = sync
        self._interval = interval
        self._stop = threading.Event()
        self.calls = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="bench-periodic-sync", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._sync()
                self.calls += 1
            except BaseException as exc:  # reported by stop(): a failing sync voids the cell
                self.error = exc
                return

    def stop(self) -> None:
        """Stop the thread; raise what a sync raised, if one failed."""
        self._stop.set()
        self._thread.join()
        if self.error is not None:
            raise RuntimeError(f"background sync failed: {self.error}") from self.error
