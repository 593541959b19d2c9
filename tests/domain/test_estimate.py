"""Preview time estimates: each batch's deploy and gate time, and the run against its window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from powerx_upgrade.domain.estimate import deploy_latency, estimate
from powerx_upgrade.domain.models import Plan, Policy, SourceRef, TenantSelection, WindowSpec
from powerx_upgrade.domain.planner import Tenant, plan_batches

pytestmark = pytest.mark.unit

SAT_0100_SHANGHAI = datetime(2026, 12, 4, 17, 0, tzinfo=UTC)  # Sat 01:00 in Asia/Shanghai


def make_plan(bakes=("10m", "15m", "30m", "15m"), window=True) -> Plan:
    policy = Policy.model_validate(
        {
            "batches": [
                {"name": "canary", "ratio": 0.05, "bake": bakes[0]},
                {"name": "early", "ratio": 0.2, "bake": bakes[1]},
                {"name": "half", "ratio": 0.5, "bake": bakes[2], "approval": "required"},
                {"name": "rest", "ratio": 1.0, "bake": bakes[3]},
            ],
            "deploy": {"concurrency": 20, "shard_size": 50},
            "gate": {
                "poke_interval": "30s",
                "signal_delay": "1m",
                "checks": [{"metric": "error_rate", "op": "<=", "limit": 0.05}],
            },
            "approval_timeout": "4h",
        }
    )
    return Plan(
        id="crm",
        source=SourceRef(file="test.yaml", line=1),
        plugin="crm-sync",
        policy_id="p",
        policy=policy,
        tenants=TenantSelection.model_validate({}),
        window=WindowSpec(schedule="0 2 * * SAT", duration="4h", timezone="Asia/Shanghai")
        if window
        else None,
    )


FLEET = [Tenant(f"t-{i:04d}") for i in range(1, 201)]


def test_the_median_of_settled_upgrades_is_the_latency_else_a_stated_default():
    measured = deploy_latency("crm-sync", [3.0, 1.0, 2.0, 10.0], runs=2)
    assert (measured.seconds, measured.samples, measured.measured) == (2.5, 4, True)
    assert measured.describe() == (
        "2.5s per tenant: median of 4 settled upgrade(s) of crm-sync in the ledger "
        "(start to end, retries included; 2 run(s))"
    )
    default = deploy_latency("crm-sync", [], runs=0)
    assert default.describe() == (
        "default 30s per tenant: the ledger has no settled upgrade of crm-sync"
    )


def test_a_run_started_at_the_window_opening_fits_and_says_when_it_finishes():
    plan = make_plan()
    latency = deploy_latency("crm-sync", [4.0] * 9, runs=3)
    result = estimate(plan, plan_batches(plan, FLEET), latency, SAT_0100_SHANGHAI)
    assert result.lines() == [
        "deploy latency: 4.0s per tenant: median of 9 settled upgrade(s) of crm-sync in the "
        "ledger (start to end, retries included; 3 run(s))",
        "deploy: 20 upgrade(s) at a time per shard of up to 50, 1 shard(s) at a time",
        "batch 1 canary: deploy 4s (10 tenant(s), 1 shard(s), 1 wave(s)) + gate 11m30s "
        "(bake 10m) = 11m34s; verdict about 11m34s after the start",
        "batch 2 early: deploy 8s (30 tenant(s), 1 shard(s), 2 wave(s)) + gate 16m30s "
        "(bake 15m) = 16m38s; verdict about 28m12s after the start",
        # shards of 50 and 10, one after another: 3 + 1 waves
        "batch 3 half: approval wait (open-ended, up to 4h) + deploy 16s (60 tenant(s), "
        "2 shard(s), 4 wave(s)) + gate 31m30s (bake 30m) = 31m46s; verdict about 59m58s after "
        "the start",
        "batch 4 rest: deploy 24s (100 tenant(s), 2 shard(s), 6 wave(s)) + gate 16m30s "
        "(bake 15m) = 16m54s; verdict about 1h16m52s after the start",
        "total: 1h16m52s, started when the window opens (2026-12-05 02:00 CST)",
        "finishes about 03:17, inside the 02:00-06:00 window (Asia/Shanghai); not counting 1 "
        "approval wait(s), which are open-ended",
    ]
    assert result.fit.overrun == timedelta(0)
    assert result.as_dict()["window"]["fits"] is True


def test_a_run_that_outlasts_its_window_says_by_how_much():
    plan = make_plan(bakes=("1h", "1h", "1h", "1h25m"))
    latency = deploy_latency("crm-sync", [], runs=0)
    result = estimate(plan, plan_batches(plan, FLEET), latency, SAT_0100_SHANGHAI, slots=2)
    assert result.lines()[-2:] == [
        "total: 4h35m30s, started when the window opens (2026-12-05 02:00 CST)",
        "overruns the 02:00-06:00 window (Asia/Shanghai) by 36 min: finishes about 06:36; not "
        "counting 1 approval wait(s), which are open-ended; a batch due after the window "
        "closes waits for the next opening",
    ]
    # two shards at a time: batch 4's two shards of 50 deploy side by side, 3 waves, not 6
    assert [b.waves for b in result.batches] == [1, 2, 3, 3]
    assert result.as_dict()["window"]["overrun_seconds"] == 35 * 60 + 30


def test_a_run_inside_an_open_window_starts_now_and_without_a_window_it_has_no_bound():
    plan = make_plan()
    latency = deploy_latency("crm-sync", [], runs=0)
    inside = SAT_0100_SHANGHAI + timedelta(hours=2, minutes=30)  # 03:30 Shanghai
    result = estimate(plan, plan_batches(plan, FLEET), latency, inside)
    assert result.lines()[-2:] == [
        "total: 1h22m30s, started now (2026-12-05 03:30 CST): the window is open",
        "finishes about 04:53, inside the 02:00-06:00 window (Asia/Shanghai); not counting 1 "
        "approval wait(s), which are open-ended",
    ]
    free = make_plan(window=False)
    result = estimate(free, plan_batches(free, FLEET), latency, inside)
    assert result.lines()[-2:] == [
        "total: 1h22m30s, started now (2026-12-04 19:30 UTC): the plan has no window",
        "finishes about 20:53 (UTC); not counting 1 approval wait(s), which are open-ended",
    ]


def test_zero_deploy_slots_are_refused():
    plan = make_plan()
    with pytest.raises(ValueError, match="slots 0"):
        estimate(plan, plan_batches(plan, FLEET), deploy_latency("x", [], 0), SAT_0100_SHANGHAI, 0)
