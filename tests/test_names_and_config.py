"""Namespace keys map to distinct safe directories, bad data directories are refused, and
configuration values that could never work are refused when they are built.

The rules checked here: a key that is already a safe directory name (lower-case ASCII letters,
digits, ``-``, ``_``, ``.``; not only dots; not over-long) is its own directory name; every other
key becomes a readable form of itself, ``~`` and 16 hex digits of a hash of the key. So distinct
keys never share a directory, also on a case-insensitive filesystem.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from walrus_core import Entry, FsyncSchedule, Limits, ReadConsistency, Walrus
from walrus_core.config import GIB, Geometry
from walrus_core.errors import DirectoryLockedError, InvalidConfigError, WalrusValueError
from walrus_core.names import namespace_dir, sanitize_key

SMALL: dict[str, Any] = {"block_size": 4096, "blocks_per_file": 4}
SAFE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
#: Characters a directory name produced for a key may contain.
NAME_CHARS = SAFE_CHARS | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ~")
HASHED = re.compile(r"(?P<readable>.+)~(?P<digest>[0-9a-f]{16})")
ONE_DAY_MS = 24 * 60 * 60 * 1000
TIB = 1024 * GIB


def open_wal(data_dir: Any, **kw: Any) -> Walrus:
    """A Walrus on the backend under test (as conftest's fixtures pick it)."""
    backend = os.environ.get("WALRUS_TEST_BACKEND", "fd")
    return Walrus(data_dir=data_dir, backend=backend, fsync=FsyncSchedule.no_fsync(), **SMALL, **kw)


def assert_safe_name(name: str) -> None:
    """``name`` is one directory entry every common filesystem accepts as it is."""
    assert name and name not in (".", "..") and name.strip(".")
    assert set(name) <= NAME_CHARS, name
    assert len(name.encode("utf-8")) <= 200  # well under the 255-byte limit of a name


# --- the mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["prod", "tenant-a", "a_b", "v1.2", "0", "-", "_", ".hidden", "x" * 200]
)
def test_safe_keys_are_their_own_directory_name(key: str) -> None:
    assert sanitize_key(key) == key


@pytest.mark.parametrize(
    ("key", "readable"),
    [
        ("prod/payments::v1", "prod_payments__v1"),
        ("tenant/a", "tenant_a"),
        ("tenant:a", "tenant_a"),
        ("a b", "a_b"),
        ("a\\b", "a_b"),
        ("a\x00b", "a_b"),
        ("Prod", "Prod"),  # upper case stays readable but is marked with a hash
        ("caf\u00e9", "caf_"),
        ("\ud800", "_"),  # a lone surrogate (not UTF-8 encodable) is a key like any other
    ],
)
def test_changed_keys_carry_a_hash_suffix(key: str, readable: str) -> None:
    name = sanitize_key(key)
    match = HASHED.fullmatch(name)
    assert match is not None, name
    assert match["readable"] == readable
    assert_safe_name(name)


def test_the_mapping_is_stable() -> None:
    """Directory names are on disk: changing how a key maps would orphan existing logs."""
    assert sanitize_key("prod/payments::v1") == "prod_payments__v1~b5592f0e0c23c192"
    assert sanitize_key("") == "ns~e4a6a0577479b2b4"


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("tenant/a", "tenant:a"),
        ("tenant/a", "tenant_a"),
        ("a b", "a_b"),
        ("a b", "a/b"),
        ("a/b", "a\\b"),
        ("a\x00b", "a_b"),
        ("prod/payments::v1", "prod_payments__v1"),
        ("x" * 300, "x" * 301),
        ("x" * 300, "x" * 299 + "y"),
        ("x" * 201, "x" * 200),
        ("", "."),
        ("", "_"),
        (".", ".."),
        ("..", "..."),
        ("\ud800", "\udc00"),
        ("\ud83d\ude00", "\U0001f600"),  # a surrogate pair is not the character it spells
        ("ns", ""),
    ],
)
def test_keys_that_used_to_collide_get_distinct_directories(one: str, other: str) -> None:
    assert sanitize_key(one) != sanitize_key(other)


@pytest.mark.parametrize(
    ("one", "other"),
    [("Prod", "prod"), ("PROD", "Prod"), ("A/b", "a/B"), ("X" * 300, "x" * 300)],
)
def test_keys_differing_in_case_differ_on_case_insensitive_filesystems(
    one: str, other: str
) -> None:
    assert sanitize_key(one).casefold() != sanitize_key(other).casefold()


@pytest.mark.parametrize(
    "key",
    ["", ".", "..", "...", "./.", "../..", "/", "\\", "\x00", "x" * 300, "é" * 300, "/" * 1000],
)
def test_awkward_keys_give_one_safe_name(key: str) -> None:
    assert_safe_name(sanitize_key(key))


def test_sanitize_key_rejects_non_str() -> None:
    with pytest.raises(TypeError):
        sanitize_key(b"prod")  # type: ignore[arg-type]


