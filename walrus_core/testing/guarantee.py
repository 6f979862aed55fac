"""How the conformance suite words a failure: the guarantee first, then what was seen."""

from __future__ import annotations


def broken(guarantee: str, detail: str = "") -> str:
    """The failure message of a broken guarantee: ``guarantee broken: <guarantee>: <detail>``."""
    return f"guarantee broken: {guarantee}" + (f": {detail}" if detail else "")


def first_difference(got: bytes, expected: bytes) -> str:
    """Where two byte strings first differ, shortly (for failure messages)."""
    if len(got) != len(expected):
        prefix = f"{len(got)} bytes instead of {len(expected)}"
    else:
        prefix = "same length"
    for i, (a, b) in enumerate(zip(got, expected, strict=False)):
        if a != b:
            return f"{prefix}; first difference at byte {i}: {a:#04x} instead of {b:#04x}"
    return prefix
