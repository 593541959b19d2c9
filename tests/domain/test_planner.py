"""The batch planner: selection, order, sizes, merging, and its invariants (hypothesis)."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from powerx_upgrade.domain.models import Plan, Policy, SourceRef, TenantSelection
from powerx_upgrade.domain.planner import PlanningError, Tenant, plan_batches

pytestmark = pytest.mark.unit

TIERS = ("gold", "silver", "bronze")


def make_plan(
    batches=(
        {"ratio": 0.01},
        {"ratio": 0.1},
        {"ratio": 0.5, "approval": "required"},
        {"ratio": 1.0},
    ),
    plan_id: str = "crm",
    **tenants,
) -> Plan:
    policy = Policy.model_validate(
        {
            "batches": [{"bake": "10m", **b} for b in batches],
            "gate": {"checks": [{"metric": "error_rate", "op": "<=", "limit": 0.05}]},
        }
    )
    return Plan(
        id=plan_id,
        source=SourceRef(file="test.yaml", line=1),
        plugin="crm-sync",
        policy_id="p",
        policy=policy,
        tenants=TenantSelection.model_validate(tenants),
    )


def fleet(count: int, seed: int = 1) -> list[Tenant]:
    rng = random.Random(seed)
    return [
        Tenant(f"t-{i:04d}", {"tier": rng.choice(TIERS), "region": rng.choice(("eu", "us"))})
        for i in range(1, count + 1)
    ]


def test_canary_cohort_goes_first_in_written_order():
    plan = make_plan(canary=["t-0009", "t-0003"])
    result = plan_batches(plan, fleet(200))
    assert result.batches[0].tenants == ("t-0009", "t-0003")
    assert result.selected[:2] == ("t-0009", "t-0003")


def test_selection_and_exclusion_by_id_and_label():
    tenants = fleet(300)
    plan = make_plan(select={"tier": ["gold", "silver"]}, exclude=["t-0002", {"region": "us"}])
    result = plan_batches(plan, tenants)
    expected = {
        t.id
        for t in tenants
        if t.labels["tier"] in ("gold", "silver")
        and t.labels["region"] != "us"
        and t.id != "t-0002"
    }
    assert set(result.selected) == expected
    assert sorted(t for b in result.batches for t in b.tenants) == sorted(expected)


def test_canary_outside_the_selector_is_still_included():
    tenants = fleet(50)
    bronze = next(t.id for t in tenants if t.labels["tier"] == "bronze")
    result = plan_batches(make_plan(select={"tier": "gold"}, canary=[bronze]), tenants)
    assert result.batches[0].tenants[0] == bronze


def test_cumulative_sizes_follow_the_ratios():
    result = plan_batches(make_plan(), fleet(1000))
    assert [b.cumulative_count for b in result.batches] == [10, 100, 500, 1000]
    assert [len(b.tenants) for b in result.batches] == [10, 90, 400, 500]
    assert [b.cumulative_ratio for b in result.batches] == [0.01, 0.1, 0.5, 1.0]
    assert result.batches[2].approval_required and not result.batches[3].approval_required


def test_each_batch_gets_at_least_one_tenant_while_tenants_remain():
    result = plan_batches(make_plan(), fleet(10))
    assert [len(b.tenants) for b in result.batches] == [1, 1, 3, 5]


def test_fewer_tenants_than_batches_merge_and_keep_the_strictest_settings():
    plan = make_plan(
        batches=(
            {"ratio": 0.2, "bake": "5m"},
            {"ratio": 0.5, "bake": "30m", "approval": "required"},
            {"ratio": 1.0, "bake": "15m"},
        )
    )
    result = plan_batches(plan, fleet(1))
    assert len(result.batches) == 1
    only = result.batches[0]
    assert only.tenants == ("t-0001",) and only.merged == (2, 3)
    assert only.approval_required and only.bake.total_seconds() == 1800
    assert any("merged into batch 1" in note for note in result.notes)


def test_batch_one_grows_to_hold_the_whole_canary_cohort():
    plan = make_plan(canary=["t-0001", "t-0002", "t-0003"])
    result = plan_batches(plan, fleet(100))
    assert result.batches[0].tenants == ("t-0001", "t-0002", "t-0003")
    assert any("canary cohort" in note for note in result.notes)


def test_order_keys_rank_by_listed_values_then_seeded_hash():
    tenants = fleet(60)
    plan = make_plan(order=[{"label": "tier", "values": ["bronze", "silver", "gold"]}])
    tiers = [
        next(t for t in tenants if t.id == i).labels["tier"]
        for i in plan_batches(plan, tenants).selected
    ]
    assert tiers == sorted(tiers, key=["bronze", "silver", "gold"].index)


def test_plain_order_key_sorts_alphabetically_with_missing_labels_last():
    tenants = [Tenant("a", {"zone": "b"}), Tenant("b", {}), Tenant("c", {"zone": "a"})]
    result = plan_batches(make_plan(order=["zone"]), tenants)
    assert result.selected == ("c", "a", "b")


def test_same_plan_and_tenants_give_the_same_batches_in_any_input_order():
    tenants = fleet(500)
    shuffled = tenants[:]
    random.Random(99).shuffle(shuffled)
    assert plan_batches(make_plan(), tenants) == plan_batches(make_plan(), shuffled)


def test_a_different_seed_gives_a_different_order():
    tenants = fleet(500)
    one = plan_batches(make_plan(), tenants).selected
    other = plan_batches(make_plan(seed="another"), tenants).selected
    assert set(one) == set(other) and one != other


def test_the_seeded_order_is_pinned_across_machines():
    # blake2b of "crm\x00<id>": a change here would reshuffle every plan's batches.
    result = plan_batches(make_plan(), fleet(8))
    assert result.selected == (
        "t-0006",
        "t-0002",
        "t-0008",
        "t-0004",
        "t-0007",
        "t-0005",
        "t-0001",
        "t-0003",
    )


def test_zero_selected_tenants_is_a_clear_error():
    with pytest.raises(PlanningError, match=r"selects no tenant.*none of the 20 tenants"):
        plan_batches(make_plan(select={"tier": "platinum"}), fleet(20))


def test_missing_canary_tenant_is_an_error():
    with pytest.raises(PlanningError, match="t-9999"):
        plan_batches(make_plan(canary=["t-9999"]), fleet(20))


def test_canary_excluded_by_label_is_an_error():
    tenants = fleet(20)
    gold = next(t for t in tenants if t.labels["tier"] == "gold")
    with pytest.raises(PlanningError, match=r"excluded by tenants.exclude\[0\]"):
        plan_batches(make_plan(canary=[gold.id], exclude=[{"tier": "gold"}]), tenants)


def test_duplicate_tenant_ids_are_refused():
    with pytest.raises(PlanningError, match="appears twice"):
        plan_batches(make_plan(), [Tenant("a"), Tenant("a")])


def test_count_batches_and_a_last_count_that_cannot_cover_the_tenants():
    plan = make_plan(batches=({"count": 2}, {"ratio": 1.0}))
    assert [len(b.tenants) for b in plan_batches(plan, fleet(10)).batches] == [2, 8]
    short = make_plan(batches=({"count": 2}, {"count": 5}))
    with pytest.raises(PlanningError, match="reach 5 of the 10 selected"):
        plan_batches(short, fleet(10))


# --- properties --------------------------------------------------------------------------------

ratios = st.lists(
    st.floats(min_value=0.001, max_value=0.999, allow_nan=False),
    min_size=0,
    max_size=5,
    unique=True,
).map(lambda xs: [*sorted(xs), 1.0])


@st.composite
def scenarios(draw):
    count = draw(st.integers(min_value=1, max_value=300))
    tenants = [Tenant(f"t-{i}", {"tier": draw(st.sampled_from(TIERS))}) for i in range(count)]
    canary = draw(st.lists(st.sampled_from([t.id for t in tenants]), max_size=3, unique=True))
    cut = draw(ratios)
    plan = make_plan(
        batches=[{"ratio": r} for r in cut],
        canary=canary,
        seed=draw(st.text(min_size=1, max_size=8)),
    )
    return plan, tenants


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_property_batches_partition_the_selected_tenants(scenario):
    plan, tenants = scenario
    result = plan_batches(plan, tenants)
    assigned = [t for b in result.batches for t in b.tenants]
    assert len(assigned) == len(set(assigned)) == len(tenants)
    assert set(assigned) == {t.id for t in tenants}
    assert all(b.tenants for b in result.batches)


@settings(max_examples=100, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_property_planning_is_deterministic(scenario, rnd):
    plan, tenants = scenario
    shuffled = tenants[:]
    rnd.shuffle(shuffled)
    assert plan_batches(plan, tenants) == plan_batches(plan, shuffled)


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_property_cumulative_sizes_grow_and_follow_the_ratios(scenario):
    plan, tenants = scenario
    result = plan_batches(plan, tenants)
    counts = [b.cumulative_count for b in result.batches]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)
    assert counts[-1] == len(tenants)
    for batch in result.batches:
        wanted = math.ceil(plan.policy.batches[batch.index - 1].ratio * len(tenants) - 1e-9)
        assert batch.cumulative_count >= min(wanted, len(tenants))


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_property_canary_cohort_is_all_in_batch_one(scenario):
    plan, tenants = scenario
    result = plan_batches(plan, tenants)
    cohort = plan.tenants.canary
    assert result.batches[0].tenants[: len(cohort)] == tuple(cohort)


# --- represent: stratified early batches --------------------------------------------------------

REGIONS = ("eu", "us")


def tiered(count: int, bronze_from: int) -> list[Tenant]:
    """gold tenants, then bronze from `bronze_from` on (ids in that order)."""
    return [
        Tenant(f"t-{i:04d}", {"tier": "gold" if i < bronze_from else "bronze"})
        for i in range(1, count + 1)
    ]


def test_represented_canary_holds_a_tenant_of_every_segment_and_keeps_its_size():
    plan = make_plan(
        batches=({"ratio": 0.1}, {"ratio": 1.0}),
        order=[{"label": "tier", "values": ["gold", "silver", "bronze"]}],
        represent={"by": ["tier"]},
    )
    tenants = fleet(60)
    result = plan_batches(plan, tenants)
    tiers = {t.id: t.labels["tier"] for t in tenants}
    first = result.batches[0]
    assert len(first.tenants) == 6
    assert {tiers[t] for t in first.tenants} == {"gold", "silver", "bronze"}
    assert dict(first.segments) == {"tier=bronze": 1, "tier=gold": 4, "tier=silver": 1}
    assert result.gaps == ()
    # without represent the same order fills the canary with gold alone
    plain = plan_batches(
        plan.model_copy(update={"tenants": TenantSelection(order=plan.tenants.order)}), tenants
    )
    assert {tiers[t] for t in plain.batches[0].tenants} == {"gold"}
    assert [str(g) for g in plain.gaps] == [
        "batch 1 leaves out tier=bronze: batch 1 is filled in the plan's order; "
        "tenants.represent is not set",
        "batch 1 leaves out tier=silver: batch 1 is filled in the plan's order; "
        "tenants.represent is not set",
    ]


def test_representatives_are_the_first_of_their_segment_in_the_seeded_order():
    tenants = tiered(20, bronze_from=15)
    plan = make_plan(
        batches=({"count": 4}, {"ratio": 1.0}),
        order=["tier"],  # alphabetical: bronze first ... so rank gold first explicitly
        represent={"by": ["tier"], "per_segment": 2},
    )
    plan = plan.model_copy(
        update={
            "tenants": TenantSelection.model_validate(
                {
                    "order": [{"label": "tier", "values": ["gold", "bronze"]}],
                    "represent": {"by": ["tier"], "per_segment": 2},
                }
            )
        }
    )
    result = plan_batches(plan, tenants)
    ordered = result.selected
    golds = [t for t in ordered if t < "t-0015"]
    bronzes = [t for t in ordered if t >= "t-0015"]
    assert set(result.batches[0].tenants) == {*golds[:2], *bronzes[:2]}
    assert result.batches[0].tenants == tuple(t for t in ordered if t in result.batches[0].tenants)


def test_combinations_that_do_not_fit_fall_back_to_each_label_alone():
    tenants = [
        Tenant(f"t-{i:02d}", {"tier": TIERS[i % 3], "region": REGIONS[i // 3 % 2]})
        for i in range(30)
    ]
    plan = make_plan(batches=({"count": 3}, {"ratio": 1.0}), represent={"by": ["tier", "region"]})
    result = plan_batches(plan, tenants)
    first = [next(t for t in tenants if t.id == i).labels for i in result.batches[0].tenants]
    assert {labels["tier"] for labels in first} == set(TIERS)
    assert {labels["region"] for labels in first} == set(REGIONS)
    assert result.gaps == ()
    assert result.notes == (
        "batch 1 represents each of tier, region alone: 6 combinations x 1 do not fit in its "
        "3 tenant(s)",
    )


def test_a_batch_too_small_names_the_segments_left_out_and_why():
    tenants = fleet(40)
    plan = make_plan(
        batches=({"count": 2}, {"ratio": 1.0}),
        canary=["t-0001"],
        represent={"by": ["tier"], "per_segment": 1},
    )
    result = plan_batches(plan, tenants)
    assert len(result.batches[0].tenants) == 2
    (gap,) = result.gaps
    assert gap.batch == 1
    assert gap.reason == (
        "batch 1 has 2 tenant(s) (1 taken by the canary cohort), too few for 3 segment(s) x "
        "per_segment 1"
    )
    assert gap.segment not in dict(result.batches[0].segments)


def test_through_batch_zero_only_declares_the_segments():
    plan = make_plan(
        batches=({"ratio": 0.1}, {"ratio": 1.0}),
        order=[{"label": "tier", "values": ["gold", "silver", "bronze"]}],
        represent={"by": ["tier"], "through_batch": 0, "intended_gaps": True},
    )
    result = plan_batches(plan, fleet(60))
    assert result.gaps_intended
    assert {g.segment for g in result.gaps} == {"tier=silver", "tier=bronze"}
    assert result.as_dict()["gaps_intended"] is True


@st.composite
def represented(draw):
    count = draw(st.integers(min_value=1, max_value=200))
    labels = st.fixed_dictionaries(
        {"tier": st.sampled_from(TIERS), "region": st.sampled_from((*REGIONS, "apac"))}
    )
    tenants = [Tenant(f"t-{i}", draw(labels)) for i in range(count)]
    canary = draw(st.lists(st.sampled_from([t.id for t in tenants]), max_size=2, unique=True))
    plan = make_plan(
        batches=[{"ratio": r} for r in draw(ratios)],
        canary=canary,
        order=draw(st.sampled_from([[], ["tier"], [{"label": "region", "values": ["us"]}]])),
        seed=draw(st.text(min_size=1, max_size=8)),
        represent={
            "by": draw(st.sampled_from([["tier"], ["region"], ["tier", "region"]])),
            "per_segment": draw(st.integers(min_value=1, max_value=3)),
            "through_batch": draw(st.integers(min_value=1, max_value=3)),
        },
    )
    return plan, tenants


@settings(max_examples=150, deadline=None)
@given(represented())
def test_property_represented_batches_still_partition_the_selection_exactly(scenario):
    plan, tenants = scenario
    result = plan_batches(plan, tenants)
    assigned = [t for b in result.batches for t in b.tenants]
    assert sorted(assigned) == sorted(t.id for t in tenants)
    plain = plan_batches(
        plan.model_copy(update={"tenants": plan.tenants.model_copy(update={"represent": None})}),
        tenants,
    )
    assert [len(b.tenants) for b in result.batches] == [len(b.tenants) for b in plain.batches]
    assert result.batches[0].tenants[: len(plan.tenants.canary)] == tuple(plan.tenants.canary)


@settings(max_examples=150, deadline=None)
@given(represented())
def test_property_every_segment_left_appears_in_each_listed_batch_large_enough(scenario):
    plan, tenants = scenario
    spec = plan.tenants.represent
    labels = {t.id: t.labels for t in tenants}
    result = plan_batches(plan, tenants)
    earlier: set[str] = set()
    for batch in result.batches:
        if batch.index > spec.through_batch:
            break
        pool = [t for t in result.selected if t not in earlier]
        forced = len(plan.tenants.canary) if batch.index == 1 else 0
        free = len(batch.tenants) - forced
        segment = {t: tuple(labels[t][k] for k in spec.by) for t in pool}
        left = Counter(segment.values())
        have = Counter(segment[t] for t in batch.tenants[:forced])
        needed = sum(max(0, min(spec.per_segment, n) - have[s]) for s, n in left.items())
        held = Counter(segment[t] for t in batch.tenants)
        if needed <= free:  # large enough: every segment with tenants left is represented
            for s, n in left.items():
                assert held[s] >= min(spec.per_segment, n), (batch.index, s)
        else:  # too small: the planner says which segments it left out (or fell back)
            assert result.gaps or any(f"batch {batch.index} represents" in n for n in result.notes)
        earlier.update(batch.tenants)


@settings(max_examples=100, deadline=None)
@given(represented(), st.randoms(use_true_random=False))
def test_property_represented_planning_is_deterministic(scenario, rnd):
    plan, tenants = scenario
    shuffled = tenants[:]
    rnd.shuffle(shuffled)
    assert plan_batches(plan, tenants) == plan_batches(plan, shuffled)
