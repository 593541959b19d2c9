"""A rollback is cut into at most as many shards as the executor runs at once: more would each
cost a task process and a scheduler hop and add no concurrency (docs/performance.md, "Fewer
scheduler hops")."""

from __future__ import annotations

import pytest

from powerx_upgrade.orchestration import runtime
from powerx_upgrade.rollout.rollback import shards


def covered(cut: list[dict]) -> list[int]:
    return [i for s in cut for i in range(s["shard"]["start"], s["shard"]["end"])]


@pytest.mark.parametrize(
    ("count", "size", "most", "expected"), [(10_000, 250, 8, 8), (1001, 125, 8, 8)]
)
def test_a_rollback_of_more_shards_than_slots_gets_larger_shards(count, size, most, expected):
    cut = shards(count, size, most)
    assert len(cut) == expected
    assert covered(cut) == list(range(count))  # every target once, in order
    assert {s["shard"]["of"] for s in cut} == {count}


def test_a_rollback_that_fits_the_slots_keeps_the_policys_shard_size():
    cut = shards(1000, 250, 8)
    assert [s["shard"]["end"] - s["shard"]["start"] for s in cut] == [250] * 4
    assert shards(1000, 50, None) == shards(1000, 50)
    assert len(shards(1000, 50, 0)) == 20  # 0: no limit


def test_the_shard_limit_is_the_setting_else_the_executors_slots(monkeypatch):
    monkeypatch.delenv("AIRFLOW__POWERX_UPGRADE__ROLLBACK_SHARDS", raising=False)
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    monkeypatch.setenv("AIRFLOW__CORE__PARALLELISM", "6")
    assert runtime.rollback_shards() == 6
    monkeypatch.setenv("AIRFLOW__POWERX_UPGRADE__ROLLBACK_SHARDS", "3")
    assert runtime.rollback_shards() == 3
    monkeypatch.setenv("AIRFLOW__POWERX_UPGRADE__ROLLBACK_SHARDS", "many")
    with pytest.raises(ValueError, match="rollback_shards: 'many'"):
        runtime.rollback_shards()


@pytest.mark.parametrize(
    ("executor", "parallelism", "expected"),
    [
        ("LocalExecutor", 32, 2),
        ("airflow.executors.local_executor.LocalExecutor", 32, 2),
        ("LocalExecutor", 1, 1),
        ("LocalExecutor", 0, 2),
        ("CeleryExecutor", 32, 32),
        ("LocalExecutor,CeleryExecutor", 32, 32),
    ],
)
def test_on_the_local_executor_a_rollback_has_no_more_shards_than_cpus(
    monkeypatch, executor, parallelism, expected
):
    """Every shard of a LocalExecutor runs on the scheduler's machine, and one shard's client
    keeps most of a CPU busy: 2 CPUs, 2 shards (measured on the live stack: 1,000 tenants in
    2 shards took 2.2 s, in 4 shards 2.4-2.9 s each)."""
    monkeypatch.delenv("AIRFLOW__POWERX_UPGRADE__ROLLBACK_SHARDS", raising=False)
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", executor)
    monkeypatch.setenv("AIRFLOW__CORE__PARALLELISM", str(parallelism))
    monkeypatch.setattr(runtime, "cpus", lambda: 2)
    assert runtime.rollback_shards() == expected


def test_the_setting_wins_over_the_cpus(monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    monkeypatch.setenv("AIRFLOW__POWERX_UPGRADE__ROLLBACK_SHARDS", "8")
    monkeypatch.setattr(runtime, "cpus", lambda: 2)
    assert runtime.rollback_shards() == 8
