"""Verdicts in words (exact sentences) and where a failure concentrates (properties)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from powerx_upgrade.domain.gate import TenantStats, judge, metric_value
from powerx_upgrade.domain.verdicts import (
    Segment,
    breaching_sentence,
    concentration,
    describe,
    format_value,
    shared_labels,
)


def m(metric="error_rate", value=0.0936, threshold=0.05, *, check=0, **kw):
    base = {
        "check": check,
        "metric": metric,
        "scope": "batch",
        "op": "<=",
        "limit": str(threshold),
        "threshold": threshold,
        "value": value,
        "samples": 30,
        "phase": "fail",
        "tenant": None,
        "detail": "",
    }
    return {**base, **kw}


def test_a_failing_rate_says_metric_value_limit_samples_and_batch():
    evaluation = {"phase": "fail", "reason": "check(s) 0 failed", "measurements": [m()]}
    assert (
        describe(evaluation, 3, "rest")
        == "error_rate 9.36 % > limit 5.00 % over 30 samples in batch 3 (rest)"
    )


def test_a_failing_per_tenant_check_names_the_worst_tenant_the_baseline_and_how_many_more():
    def lat(tenant, value, base):
        return m(
            "latency_p95_ms",
            value,
            base * 1.2,
            check=1,
            scope="per_tenant",
            tenant=tenant,
            limit="+20%",
            detail=f"baseline {base:.6g} +20%",
        )

    measurements = [
        lat("t-0003", 160, 125),
        lat("t-0007", 180, 125),
        lat("t-0009", 170, 130),
        lat("t-0011", 155, 120),
        {**lat("t-0012", 120, 125), "phase": "pass"},
    ]
    evaluation = {"phase": "fail", "measurements": [m(phase="pass", value=0.01), *measurements]}
    assert describe(evaluation, 2, "early", baselines={1: "pre_upgrade"}) == (
        "latency_p95_ms 180 ms > limit 150 ms (+20 % on pre_upgrade 125 ms) "
        "on t-0007, t-0009, t-0011 and 1 more in batch 2 (early)"
    )


def test_a_segment_is_appended_to_the_failure():
    segment = Segment((("tier", "bronze"),), "error_rate", 0.094, 0.012, 12, 30, 4000, 0.05)
    evaluation = {"phase": "fail", "measurements": [m()]}
    assert describe(evaluation, 3, "rest", segment).endswith(
        "in batch 3 (rest); concentrated in tier=bronze: 9.4 % vs 1.2 % elsewhere"
    )


def test_a_pass_says_every_check_held_with_the_closest_call():
    evaluation = {
        "phase": "pass",
        "measurements": [
            m(value=0.012, phase="pass", samples=600),
            m("latency_p95_ms", 131, 150, check=1, scope="per_tenant", tenant="t-1", phase="pass"),
            m("latency_p95_ms", 140, 150, check=1, scope="per_tenant", tenant="t-2", phase="pass"),
        ],
    }
    assert describe(evaluation, 1, None) == (
        "every check held in batch 1: error_rate 1.20 % <= 5.00 % over 600 samples, "
        "latency_p95_ms 140 ms <= 150 ms (closest: t-2 of 2)"
    )


def test_no_data_names_the_silent_tenants_from_coverage_and_for_how_long():
    evaluation = {
        "phase": "no_data",
        "reason": "no monitoring data for 5m00s (missing_data.after 5m00s)",
        "measurements": [],
        "coverage": [
            {
                "check": 0,
                "metric": "error_rate",
                "reporting": 9,
                "required": 12,
                "expected": 12,
                "silent": ["t-3", "t-1", "t-2"],
            }
        ],
    }
    assert describe(evaluation, 2, "wide") == (
        "no data from 3 of 12 tenants (t-1, t-2, t-3) for 5m00s in batch 2 (wide)"
    )


def test_no_data_without_coverage_keeps_the_reason_and_says_where():
    evaluation = {"phase": "no_data", "reason": "the bake ended without monitoring data"}
    assert describe(evaluation, 1, "canary") == (
        "the bake ended without monitoring data in batch 1 (canary)"
    )


def test_inconclusive_says_which_check_is_undecided_and_why():
    evaluation = {
        "phase": "inconclusive",
        "measurements": [
            m(value=0.01, phase="pass"),
            m(
                "latency_p95_ms",
                130,
                None,
                check=1,
                scope="per_tenant",
                tenant="t-4",
                phase="inconclusive",
                detail="no pre_upgrade baseline for latency_p95_ms",
            ),
        ],
    }
    assert describe(evaluation, 4, None) == (
        "latency_p95_ms undecided: no pre_upgrade baseline for latency_p95_ms (on t-4) in batch 4"
    )


def test_an_error_says_what_failed_at_the_monitoring_source():
    evaluation = {
        "phase": "error",
        "reason": "monitoring error",
        "errors": {"consecutive": 4, "total": 5, "last": "HTTP 401 from /internal/monitoring"},
    }
    assert describe(evaluation, 1, "canary") == (
        "the monitoring source failed: HTTP 401 from /internal/monitoring (4 in a row, 5 in all); "
        "batch 1 (canary) was not judged"
    )


def test_a_deploy_failure_names_the_failed_tenants():
    failed = m("failed_deploys", 3.0, 1.0, check=-1, limit="1", samples=10, detail="t-1, t-2, t-3")
    assert describe({"phase": "fail", "measurements": [failed]}, 1, "canary") == (
        "3 deploys failed > max_failed 1 (allows 1; 10 planned): t-1, t-2, t-3 in batch 1 (canary)"
    )


@pytest.mark.parametrize(
    ("metric", "value", "text"),
    [("error_rate", 0.05, "5.00 %"), ("latency_p95_ms", 149.6, "150 ms"), ("requests", 12.0, "12")],
)
def test_values_read_as_percent_ms_or_plain(metric, value, text):
    assert format_value(metric, value) == text


# -- concentration ----------------------------------------------------------------------------


def stats(rate: float, requests: int = 1000) -> TenantStats:
    return TenantStats(requests, round(rate * requests), 120.0, requests // 10)


def test_the_bad_tier_is_named_with_its_rate_against_the_rest():
    labels = {f"t-{i}": {"tier": "bronze" if i < 4 else "gold", "region": "eu"} for i in range(10)}
    found = {t: stats(0.094 if lab["tier"] == "bronze" else 0.012) for t, lab in labels.items()}
    segment = concentration("error_rate", "<=", 0.05, found, labels)
    assert segment is not None
    assert segment.sentence() == "concentrated in tier=bronze: 9.4 % vs 1.2 % elsewhere"
    assert (segment.tenants, segment.rest_tenants) == (4, 6)


def test_one_noisy_tenant_is_no_segment():
    labels = {f"t-{i}": {"tier": "gold" if i else "bronze"} for i in range(6)}
    found = {t: stats(0.5 if t == "t-0" else 0.01) for t in labels}
    assert concentration("error_rate", "<=", 0.05, found, labels) is None


def test_a_failure_everywhere_concentrates_nowhere():
    labels = {f"t-{i}": {"tier": "gold" if i % 2 else "bronze"} for i in range(8)}
    found = {t: stats(0.09) for t in labels}
    assert concentration("error_rate", "<=", 0.05, found, labels) is None


def test_two_labels_are_named_when_they_are_much_sharper_than_one():
    labels = {}
    found = {}
    for i in range(16):
        tier, region = ("bronze" if i % 2 else "gold"), ("eu" if i % 4 < 2 else "us")
        labels[f"t-{i:02d}"] = {"tier": tier, "region": region}
        found[f"t-{i:02d}"] = stats(0.12 if (tier, region) == ("bronze", "eu") else 0.01)
    segment = concentration("error_rate", "<=", 0.05, found, labels)
    # region=eu alone breaks the limit too (6.5 %), but the pair's gap is twice as large
    assert segment is not None and segment.name == "region=eu, tier=bronze"
    assert segment.sentence() == (
        "concentrated in region=eu, tier=bronze: 12.0 % vs 1.0 % elsewhere"
    )


def test_a_single_label_wins_over_a_pair_that_is_not_much_sharper():
    labels = {f"t-{i}": {"tier": "bronze" if i < 4 else "gold", "region": "eu"} for i in range(8)}
    labels["t-0"]["region"] = labels["t-4"]["region"] = "us"
    found = {t: stats(0.09 if lab["tier"] == "bronze" else 0.01) for t, lab in labels.items()}
    segment = concentration("error_rate", "<=", 0.05, found, labels)
    assert segment is not None and segment.name == "tier=bronze"


def test_a_relative_limit_is_resolved_per_segment():
    labels = {f"t-{i}": {"tier": "bronze" if i < 3 else "gold"} for i in range(6)}
    found = {
        t: TenantStats(100, 1, 200.0 if labels[t]["tier"] == "bronze" else 130.0, 10)
        for t in labels
    }
    segment = concentration("latency_p95_ms", "<=", lambda ts: 125.0 * 1.2, found, labels)
    assert segment is not None and segment.name == "tier=bronze"
    assert segment.sentence() == "concentrated in tier=bronze: 200 ms vs 130 ms elsewhere"


tenant_ids = st.lists(
    st.text("abcdefgh0123456789-", min_size=1, max_size=6), min_size=2, max_size=14, unique=True
)
label_values = st.sampled_from(["a", "b", "c"])


@st.composite
def fleets(draw):
    """Tenants with two labels each and random request counts, error rates and samples."""
    ids = draw(tenant_ids)
    labels = {t: {"tier": draw(label_values), "region": draw(label_values)} for t in ids}
    found = {}
    for t in ids:
        requests = draw(st.integers(1, 500))
        rate = draw(st.floats(0, 0.3, allow_nan=False))
        found[t] = TenantStats(requests, round(requests * rate), None, draw(st.integers(0, 20)))
    return labels, found


@settings(max_examples=200, deadline=None)
@given(fleets(), st.floats(0.01, 0.2))
def test_a_named_segment_breaks_the_limit_while_the_rest_holds(fleet, limit):
    labels, found = fleet
    segment = concentration("error_rate", "<=", limit, found, labels, min_samples=5)
    if segment is None:
        return
    inside = [t for t, s in found.items() if s.samples > 0 and _member(labels[t], segment)]
    outside = [t for t, s in found.items() if s.samples > 0 and t not in inside]
    assert len(inside) == segment.tenants >= 2 and len(outside) == segment.rest_tenants >= 1
    assert segment.samples == sum(found[t].samples for t in inside) >= 5
    assert segment.value == metric_value("error_rate", [found[t] for t in inside])
    assert segment.rest == metric_value("error_rate", [found[t] for t in outside])
    assert not judge(segment.value, "<=", limit) and judge(segment.rest, "<=", limit)


@settings(max_examples=200, deadline=None)
@given(fleets(), st.floats(0.01, 0.2))
def test_concentration_ignores_the_order_of_tenants(fleet, limit):
    labels, found = fleet
    backwards = dict(reversed(list(found.items())))
    assert concentration("error_rate", "<=", limit, found, labels) == concentration(
        "error_rate", "<=", limit, backwards, labels
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=4, max_size=20),
    st.sampled_from(["a", "b", "c", "d"]),
    st.integers(0, 3),
)
def test_a_planted_bad_group_is_found_exactly(tiers, bad, noise):
    """Bad tenants at 10 %, the rest at 1 %: the segment is exactly the bad tenants, whatever
    label happens to name them (pooled rates of any other set lie strictly in between)."""
    ids = [f"t-{i:02d}" for i in range(len(tiers))]
    labels = {
        t: {"tier": tier, "noise": str((i * 7 + noise) % 3)}
        for i, (t, tier) in enumerate(zip(ids, tiers, strict=True))
    }
    found = {t: stats(0.10 if labels[t]["tier"] == bad else 0.01) for t in ids}
    bad_ids = {t for t in ids if labels[t]["tier"] == bad}
    segment = concentration("error_rate", "<=", 0.05, found, labels)
    if len(bad_ids) < 2 or len(bad_ids) == len(ids):
        assert segment is None or {t for t in ids if _member(labels[t], segment)} != set(ids)
        return
    assert segment is not None
    assert {t for t in ids if _member(labels[t], segment)} == bad_ids


def _member(own: dict[str, str], segment: Segment) -> bool:
    return all(own.get(k) == v for k, v in segment.labels)


def test_the_labels_breaching_tenants_share_name_the_segment_of_a_small_failure():
    labels = {
        "t-1": {"tier": "bronze", "region": "eu"},
        "t-2": {"tier": "bronze", "region": "us"},
        "t-3": {"tier": "gold", "region": "eu"},
    }
    assert shared_labels(["t-1", "t-2"], labels) == (("tier", "bronze"),)
    assert shared_labels(["t-1"], labels) == (("region", "eu"), ("tier", "bronze"))
    assert shared_labels(["t-1", "t-3"], labels) == (("region", "eu"),)
    assert shared_labels(["t-2", "t-3"], labels) == ()
    assert shared_labels(["t-9"], labels) == ()
    assert breaching_sentence(["t-1"], (("tier", "bronze"),)) == (
        "the failing tenant is tier=bronze (t-1)"
    )
    assert breaching_sentence(["t-2", "t-1"], (("tier", "bronze"),)) == (
        "the failing tenants share tier=bronze (t-1, t-2)"
    )
    assert breaching_sentence(["t-1"], ()) == ""
