"""Large Walrus logs (1M entries), built once per run and shared by the sections that need one
(random reads, reopen), because building 1 GiB takes longer than measuring on it."""

from __future__ import annotations

import time

from benchmarks.data import BATCH, items
from benchmarks.harness import Scratch
from benchmarks.ours import TOPIC
from walrus_core import FsyncSchedule, Walrus


class BigLogs:
    """Logs of ``entries`` entries of ``size`` bytes, one topic, built with batch appends."""

    def __init__(self, scratch: Scratch, backend: str) -> None:
        self.scratch = scratch
        self.backend = backend
        self._built: dict[tuple[int, int], str] = {}
        self.build_seconds: dict[tuple[int, int], float] = {}

    def get(self, size: int, entries: int) -> str:
        """The directory of that log (built now if it is not yet); closed cleanly."""
        key = (size, entries)
        if key not in self._built:
            path = self.scratch.fresh(f"biglog-{size}-{entries}")
            began = time.perf_counter()
            with Walrus(data_dir=path, backend=self.backend, fsync=FsyncSchedule.no_fsync()) as w:
                bappend = w.batch_append_for_topic
                done = 0
                while done < entries:
                    k = min(BATCH, entries - done)
                    bappend(TOPIC, items(size, done, k))
                    done += k
            self.build_seconds[key] = time.perf_counter() - began
            self._built[key] = path
        return self._built[key]

    def drop(self, size: int, entries: int) -> None:
        """Remove that log (its section is done with it)."""
        path = self._built.pop((size, entries), None)
        if path is not None:
            self.scratch.remove(path)

    def cleanup(self) -> None:
        for key in list(self._built):
            self.drop(*key)