# --- properties ----------------------------------------------------------------------------

# Few distinct characters, so that generated keys often differ only in what the old mapping
# threw away (punctuation, case, non-ASCII, length).
COLLIDING_ALPHABET = st.sampled_from(list("aAbB_-.~/\\: \x00é\u00c9\ud800\udc00"))
colliding_keys = st.one_of(
    st.text(COLLIDING_ALPHABET, max_size=8),
    # Around the length where names are cut: keys alike but for what lies past the cut.
    st.text(COLLIDING_ALPHABET, max_size=30).map(lambda tail: "x" * 180 + tail),
)
any_keys = st.text(st.characters(exclude_categories=()), max_size=300)


@settings(max_examples=500)
@given(st.lists(st.one_of(colliding_keys, any_keys), min_size=2, max_size=30, unique=True))
def test_distinct_keys_give_distinct_names_even_case_folded(keys: list[str]) -> None:
    folded = [sanitize_key(key).casefold() for key in keys]
    assert len(set(folded)) == len(keys)


@settings(max_examples=300)
@given(st.one_of(colliding_keys, any_keys))
@example("")
@example("..")
def test_every_key_gives_one_safe_name(key: str) -> None:
    name = sanitize_key(key)
    assert_safe_name(name)
    base = os.path.abspath("data")
    assert os.path.dirname(os.path.join(base, name)) == base


@settings(max_examples=300)
@given(st.one_of(colliding_keys, any_keys))
def test_a_changed_key_never_equals_an_unchanged_one(key: str) -> None:
    """Unchanged names never contain ``~``; changed names always end in ``~`` and a hash."""
    name = sanitize_key(key)
    if name == key:
        assert "~" not in name and set(name) <= SAFE_CHARS
    else:
        assert HASHED.fullmatch(name) is not None
    assert sanitize_key(key) == name  # deterministic


@settings(max_examples=200)
@given(st.one_of(colliding_keys, any_keys))
def test_case_variants_get_distinct_names(key: str) -> None:
    for variant in {key.upper(), key.lower(), key.swapcase()} - {key}:
        assert sanitize_key(variant).casefold() != sanitize_key(key).casefold()


# --- namespaces end to end -----------------------------------------------------------------


def test_colliding_keys_open_separate_logs_side_by_side(tmp_path: Path) -> None:
    with open_wal(tmp_path, key="tenant/a") as slash, open_wal(tmp_path, key="tenant:a") as colon:
        slash.append_for_topic("t", b"slash")
        colon.append_for_topic("t", b"colon")
        assert slash.read_next("t") == Entry(b"slash", 0)
        assert colon.read_next("t") == Entry(b"colon", 0)
    assert len(list(tmp_path.iterdir())) == 2


def test_case_variants_open_separate_logs(tmp_path: Path) -> None:
    with open_wal(tmp_path, key="Prod") as upper, open_wal(tmp_path, key="prod") as lower:
        upper.append_for_topic("t", b"upper")
        assert lower.topics() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["prod", sanitize_key("Prod")])


def test_same_key_still_conflicts(tmp_path: Path) -> None:
    with open_wal(tmp_path, key="tenant/a"), pytest.raises(DirectoryLockedError):
        open_wal(tmp_path, key="tenant/a")


@pytest.mark.parametrize("key", ["", "..", "\x00", "\ud800", "a\\b", "x" * 300, "Ünïcode/ключ"])
def test_awkward_keys_open_one_child_directory(tmp_path: Path, key: str) -> None:
    data_dir = tmp_path / "data"
    with open_wal(data_dir, key=key) as wal:
        wal.append_for_topic("t", b"inside")
    children = list(tmp_path.iterdir())
    assert children == [data_dir]
    assert [p.name for p in data_dir.iterdir()] == [sanitize_key(key)]
    with open_wal(data_dir, key=key) as wal:
        assert wal.read_next("t") == Entry(b"inside", 0)


# --- data_dir ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "k"])
def test_empty_data_dir_is_refused(key: str | None) -> None:
    with pytest.raises(InvalidConfigError, match="empty"):
        namespace_dir("", key)


@pytest.mark.parametrize("data_dir", ["wal\x00files", Path("wal\x00files")])
def test_data_dir_with_nul_is_refused(data_dir: Any) -> None:
    with pytest.raises(InvalidConfigError, match="NUL"):
        namespace_dir(data_dir, "k")


def test_data_dir_not_encodable_for_the_filesystem_is_refused() -> None:
    if sys.getfilesystemencoding().lower() not in ("utf-8", "utf8"):
        pytest.skip("needs a UTF-8 filesystem encoding")
    with pytest.raises(InvalidConfigError):
        namespace_dir("wal\ud800", None)


def test_data_dir_with_escaped_undecodable_bytes_is_fine(tmp_path: Path) -> None:
    """os.fsdecode() of a non-UTF-8 file name: an existing path, so it must keep working."""
    if sys.platform == "win32":
        pytest.skip("POSIX file names")
    name = os.fsdecode(b"wal\xff")
    assert namespace_dir(str(tmp_path / name), None) == str(tmp_path / name)


