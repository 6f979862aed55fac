"""What the numbers were measured on: CPU, cores, memory, kernel, the scratch file system,
Python and every library's version. Printed at the top of the report and stored in the JSON,
because a rate means nothing without it (ratios travel between machines better than rates)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sqlite3
import subprocess
from typing import Any

from benchmarks.harness import REPO, fs_type

DISTS = (
    "walrus-core",
    "walrus-fd",
    "walrus-mmap",
    "walrus-uring",
    "liburing",
    "lmdb",
    "rocksdict",
    "persist-queue",
    "diskcache",
    "queuelib",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return None


def _device(path: str) -> str:
    """The block device holding ``path``, and whether it rotates."""
    try:
        st = os.stat(path)
        major, minor = os.major(st.st_dev), os.minor(st.st_dev)
        link = os.path.realpath(f"/sys/dev/block/{major}:{minor}")
        name = os.path.basename(link)
        rot = ""
        for cand in (link, os.path.dirname(link)):
            try:
                with open(os.path.join(cand, "queue", "rotational"), encoding="utf-8") as fh:
                    rot = "rotational" if fh.read().strip() == "1" else "non-rotational"
                break
            except OSError:
                continue
        return f"{name} ({major}:{minor}{', ' + rot if rot else ''})"
    except OSError:
        return "?"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def engine() -> dict[str, Any]:
    """Which engine source was measured: where walrus_core and the backends were imported from,
    and the checkout's commit and uncommitted engine files (read-only git queries)."""
    import walrus_core

    paths = {"walrus_core": os.path.dirname(walrus_core.__file__)}
    for mod in ("walrus_fd", "walrus_mmap", "walrus_uring"):
        try:
            paths[mod] = os.path.dirname(importlib.import_module(mod).__file__ or "")
        except ImportError:
            paths[mod] = None  # type: ignore[assignment]
    dirty = _git("status", "--porcelain", "--", "walrus_core", "plugins")
    inside = paths["walrus_core"].startswith(str(REPO) + os.sep)
    return {
        "imported_from": paths,
        "checkout": str(REPO),
        "checkout_head": _git("rev-parse", "HEAD"),
        "checkout_engine_changes": dirty.splitlines() if dirty else [],
        "measured": "the checkout's work tree" if inside else "a copy outside the checkout",
    }


def describe(scratch_root: str) -> dict[str, Any]:
    """The machine, as a JSON-ready dict."""
    kind, mount = fs_type(scratch_root)
    versions: dict[str, str | None] = {}
    for dist in DISTS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    versions["sqlite (stdlib sqlite3)"] = sqlite3.sqlite_version
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "memory_gib": _mem_total_gib(),
        "kernel": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "scratch_dir": scratch_root,
        "filesystem": kind,
        "mount_point": mount,
        "device": _device(scratch_root),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "versions": versions,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "engine": engine(),
    }
