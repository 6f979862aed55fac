"""Can liburing set up an io_uring here and run a NOP through it? Both the probe process and
the plugin itself use :func:`check_ring`.

A liburing binary can kill the process that loads it: a wheel built for newer CPUs dies with
SIGILL ("Illegal instruction", e.g. AVX-512 code on a CPU without it), and liburing 2024.5.3
dereferences a NULL opcode list on kernels before 5.6. No ``except`` catches that, so the plugin
first runs this file as a script in a child process (``python -I _ring_check.py SYS_PATH
SYSCTL``), which prints one JSON line ``{"reason": null | "..."}``; only when the child
survived does the plugin load liburing itself. Standard library only: the child imports
nothing of Walrus.
"""

from __future__ import annotations

import errno
import json
import platform
import sys
from typing import Any

#: io_uring_setup flags (kernel ABI, <linux/io_uring.h>): clamp the ring size to the kernel's
#: maximum, and keep submitting after an entry fails (5.18+). liburing 2024.5.3 only exposes
#: the kernel's constants when built with a Cython that exports enum members, so they are
#: spelled out here.
IORING_SETUP_CLAMP = 1 << 4
IORING_SETUP_SUBMIT_ALL = 1 << 7
SETUP_FLAGS = IORING_SETUP_CLAMP | IORING_SETUP_SUBMIT_ALL

#: What the plugin uses from liburing 2024.5.3; the check refuses a liburing without it.
NEEDED = (
    "io_uring",
    "io_uring_cq_ready",
    "io_uring_cqe",
    "io_uring_cqe_seen",
    "io_uring_free_probe",
    "io_uring_get_events",
    "io_uring_get_probe",
    "io_uring_get_sqe",
    "io_uring_peek_cqe",
    "io_uring_prep_fsync",
    "io_uring_prep_nop",
    "io_uring_prep_sync_file_range",
    "io_uring_prep_writev",
    "io_uring_queue_exit",
    "io_uring_queue_init",
    "io_uring_sqe_set_flags",
    "io_uring_submit",
    "io_uring_submit_and_wait",
    "iovec",
    "probe",
)
#: The opcodes a batch uses.
NEEDED_OPS = ("IORING_OP_WRITEV", "IORING_OP_FSYNC", "IORING_OP_SYNC_FILE_RANGE")


def new_ring(lib: Any, entries: int) -> Any:
    """A set-up ``io_uring`` of ``entries`` entries, with SETUP_FLAGS where the kernel knows
    them. Raises OSError when the kernel refuses a ring."""
    ring = lib.io_uring()
    try:
        lib.io_uring_queue_init(entries, ring, SETUP_FLAGS)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        # An older kernel refusing the flags. liburing 2024.5.3 marks a ring active even when
        # its setup failed (so it must never be exited either): retry with a new one.
        ring = lib.io_uring()
        lib.io_uring_queue_init(entries, ring, 0)
    return ring


def check_ring(lib: Any, sysctl: int | None) -> str | None:
    """None when ``lib`` (liburing) can set up a ring, complete a NOP on it and the kernel
    has every opcode in NEEDED_OPS; else the reason. ``sysctl`` is the value of
    ``kernel.io_uring_disabled`` (None where the kernel has no such switch), for the message."""
    missing = [name for name in NEEDED if not hasattr(lib, name)]
    if missing:
        return f"liburing {getattr(lib, '__version__', '?')} lacks {', '.join(missing)}"
    try:
        ring = new_ring(lib, 8)
    except OSError as exc:
        if sysctl == 1:
            why = " (kernel.io_uring_disabled=1 allows it only to the io_uring_group)"
        elif exc.errno == errno.ENOSYS:
            why = " (kernel without io_uring, or the syscall is filtered by seccomp)"
        elif exc.errno == errno.EPERM:
            why = " (refused: seccomp, a container policy or the sysctl)"
        else:
            why = ""
        return f"io_uring_setup failed: {exc}{why}"
    try:
        sqe = lib.io_uring_get_sqe(ring)
        if not sqe:
            return "a new ring has no free submission entry"
        lib.io_uring_prep_nop(sqe)
        sqe.user_data = 1  # liburing 2024.5.3 refuses 0
        lib.io_uring_submit_and_wait(ring, 1)  # one NOP: it completes at once
        cqe = lib.io_uring_cqe()
        if lib.io_uring_peek_cqe(ring, cqe) != 0:
            return "a NOP submission did not complete"
        try:
            result = cqe.res
        finally:
            lib.io_uring_cqe_seen(ring, cqe)
        if result < 0:
            return f"a NOP submission completed with errno {-result}"
        # liburing's probe() reads the opcode list without checking that the kernel gave one.
        listed = lib.io_uring_get_probe()
        has_list = listed.last_op is not None
        lib.io_uring_free_probe(listed)
        if not has_list:
            return f"the kernel ({platform.release()}) cannot list io_uring opcodes (before 5.6)"
        ops = lib.probe()
        unsupported = [op for op in NEEDED_OPS if not ops.get(op)]
        if unsupported:
            return f"the kernel ({platform.release()}) lacks io_uring {', '.join(unsupported)}"
    except OSError as exc:
        return f"a NOP submission failed: {exc}"
    finally:
        lib.io_uring_queue_exit(ring)
    return None


def _main(argv: list[str]) -> int:
    """The probe process: ``argv`` is [script, the parent's sys.path as JSON, sysctl or ""]."""
    sys.path[:] = json.loads(argv[1])
    sysctl = int(argv[2]) if argv[2] else None
    try:
        import liburing  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except Exception as exc:
        reason: str | None = f"liburing cannot be imported ({type(exc).__name__}: {exc})"
    else:
        reason = check_ring(liburing, sysctl)
    print(json.dumps({"reason": reason}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
