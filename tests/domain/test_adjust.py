"""Runtime adjustments: parsed with field paths, validated against the plan and the batches
already started, applied to the policy in order."""

from __future__ import annotations

from datetime import timedelta

import pytest

from powerx_upgrade.domain.adjust import (
    Adjustment,
    adjusted_bake,
    adjusted_gate,
    apply_adjustments,
    describe_adjustment,
    parse_adjustment,
    recut_remaining,
    validate_adjustment,
)
from powerx_upgrade.domain.models import Plan, Policy, SourceRef, TenantSelection

pytestmark = pytest.mark.unit

POLICY = Policy.model_validate(
    {
        "batches": [
            {"name": "canary", "ratio": 0.1, "bake": "1m"},
            {"ratio": 0.3, "bake": "2m"},
            {"ratio": 0.6, "bake": "2m"},
            {"ratio": 1.0, "bake": "5m"},
        ],
        "deploy": {"concurrency": 10},
        "gate": {
            "poke_interval": "10s",
            "signal_delay": "10s",
            "checks": [
                {"metric": "error_rate", "op": "<=", "limit": 0.05},
                {"metric": "error_rate", "op": "<=", "limit": 0.08, "scope": "cumulative"},
                {
                    "metric": "latency_p95_ms",
                    "op": "<=",
                    "limit": "+20%",
                    "baseline": "pre_upgrade",
                    "scope": "per_tenant",
                },
            ],
        },
    }
)
PLAN = Plan(
    id="crm",
    source=SourceRef(file="plans.yaml"),
    plugin="crm-sync",
    policy_id="grey",
    policy=POLICY,
    tenants=TenantSelection(),
)


def adjustment(**data) -> Adjustment:
    parsed, problems = parse_adjustment(data)
    assert problems == [], [str(p) for p in problems]
    return parsed


def paths(problems) -> list[str]:
    return [p.path for p in problems]


def test_parse_gives_field_paths_and_the_models_limits():
    _, problems = parse_adjustment(
        {"deploy_concurrency": 0, "batches": {"3": {"ratio": 1.5}}, "bake": "soon", "gate": {}}
    )
    found = {p.path: p.message for p in problems}
    assert set(found) == {
        "adjust.deploy_concurrency",
        "adjust.batches.3.ratio",
        "adjust.bake",
        "adjust.gate",
    }
    assert "greater than or equal to 1" in found["adjust.deploy_concurrency"]
    assert "at most 1.0" in found["adjust.batches.3.ratio"]
    assert "unknown field 'gate'" in found["adjust.gate"]
    assert all(p.file == "adjust" and p.severity == "error" for p in problems)


def test_an_adjustment_must_change_something():
    _, problems = parse_adjustment({})
    assert paths(problems) == ["adjust"] and "at least one" in problems[0].message
    _, problems = parse_adjustment({"batches": {"2": {}}})
    assert paths(problems) == ["adjust.batches.2"]
    _, problems = parse_adjustment(["bake"])
    assert paths(problems) == ["adjust"]


def test_a_valid_adjustment_has_no_problems():
    change = adjustment(
        checks=[{"metric": "latency_p95_ms", "limit": "+30%"}],
        bake="90s",
        batches={"3": {"ratio": "50%"}},
        deploy_concurrency=40,
    )
    assert validate_adjustment(PLAN, change, started_batches=2) == []


def test_ratios_must_still_increase_after_the_change():
    change = adjustment(batches={"3": {"ratio": 0.2}})
    problems = validate_adjustment(PLAN, change, started_batches=1)
    assert paths(problems) == ["adjust.batches.3.ratio"]
    assert "must be above batches[1]'s 0.3" in problems[0].message


def test_the_last_batch_must_still_cover_everyone():
    problems = validate_adjustment(
        PLAN, adjustment(batches={"4": {"ratio": 0.9}}), started_batches=1
    )
    assert paths(problems) == ["adjust.batches.4.ratio"]
    assert "not 1.0" in problems[0].message


def test_a_batch_already_started_cannot_be_recut_but_the_baking_one_can_bake_longer():
    change = adjustment(batches={"2": {"ratio": 0.4}, "5": {"bake": "1m"}})
    problems = validate_adjustment(PLAN, change, started_batches=2)
    assert paths(problems) == ["adjust.batches.2.ratio", "adjust.batches.5"]
    assert "already started" in problems[0].message
    assert "the policy has 4" in problems[1].message
    longer = adjustment(batches={"2": {"bake": "5m"}})
    assert validate_adjustment(PLAN, longer, started_batches=2) == []
    done = validate_adjustment(PLAN, adjustment(batches={"1": {"bake": "5m"}}), started_batches=2)
    assert paths(done) == ["adjust.batches.1.bake"]


def test_checks_must_name_a_known_metric_of_the_gate_unambiguously_and_keep_the_limit_kind():
    change = adjustment(
        checks=[
            {"metric": "cpu", "limit": 0.5},
            {"metric": "requests", "limit": 10},
            {"metric": "error_rate", "limit": 0.03},
            {"metric": "latency_p95_ms", "limit": 300},
        ]
    )
    problems = validate_adjustment(PLAN, change, started_batches=1)
    found = {p.path: p.message for p in problems}
    assert "unknown metric 'cpu'" in found["adjust.checks.0.metric"]
    assert "no check on requests" in found["adjust.checks.1.metric"]
    assert "give the scope (batch, cumulative)" in found["adjust.checks.2.scope"]
    assert "relative to its baseline" in found["adjust.checks.3.limit"]
    scoped = adjustment(checks=[{"metric": "error_rate", "scope": "cumulative", "limit": "3%"}])
    assert validate_adjustment(PLAN, scoped, started_batches=1) == []


