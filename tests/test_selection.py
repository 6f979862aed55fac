"""Backend selection and chaining: ``"auto"`` by platform and priority, preference lists with
fallback, layers, and the errors that name what to install.

Most tests use in-process fake plugins, so they hold whatever is installed. The last test checks
the real installed backends against ``$WALRUS_EXPECT_CHAIN`` (set by tox's selection envs).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import walrus_core
from walrus_core import BackendUnavailableError, Walrus, distributions
from walrus_core.plugin import BackendInfo, BackendRegistry, hookimpl
from walrus_core.storage import Buffers, OpenSpec, Storage, WriteOp


class FakeBase:
    """A base backend storing files in memory."""

    def __init__(
        self,
        *,
        platforms: tuple[str, ...] = ("*",),
        priority: int = 1,
        family: str = "",
        reason: str | None = None,
    ) -> None:
        self.platforms = platforms
        self.priority = priority
        self.family = family
        self.reason = reason
        self.files: dict[str, bytearray] = {}

    @hookimpl
    def walrus_backend_info(self) -> BackendInfo:
        return BackendInfo(
            version="9.9",
            platforms=self.platforms,
            auto_priority=self.priority,
            family=self.family,
            probe=lambda: self.reason,
        )

    @hookimpl
    def walrus_open(self, spec: OpenSpec, lower: Storage | None) -> bytearray:
        buf = self.files.setdefault(spec.path, bytearray())
        if len(buf) < spec.size:
            buf.extend(bytes(spec.size - len(buf)))
        return buf

    @hookimpl
    def walrus_write(self, handle: bytearray, offset: int, buffers: Buffers, nbytes: int) -> None:
        data = b"".join(bytes(b) for b in buffers)
        handle[offset : offset + len(data)] = data

    @hookimpl
    def walrus_read(self, handle: bytearray, offset: int, size: int) -> bytes:
        return bytes(handle[offset : offset + size])

    @hookimpl
    def walrus_flush(self, handle: bytearray) -> None:
        return None

    @hookimpl
    def walrus_batch_submit(self, handle: bytearray, ops: Sequence[WriteOp], sync: bool) -> None:
        for op in ops:
            self.walrus_write(handle, op.offset, op.buffers, op.nbytes)

    @hookimpl
    def walrus_close(self, handle: bytearray) -> None:
        return None


class CountingLayer:
    """A third-party style layer: counts batch submissions, delegates everything else."""

    def __init__(self, over: str, *, priority: int = 0, reason: str | None = None) -> None:
        self.over = over
        self.priority = priority
        self.reason = reason
        self.batches = 0

    @hookimpl
    def walrus_backend_info(self) -> BackendInfo:
        return BackendInfo(
            version="1.0",
            layers_over=self.over,
            auto_priority=self.priority,
            platforms=("linux",),
            probe=lambda: self.reason,
        )

    @hookimpl
    def walrus_batch_submit(self, handle: Any, ops: Sequence[WriteOp], sync: bool) -> None:
        # No walrus_open here: per the chain rule, ``handle`` is the base backend's handle.
        self.batches += 1
        for op in ops:
            data = b"".join(bytes(b) for b in op.buffers)
            handle[op.offset : op.offset + len(data)] = data


def registry(**plugins: Any) -> BackendRegistry:
    return BackendRegistry(plugins)


def test_auto_takes_the_highest_priority_backend_that_runs_on_the_platform() -> None:
    reg = registry(
        low=FakeBase(priority=1),
        high=FakeBase(priority=5, platforms=("linux",)),
        never=FakeBase(priority=0),
    )
    assert reg.chain("auto", platform="linux").names == ("high",)
    assert reg.chain("auto", platform="darwin").names == ("low",)


def test_a_layer_wins_auto_and_is_chained_over_its_base(tmp_path: Path) -> None:
    layer = CountingLayer("base", priority=9)
    reg = registry(base=FakeBase(priority=1), counting=layer)
    assert reg.chain("auto", platform="linux").names == ("counting", "base")
    with Walrus(tmp_path, backend="counting", registry=reg, block_size=4096) as wal:
        assert wal.backend_chain == ("counting", "base")
        assert wal.batch_append_for_topic("t", [b"a", b"b", b"c"]) == range(0, 3)
        wal.append_for_topic("t", b"d")  # single writes go to the base backend
        assert [e.data for e in wal.batch_read_for_topic("t", 100)] == [b"a", b"b", b"c", b"d"]
    assert layer.batches == 1


def test_auto_falls_back_with_one_info_line_when_a_backend_cannot_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reg = registry(
        base=FakeBase(priority=1),
        fast=CountingLayer("base", priority=9, reason="kernel says no"),
    )
    with caplog.at_level(logging.INFO, logger="walrus_core.plugins"):
        assert reg.chain("auto", platform="linux").names == ("base",)
        assert reg.chain("auto", platform="linux").names == ("base",)
    lines = [r.getMessage() for r in caplog.records if "kernel says no" in r.getMessage()]
    assert len(lines) == 1, lines
    assert caplog.records[0].levelno == logging.INFO


def test_an_explicit_backend_that_cannot_run_raises_with_the_reason() -> None:
    reg = registry(base=FakeBase(), fast=CountingLayer("base", reason="io_uring is disabled"))
    with pytest.raises(BackendUnavailableError, match="io_uring is disabled"):
        reg.chain("fast")
    assert reg.chain("fast,base").names == ("base",)


def test_an_unknown_name_lists_what_is_installed_and_invents_no_package() -> None:
    reg = registry(base=FakeBase())
    with pytest.raises(BackendUnavailableError) as info:
        reg.chain("nope")
    assert str(info.value) == "no backend named 'nope'; installed: base"
    assert "pip install" not in str(info.value)


@pytest.mark.parametrize(
    ("asked", "meant"), [("BASE", "base"), ("bsae", "base"), ("base2", "base"), ("Base ", "base")]
)
def test_a_misspelt_name_gets_did_you_mean(asked: str, meant: str) -> None:
    reg = registry(base=FakeBase())
    with pytest.raises(BackendUnavailableError, match=f"did you mean {meant!r}[?]"):
        reg.chain(asked)  # a preference list strips spaces: "Base " is "Base"


def test_a_missing_project_backend_names_its_distribution_and_its_folder() -> None:
    reg = registry(base=FakeBase())
    with pytest.raises(BackendUnavailableError) as info:
        reg.chain("mmap")
    message = str(info.value)
    assert "backend 'mmap' is not installed; it is the distribution walrus-mmap" in message
    root = distributions.checkout_root()
    if root is not None:  # tests run from the checkout: the exact command for it
        assert f"pip install {root / 'plugins' / 'walrus_mmap'}" in message
    else:
        assert "pip install plugins/walrus_mmap" in message
        assert "pip install walrus-mmap" in message
    # A misspelling of a project backend that is not installed says both.
    with pytest.raises(BackendUnavailableError, match=r"did you mean 'uring'\? \(backend 'uring'"):
        reg.chain("urin")


def test_a_layer_is_installed_with_the_project_backends_it_needs() -> None:
    with pytest.raises(BackendUnavailableError) as info:
        registry(base=FakeBase()).chain("uring")
    message = str(info.value)
    assert "pip install walrus-fd walrus-uring" in message
    assert message.index("walrus_fd") < message.index("walrus_uring")


def test_auto_is_among_the_names_meant() -> None:
    with pytest.raises(BackendUnavailableError, match=r"did you mean 'auto'[?]"):
        registry(base=FakeBase()).chain("Auto")


def test_install_instructions_without_a_checkout_name_both_sources(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(distributions, "checkout_root", lambda: None)
    text = distributions.install_instructions("fd")
    assert text is not None
    assert "walrus-fd" in text
    assert "pip install plugins/walrus_fd" in text
    assert "pip install walrus-fd" in text
    assert distributions.install_instructions("no-such") is None


def test_a_layer_over_a_missing_backend_says_which_one_is_missing() -> None:
    with pytest.raises(BackendUnavailableError) as info:
        registry(layer=CountingLayer("base2")).chain("layer")
    assert str(info.value).startswith(
        "backend 'layer' layers over 'base2', which is unusable: no backend named 'base2'"
    )


def test_auto_with_nothing_installed_for_the_platform_says_so_and_names_no_backend() -> None:
    # The registry knows backends only from their BackendInfo: with none installed for the
    # platform it can say what is installed, not invent a package name.
    with pytest.raises(BackendUnavailableError, match="platform 'win32'; installed: none") as info:
        registry().chain("auto", platform="win32")
    # ... and how to install the project's base backends that serve the platform.
    assert "walrus-mmap" in str(info.value)
    assert "walrus-fd" not in str(info.value)  # fd does not run on Windows
    with pytest.raises(BackendUnavailableError) as info:
        registry().chain("auto", platform="linux")
    assert "walrus-fd" in str(info.value) and "walrus-mmap" in str(info.value)
    with pytest.raises(BackendUnavailableError, match="platform 'win32'; installed: base"):
        registry(base=FakeBase(platforms=("linux",))).chain("auto", platform="win32")


def test_a_broken_plugin_is_reported_and_does_not_hide_the_others() -> None:
    class Broken:
        @hookimpl
        def walrus_backend_info(self) -> BackendInfo:
            raise RuntimeError("boom")

    reg = registry(base=FakeBase(priority=1), broken=Broken())
    assert reg.chain("auto").names == ("base",)
    status = {s.name: s for s in reg.statuses()}
    assert status["base"].available and status["base"].version == "9.9"
    assert not status["broken"].available and "boom" in (status["broken"].reason or "")
    with pytest.raises(BackendUnavailableError, match="boom"):
        reg.chain("broken")


def test_layer_cycles_are_refused() -> None:
    reg = registry(a=CountingLayer("b"), b=CountingLayer("a"))
    with pytest.raises(BackendUnavailableError, match="layers over itself"):
        reg.chain("a")


def test_disable_fd_backend_makes_auto_skip_the_fd_family() -> None:
    reg = registry(
        fd=FakeBase(priority=10, family="fd"),
        uring=CountingLayer("fd", priority=20),
        mmap=FakeBase(priority=5, family="mmap"),
    )
    assert reg.chain("auto", platform="linux").names == ("uring", "fd")
    walrus_core.disable_fd_backend()
    try:
        assert reg.chain("auto", platform="linux").names == ("mmap",)
    finally:
        walrus_core.enable_fd_backend()
    assert reg.chain("auto", platform="linux").names == ("uring", "fd")


def test_available_backends_lists_every_installed_backend() -> None:
    statuses = walrus_core.available_backends()
    assert statuses, "no backend installed at all"
    for status in statuses:
        assert status.available == (status.reason is None)
        if status.available:
            assert status.version


def test_auto_resolves_as_this_environment_expects(tmp_path: Path) -> None:
    """tox's selection-{linux,darwin,windows} envs set WALRUS_PLATFORM and the expected chain;
    elsewhere the expectation is derived from what is installed on this (Linux) machine."""
    expected = os.environ.get("WALRUS_EXPECT_CHAIN")
    if expected is None:
        names = {s.name for s in walrus_core.available_backends() if s.available}
        platform = os.environ.get("WALRUS_PLATFORM", "linux")
        if platform.startswith("win"):
            expected = "mmap"
        elif platform.startswith("linux") and "uring" in names:
            expected = "uring/fd"
        elif "fd" in names:
            expected = "fd"
        else:
            expected = "mmap"
    with Walrus(tmp_path, block_size=4096) as wal:
        assert "/".join(wal.backend_chain) == expected
        assert wal.append_for_topic("t", b"x") == 0
