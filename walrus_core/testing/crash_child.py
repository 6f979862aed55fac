"""A writer process for the conformance suite's crash tests: ``python -m
walrus_core.testing.crash_child CONFIG_JSON``.

It opens the log on the backend under test (registering the ``--walrus-plugin`` specs of the
run, so uninstalled backends work too), appends until it is killed, and prints one line per
acknowledged append or batch (``<first offset> <count>``), flushed before the next write
starts: everything it printed was acknowledged by the log before the parent read it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from walrus_core.api import Walrus
from walrus_core.config import FsyncSchedule


def payload(offset: int) -> bytes:
    """The bytes of the entry at ``offset``: a pure function of it, of varying length, some of
    them shaped like the log's own block and entry headers."""
    body = (b"WALRUS\x01\x02" * (offset % 5)) + offset.to_bytes(8, "little") * (offset % 97)
    return b"%d:" % offset + body


def main(argv: list[str]) -> None:
    """Append forever (until killed), printing each acknowledgement."""
    cfg: dict[str, Any] = json.loads(argv[1])
    from walrus_core.testing.plugin import registry_for

    registry = registry_for(cfg["plugins"])
    fsync = FsyncSchedule.sync_each() if cfg["sync_each"] else FsyncSchedule.no_fsync()
    wal = Walrus(
        cfg["data_dir"],
        backend=cfg["backend"],
        registry=registry,
        fsync=fsync,
        block_size=cfg["block_size"],
        blocks_per_file=cfg["blocks_per_file"],
        auto_reclaim=False,
    )
    offset = 0
    out = sys.stdout
    while True:
        if offset % 3 == 0:
            count = 1 + offset % 40
            got = wal.batch_append_for_topic("t", [payload(offset + i) for i in range(count)])
            assert got.start == offset
        else:
            count = 1
            assert wal.append_for_topic("t", payload(offset)) == offset
        out.write(f"{offset} {count}\n")
        out.flush()
        offset += count


if __name__ == "__main__":
    main(sys.argv)