def test_validation_checks_against_the_policy_as_adjusted_so_far():
    earlier = apply_adjustments(POLICY, [adjustment(batches={"3": {"ratio": 0.8}})])
    change = adjustment(batches={"4": {"ratio": 0.75}})
    assert (
        validate_adjustment(PLAN, adjustment(batches={"3": {"ratio": 0.7}}), started_batches=2)
        == []
    )
    problems = validate_adjustment(PLAN, change, started_batches=2, policy=earlier)
    assert paths(problems) == ["adjust.batches.4.ratio", "adjust.batches.4.ratio"]
    assert "must be above batches[2]'s 0.8" in problems[0].message
    assert "not 1.0" in problems[1].message


def test_apply_changes_limits_bakes_ratios_and_concurrency_later_ones_winning():
    first = adjustment(
        checks=[{"metric": "error_rate", "scope": "batch", "limit": 0.02}],
        bake="3m",
        deploy_concurrency=5,
    )
    second = adjustment(
        batches={"3": {"count": 40, "bake": "30s"}}, deploy_concurrency=7, rollback_concurrency=9
    )
    policy = apply_adjustments(POLICY, [first, second])
    assert [c.limit.value for c in policy.gate.checks] == [0.02, 0.08, 0.2]
    assert [b.bake for b in policy.batches] == [
        timedelta(minutes=3),
        timedelta(minutes=3),
        timedelta(seconds=30),
        timedelta(minutes=3),
    ]
    assert (policy.batches[2].ratio, policy.batches[2].count) == (None, 40)
    assert (policy.deploy.concurrency, policy.rollback.concurrency) == (7, 9)
    assert POLICY.deploy.concurrency == 10  # the plan's policy is untouched
    assert apply_adjustments(POLICY, []) == POLICY


def test_adjusted_bake_takes_the_batchs_own_then_the_general_the_longest_of_merged():
    general = adjustment(bake="40s")
    specific = adjustment(batches={"3": {"bake": "2m"}})
    assert adjusted_bake([], 2) is None
    assert adjusted_bake([general], 2) == timedelta(seconds=40)
    assert adjusted_bake([general, specific], 3) == timedelta(minutes=2)
    assert adjusted_bake([specific, general], 3) == timedelta(seconds=40)
    assert adjusted_bake([general, specific], 2, merged=(3,)) == timedelta(minutes=2)


def test_describe_says_what_changes():
    text = describe_adjustment(
        adjustment(
            checks=[{"metric": "error_rate", "scope": "batch", "limit": 0.02}],
            batches={"3": {"ratio": 0.5}},
            deploy_concurrency=5,
        )
    )
    assert text == "error_rate (batch) limit -> 0.02; batch 3: ratio 0.5; deploy concurrency -> 5"


def planned_for(tenants: int, policy: Policy = POLICY) -> list[dict]:
    from powerx_upgrade.domain.planner import Tenant, plan_batches

    plan = PLAN.model_copy(update={"policy": policy})
    fleet = [Tenant(f"t-{i:03d}") for i in range(tenants)]
    return [b.as_dict() for b in plan_batches(plan, fleet).batches]


@pytest.mark.parametrize("tenants", [3, 10, 37])
@pytest.mark.parametrize("first", [1, 2, 3, 4])
def test_recut_without_adjustments_gives_back_the_planners_batches(tenants, first):
    planned = planned_for(tenants)
    assert recut_remaining(planned, POLICY, first) == planned


def test_recut_moves_not_deployed_tenants_in_their_planned_order_and_keeps_started_batches():
    planned = planned_for(20)  # reaches 2, 6, 12, 20
    assert [b["cumulative_count"] for b in planned] == [2, 6, 12, 20]
    policy = apply_adjustments(POLICY, [adjustment(batches={"3": {"ratio": 0.9, "bake": "7s"}})])
    recut = recut_remaining(planned, policy, 3)
    assert recut[:2] == planned[:2]
    order = [t for b in planned for t in b["tenants"]]
    assert [t for b in recut for t in b["tenants"]] == order
    assert [(b["index"], b["size"], b["cumulative_count"]) for b in recut[2:]] == [
        (3, 12, 18),
        (4, 2, 20),
    ]
    assert recut[2]["bake_seconds"] == 7 and recut[2]["cumulative_ratio"] == 0.9


def test_recut_merges_batches_that_get_no_tenant_into_the_last_one_left():
    planned = planned_for(20)
    policy = apply_adjustments(
        POLICY, [adjustment(batches={"3": {"ratio": 1.0, "bake": "1m"}, "4": {"bake": "9m"}})]
    )
    recut = recut_remaining(planned, policy, 3)
    assert [(b["index"], b["size"], b["merged"]) for b in recut] == [
        (1, 2, []),
        (2, 4, []),
        (3, 14, [4]),
    ]
    assert recut[2]["bake_seconds"] == 9 * 60


def test_adjusted_gate_changes_only_the_matching_checks_limit():
    gate = adjusted_gate(
        POLICY.gate, [adjustment(checks=[{"metric": "latency_p95_ms", "limit": "+50%"}])]
    )
    assert [str(c.limit) for c in gate.checks] == ["0.05", "0.08", "+50%"]
    assert adjusted_gate(POLICY.gate, []) is POLICY.gate
