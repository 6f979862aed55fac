"""The benchmark suite of Walrus for Python: ``python -m benchmarks [--quick] [--json FILE]``.

Every number is measured in the same run, on the same file system, against a raw system-call
baseline over the same bytes and against other embedded log or queue libraries ("peers") at
the durability levels they really offer (D0, D1, D2; see :mod:`benchmarks.subjects`).

Modules, one idea each:

* :mod:`benchmarks.harness` - scratch directories, calibration, warm-up, repetitions, medians;
* :mod:`benchmarks.data` - the payloads (distinct, self-checking) and raw records;
* :mod:`benchmarks.subjects` - durability levels and the interface every library adapter has;
* :mod:`benchmarks.ours` - Walrus itself; :mod:`benchmarks.raw` - the system-call baselines;
* :mod:`benchmarks.peers` - sqlite3, lmdb, rocksdict, persist-queue, diskcache, queuelib;
* :mod:`benchmarks.workloads` - throughput workloads (append, batch, consume, reads);
* :mod:`benchmarks.threads` - D2 appends from 1 and 4 threads;
* :mod:`benchmarks.random_read` - random seek + read among 1M entries;
* :mod:`benchmarks.reopen` - opening a 1 GiB log after a clean close and after SIGKILL;
* :mod:`benchmarks.space` - allocated disk bytes per payload byte;
* :mod:`benchmarks.rss` - peak RSS writing then reading 2 GiB, per backend;
* :mod:`benchmarks.machine` - what the numbers were measured on;
* :mod:`benchmarks.report` - the printed tables and the JSON document.

The older single-file scripts (``bench_core.py``, ``bench_reopen.py``, ``bench_space.py``) stay
beside the package and still run on their own.
"""
