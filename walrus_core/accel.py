"""Whether the compiled accelerator of the per-entry loops is in use.

``walrus_core._accel`` (built from ``_accel.c`` when a C compiler is available at install)
does what the pure-Python loops of writer.py and reader.py do, producing the same bytes and
the same entries; the pure-Python code stays the reference. Setting ``WALRUS_PURE_PYTHON=1``
before the import uses the pure-Python loops even when the accelerator is built (tests run
the behaviour suite both ways).
"""

from __future__ import annotations

import os
from types import ModuleType

from walrus_core.entry import Entry


def _load() -> ModuleType | None:
    if os.environ.get("WALRUS_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        import walrus_core._accel as _accel
    except ImportError:
        return None
    _accel.set_entry_type(Entry)
    return _accel


#: The compiled module, or None when the pure-Python loops run.
accel: ModuleType | None = _load()
