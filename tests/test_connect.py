"""connect(url): a file: URL or a path opens a local Walrus; other schemes come from the
entry-point group walrus.remotes; Walrus satisfies the WalrusLog protocol."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from walrus_core import (
    BackendUnavailableError,
    FsyncSchedule,
    InvalidConfigError,
    Walrus,
    WalrusLog,
    connect,
)
from walrus_core.connect import installed_schemes

FAST = {"fsync": FsyncSchedule.no_fsync(), "block_size": 4096, "blocks_per_file": 4}


def test_a_walrus_is_a_walrus_log(tmp_path: Path, backend_name: str) -> None:
    with Walrus(tmp_path, backend=backend_name, **FAST) as wal:
        assert isinstance(wal, WalrusLog)


@pytest.mark.parametrize("form", ["path", "pathlike", "file-url", "file-localhost"])
def test_local_forms_open_the_same_directory(tmp_path: Path, backend_name: str, form: str) -> None:
    target = tmp_path / "wal dir"  # a space: the URL form quotes it
    url: Any = {
        "path": str(target),
        "pathlike": target,
        "file-url": target.as_uri(),
        "file-localhost": "file://localhost" + target.as_uri()[len("file://") :],
    }[form]
    with connect(url, backend=backend_name, **FAST) as log:
        assert isinstance(log, Walrus)
        assert log.root == str(target)
        log.append_for_topic("t", b"x")
    with Walrus(target, backend=backend_name, **FAST) as wal:
        assert wal.read_next("t") is not None


@pytest.mark.parametrize(
    "url", ["file://otherhost/wal", "file:///tmp/wal?mode=ro", "file:///tmp/wal#x", "file://"]
)
def test_file_urls_that_name_no_local_directory_are_refused(url: str) -> None:
    with pytest.raises(InvalidConfigError):
        connect(url)


def test_an_unknown_scheme_says_what_is_installed_and_where_remotes_come_from() -> None:
    with pytest.raises(BackendUnavailableError) as info:
        connect("nosuch://127.0.0.1:4222")
    message = str(info.value)
    assert "no installed plugin serves nosuch: URLs" in message
    assert "walrus.remotes" in message
    assert "file" in message


def test_the_projects_remote_scheme_names_its_distribution_when_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.metadata.entry_points

    def without_remotes(**kw: Any) -> Any:
        return [] if kw.get("group") == "walrus.remotes" else real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", without_remotes)
    with pytest.raises(BackendUnavailableError) as info:
        connect("nats://127.0.0.1:4222/?key=x")
    message = str(info.value)
    assert "no installed plugin serves nats: URLs" in message
    assert "walrus-nats" in message and "pip install" in message
    assert "plugins/walrus_nats" in message


class FakeRemote(Walrus):
    """What a remote plugin's factory returns: any WalrusLog (here a local one, remembering the
    URL and options it was given)."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        data_dir = options.pop("data_dir")
        self.options = options
        super().__init__(data_dir, **FAST)


class NotALog:
    closed_by_connect = False

    def __init__(self, url: str, **options: Any) -> None:
        pass

    def close(self) -> None:
        NotALog.closed_by_connect = True


@pytest.fixture
def installed_remotes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Two remote schemes installed for real: a dist-info with entry points on sys.path."""
    site = tmp_path / "site"
    dist = site / "walrus_fake_remote-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: walrus-fake-remote\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        "[walrus.remotes]\n"
        "fake = test_connect:FakeRemote\n"
        "notalog = test_connect:NotALog\n"
        "broken = no_such_module_anywhere:factory\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(sys.modules, "test_connect", sys.modules[__name__])
    importlib.invalidate_caches()
    yield


def test_other_schemes_come_from_the_entry_point_group(
    installed_remotes: None, tmp_path: Path
) -> None:
    assert {"fake", "notalog", "broken", "file"} <= set(installed_schemes())
    log = connect("fake://server:1234/stream", data_dir=tmp_path / "remote", color="blue")
    try:
        assert isinstance(log, FakeRemote)
        assert log.url == "fake://server:1234/stream"
        assert log.options == {"color": "blue"}
        assert log.append_for_topic("t", b"x") == 0
    finally:
        log.close()
    assert connect("FAKE://x", data_dir=tmp_path / "remote2").close() is None  # case-insensitive


def test_a_remote_that_is_not_a_walrus_log_is_refused_and_closed(installed_remotes: None) -> None:
    with pytest.raises(TypeError, match=r"does not implement walrus_core\.WalrusLog"):
        connect("notalog://x")
    assert NotALog.closed_by_connect


def test_a_remote_that_cannot_be_imported_says_so(installed_remotes: None) -> None:
    with pytest.raises(BackendUnavailableError, match="cannot be imported"):
        connect("broken://x")
