"""A process that appends to a local log while a Mirror ships it, until it is killed.

Usage: python mirror_child.py DATA_DIR SERVER_URL[,URL...] KEY REPLICAS
"""

from __future__ import annotations

import sys
import time

from walrus_nats import Mirror

from walrus_core import Walrus


def main() -> None:
    data_dir, servers, key, replicas = (
        sys.argv[1],
        sys.argv[2].split(","),
        sys.argv[3],
        int(sys.argv[4]),
    )
    wal = Walrus(data_dir, backend="fd")
    # Local readers that have read nothing yet: they keep every entry from reclamation, so
    # the test can compare the whole remote copy with the whole local log.
    for topic in ("events", "other topic"):
        wal.append_for_topic(topic, b"start")
        wal.seek(topic, 0)
    mirror = Mirror(wal, servers, key=key, replicas=replicas).start()
    i = 0
    while True:  # until SIGKILL
        i += 1
        if i % 3:
            wal.batch_append_for_topic("events", [b"e-%d-%d" % (i, j) * 20 for j in range(200)])
        else:
            wal.append_for_topic("events", b"single-%d" % i)
            wal.append_for_topic("other topic", b"o-%d" % i)
        if i == 5:
            print("appending", flush=True)
        time.sleep(0.002)  # a steady stream, not a flood: the test compares it all
    mirror.stop()


if __name__ == "__main__":
    main()