class _BytesPath:
    def __fspath__(self) -> bytes:
        return b"/tmp/wal"


@pytest.mark.parametrize("data_dir", [b"/tmp/wal", _BytesPath()])
@pytest.mark.parametrize("key", [None, "k"])
def test_bytes_data_dir_stays_a_type_error(data_dir: Any, key: str | None) -> None:
    with pytest.raises(TypeError):
        namespace_dir(data_dir, key)
    with pytest.raises(TypeError):
        open_wal(data_dir, key=key)


@pytest.mark.parametrize("key", [None, "k"])
def test_walrus_refuses_bad_data_dirs_before_touching_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str | None
) -> None:
    monkeypatch.chdir(tmp_path)
    for data_dir in ("", "wal\x00files"):
        with pytest.raises(InvalidConfigError):
            open_wal(data_dir, key=key)
    assert list(tmp_path.iterdir()) == []


def test_namespace_dir_shape(tmp_path: Path) -> None:
    assert namespace_dir(tmp_path, None) == str(tmp_path)
    assert namespace_dir(tmp_path, "a/b") == str(tmp_path / sanitize_key("a/b"))
    assert namespace_dir(tmp_path / "x" / "..", "k") == str(tmp_path / "k")


# --- fsync schedule ------------------------------------------------------------------------


def test_fsync_interval_up_to_one_day_is_accepted() -> None:
    assert FsyncSchedule.milliseconds(ONE_DAY_MS).interval_ms == ONE_DAY_MS


@pytest.mark.parametrize("ms", [ONE_DAY_MS + 1, 10**13, 2**63])
def test_fsync_interval_beyond_one_day_is_refused(ms: int) -> None:
    with pytest.raises(InvalidConfigError, match="milliseconds"):
        FsyncSchedule.milliseconds(ms)


def test_fsync_schedule_built_directly_is_validated_too() -> None:
    kind = FsyncSchedule.milliseconds(1).kind
    with pytest.raises(InvalidConfigError):
        FsyncSchedule(kind, 10**13)
    with pytest.raises(InvalidConfigError):
        FsyncSchedule(kind, 0)


def test_longest_fsync_interval_runs_and_closes(tmp_path: Path, backend_name: str) -> None:
    wal = Walrus(
        data_dir=tmp_path,
        backend=backend_name,
        fsync=FsyncSchedule.milliseconds(ONE_DAY_MS),
        **SMALL,
    )
    wal.append_for_topic("t", b"x")
    wal.flush()
    wal.close()


# --- geometry ------------------------------------------------------------------------------


def test_data_files_up_to_one_tib_are_accepted() -> None:
    assert Geometry(block_size=GIB, blocks_per_file=1024).file_size == TIB
    assert Geometry(block_size=4096, blocks_per_file=1_000_000).file_size < TIB


@pytest.mark.parametrize(
    ("block_size", "blocks_per_file"), [(GIB, 1025), (GIB, 20_000), (512 * 1024 * 1024, 1_000_000)]
)
def test_data_files_over_one_tib_are_refused(block_size: int, blocks_per_file: int) -> None:
    with pytest.raises(InvalidConfigError, match="file"):
        Geometry(block_size=block_size, blocks_per_file=blocks_per_file)


def test_walrus_refuses_oversized_files_at_construction(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigError):
        Walrus(data_dir=tmp_path / "wal", backend="fd", block_size=GIB, blocks_per_file=20_000)
    assert not (tmp_path / "wal").exists()


# --- limits and read consistency -----------------------------------------------------------


def test_batch_entry_limit_that_no_batch_can_reach_is_refused() -> None:
    with pytest.raises(InvalidConfigError, match="max_batch_entries"):
        Limits(max_batch_entries=sys.maxsize)


def test_largest_batch_entry_limit_works(tmp_path: Path) -> None:
    with open_wal(tmp_path, limits=Limits(max_batch_entries=sys.maxsize - 1)) as wal:
        assert wal.batch_append_for_topic("t", [b"a", b"b"]) == range(0, 2)
        assert [e.data for e in wal.batch_read_for_topic("t", 100)] == [b"a", b"b"]


def test_huge_batch_byte_limit_works(tmp_path: Path) -> None:
    with open_wal(tmp_path, limits=Limits(max_batch_bytes=10**30)) as wal:
        assert wal.batch_append_for_topic("t", [b"a"]) == range(0, 1)


@pytest.mark.parametrize(("asked", "got"), [(0, 1), (-5, 1), (1, 1), (10**30, 10**30)])
def test_at_least_once_keeps_its_documented_range(asked: int, got: int) -> None:
    assert ReadConsistency.at_least_once(asked).persist_every == got


def test_config_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        FsyncSchedule.milliseconds(10**13)
    assert issubclass(InvalidConfigError, WalrusValueError)
