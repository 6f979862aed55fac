"""The demo (``python -m walrus_core.demo``) works for any ``--count >= 1`` and tells the truth
about where each consumer started, on a fresh directory and on one an earlier run left."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from walrus_core import Walrus, demo


def run_demo(capsys: pytest.CaptureFixture[str], data_dir: Path, count: int) -> str:
    assert demo.main(["--data-dir", str(data_dir), "--count", str(count)]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 1000, 4500])
def test_any_count_runs_twice_and_says_where_consumers_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], count: int
) -> None:
    first = run_demo(capsys, tmp_path, count)
    assert f"at offsets 0..{count - 1}" in first
    assert "'audit' is new, so it starts at the topic's first entry (offset 0)" in first
    assert f"it read {count} entr" in first
    second = run_demo(capsys, tmp_path, count)
    assert f"at offsets {count}..{2 * count - 1}" in second
    assert f"'audit' resumes at offset {count} (its durable cursor" in second
    # The numbers it prints are the log's: everything was consumed by both consumers.
    with Walrus(data_dir=tmp_path) as wal:
        assert wal.topic_entry_count("orders") == 0
        assert wal.topic_entry_count("orders", consumer="audit") == 0
        assert wal.batch_read_for_topic("orders", 1, start_offset=2 * count) == []
    consumed = re.search(r"consumed (\d+) entr", second)
    left = re.search(r"reopened: (\d+) entr", second)
    assert consumed and left
    assert int(consumed.group(1)) + int(left.group(1)) == count
    # The consumer keeps reading until it has its quarter (at least one), even when the
    # producer finishes between two of its reads.
    for out in (first, second):
        during = re.search(r"consumed (\d+) entr", out)
        assert during and int(during.group(1)) == max(1, count // 4), out


@pytest.mark.parametrize("count", ["0", "-3", "many"])
def test_a_count_below_one_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], count: str
) -> None:
    with pytest.raises(SystemExit) as info:
        demo.main(["--data-dir", str(tmp_path), "--count", count])
    assert info.value.code == 2
    assert "--count" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
