"""Gate evaluation: judging measurements against checks, and the verdict over a bake."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from powerx_upgrade.domain.decide import Action, decide
from powerx_upgrade.domain.gate import (
    GateInput,
    MonitoringError,
    Phase,
    TenantStats,
    evaluate,
    judge,
    metric_value,
    worst,
)
from powerx_upgrade.domain.models import GateSpec, Policy

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
BAKE = timedelta(minutes=10)


def gate(**overrides) -> GateSpec:
    spec = {
        "poke_interval": "30s",
        "signal_delay": "1m",
        "missing_data": {"after": "5m", "action": "pause"},
        "checks": [{"metric": "error_rate", "op": "<=", "limit": 0.05}],
    }
    spec.update(overrides)
    return GateSpec.model_validate(spec)


def stats(requests=1000, errors=10, latency=120.0, samples=10) -> TenantStats:
    return TenantStats(requests=requests, errors=errors, latency_p95_ms=latency, samples=samples)


def poke(minutes: float, batch, **kwargs) -> GateInput:
    return GateInput(
        now=T0 + timedelta(minutes=minutes), bake_started=T0, bake=BAKE, batch=batch, **kwargs
    )


def test_judge_compares_value_and_threshold():
    assert judge(0.05, "<=", 0.05) and not judge(0.05, "<", 0.05)
    assert judge(10, ">=", 10) and not judge(9.9, ">", 10)


def test_worst_ranks_phases():
    assert worst([Phase.PASS, Phase.INCONCLUSIVE, Phase.FAIL]) is Phase.FAIL
    assert worst([Phase.FAIL, Phase.ROLLBACK_REQUESTED]) is Phase.ROLLBACK_REQUESTED
    assert worst([]) is Phase.PASS


def test_error_rate_pools_over_requests():
    assert metric_value("error_rate", [stats(1000, 10), stats(3000, 90)]) == pytest.approx(0.025)
    assert metric_value("error_rate", [stats(samples=0)]) is None


def test_gate_fails_when_error_rate_exceeds_limit_in_bake_window():
    result = evaluate(gate(), poke(3, {"t-1": stats(errors=90), "t-2": stats(errors=60)}))
    assert result.phase is Phase.FAIL
    measured = result.measurements[0]
    assert measured.value == pytest.approx(0.075) and measured.threshold == 0.05
    assert measured.phase is Phase.FAIL


def test_gate_keeps_baking_while_checks_hold():
    assert evaluate(gate(), poke(5, {"t-1": stats()})).phase is Phase.RUNNING


def test_gate_passes_only_once_data_covers_the_whole_bake():
    # bake 10m + signal_delay 1m: at 10m the data reaches only 9m.
    assert evaluate(gate(), poke(10, {"t-1": stats()})).phase is Phase.RUNNING
    assert evaluate(gate(), poke(11, {"t-1": stats()})).phase is Phase.PASS


def test_gate_never_passes_without_data():
    result = evaluate(gate(missing_data={"after": "30m"}), poke(20, {}))
    assert result.phase is Phase.NO_DATA and not result.has_data


def test_missing_data_after_the_timeout_is_no_data_even_mid_bake():
    early = evaluate(gate(), poke(5.5, {}))
    assert early.phase is Phase.RUNNING
    late = evaluate(gate(), poke(6, {}))
    assert late.phase is Phase.NO_DATA and "no monitoring data for 5m00s" in late.reason


def test_data_that_stops_arriving_counts_as_missing():
    last = T0 + timedelta(minutes=1)
    result = evaluate(gate(), poke(7, {"t-1": stats()}, last_data_at=last))
    assert result.phase is Phase.NO_DATA


def test_too_few_samples_end_inconclusive():
    spec = gate(checks=[{"metric": "error_rate", "op": "<=", "limit": 0.05, "min_samples": 50}])
    result = evaluate(spec, poke(12, {"t-1": stats(samples=20)}))
    assert result.phase is Phase.INCONCLUSIVE
    assert result.measurements[0].detail == "20 of 50 samples"


def test_failure_limit_tolerates_earlier_failures():
    spec = gate(failure_limit=1)
    bad = {"t-1": stats(errors=100)}
    first = evaluate(spec, poke(2, bad))
    assert first.phase is Phase.RUNNING and first.failures == 1
    assert evaluate(spec, poke(3, bad, failures_so_far=first.failures)).phase is Phase.FAIL


def test_relative_limit_against_pre_upgrade_baseline():
    spec = gate(
        checks=[
            {
                "metric": "latency_p95_ms",
                "op": "<=",
                "limit": "+20%",
                "baseline": "pre_upgrade",
                "scope": "per_tenant",
                "max_breaching_tenants": 1,
            }
        ]
    )
    baseline = {"t-1": stats(latency=100), "t-2": stats(latency=100), "t-3": stats(latency=100)}
    one_slow = {"t-1": stats(latency=130), "t-2": stats(latency=110), "t-3": stats(latency=119)}
    result = evaluate(spec, poke(11, one_slow, pre_upgrade=baseline))
    assert result.phase is Phase.PASS
    assert [m.phase for m in result.measurements] == [Phase.FAIL, Phase.PASS, Phase.PASS]
    assert result.measurements[0].threshold == pytest.approx(120)
    two_slow = {**one_slow, "t-2": stats(latency=125)}
    assert evaluate(spec, poke(3, two_slow, pre_upgrade=baseline)).phase is Phase.FAIL


def test_relative_limit_against_control_group():
    spec = gate(
        checks=[
            {
                "metric": "error_rate",
                "op": "<=",
                "limit": "+50%",
                "baseline": "control",
                "scope": "cumulative",
            }
        ]
    )
    control = {"c-1": stats(errors=10), "c-2": stats(errors=10)}
    ok = evaluate(
        spec,
        poke(11, {"t-1": stats(errors=14)}, cumulative={"t-1": stats(errors=14)}, control=control),
    )
    assert ok.phase is Phase.PASS and ok.measurements[0].threshold == pytest.approx(0.015)
    bad = evaluate(
        spec,
        poke(3, {"t-1": stats(errors=16)}, cumulative={"t-1": stats(errors=16)}, control=control),
    )
    assert bad.phase is Phase.FAIL


def test_missing_baseline_is_inconclusive_not_a_pass():
    spec = gate(
        checks=[{"metric": "error_rate", "op": "<=", "limit": "+50%", "baseline": "pre_upgrade"}]
    )
    result = evaluate(spec, poke(11, {"t-1": stats()}))
    assert result.phase is Phase.INCONCLUSIVE
    assert "no pre_upgrade baseline" in result.measurements[0].detail


def test_operator_request_wins():
    result = evaluate(gate(), poke(3, {"t-1": stats()}, operator_request=Phase.ROLLBACK_REQUESTED))
    assert result.phase is Phase.ROLLBACK_REQUESTED


def test_evaluation_serialises_to_plain_json():
    import json

    result = evaluate(gate(), poke(11, {"t-1": stats()}))
    document = json.loads(json.dumps(result.as_dict()))
    assert document["phase"] == "pass"
    assert document["measurements"][0]["value"] == pytest.approx(0.01)


# -- coverage: silence is not health -------------------------------------------------------------

PER_TENANT = {
    "metric": "latency_p95_ms",
    "op": "<=",
    "limit": "+20%",
    "baseline": "pre_upgrade",
    "scope": "per_tenant",
    "max_breaching_tenants": 0,
}


def test_a_tenant_silent_since_its_upgrade_fails_a_per_tenant_check():
    spec = gate(checks=[PER_TENANT])
    data = poke(
        3,
        {"t-1": stats()},
        expected=["t-1", "t-2"],
        reporting=frozenset({"t-1"}),
        pre_upgrade={"t-1": stats(), "t-2": stats(samples=6)},
    )
    result = evaluate(spec, data)
    assert result.phase is Phase.FAIL
    silent = next(m for m in result.measurements if m.tenant == "t-2")
    assert silent.phase is Phase.FAIL and silent.value is None
    assert silent.detail == "silent since its upgrade (6 samples before it)"


def test_a_silent_tenant_without_history_is_not_blamed_but_blocks_the_pass():
    spec = gate(checks=[PER_TENANT])
    data = poke(
        11,
        {"t-1": stats()},
        expected=["t-1", "t-2"],
        reporting=frozenset({"t-1"}),
        pre_upgrade={"t-1": stats()},
        last_data_at=T0 + timedelta(minutes=9),
    )
    result = evaluate(spec, data)
    assert result.phase is Phase.NO_DATA
    assert result.reason == "the bake ended with no data from 1 of 2 tenants (t-2; 2 must report)"
    assert next(m for m in result.measurements if m.tenant == "t-2").phase is Phase.INCONCLUSIVE


def test_silence_right_after_the_bake_starts_is_not_yet_judged():
    spec = gate(checks=[PER_TENANT])
    data = GateInput(
        now=T0 + timedelta(seconds=65),  # horizon 5 s into the bake: within the silence grace
        bake_started=T0,
        bake=BAKE,
        batch={},
        expected=["t-1"],
        reporting=frozenset(),
        pre_upgrade={"t-1": stats()},
    )
    result = evaluate(spec, data)
    assert result.phase is Phase.RUNNING
    assert result.measurements[0].phase is Phase.INCONCLUSIVE


def test_the_gate_never_passes_while_required_tenants_are_silent():
    healthy = {f"t-{i}": stats() for i in range(1, 10)}
    expected = [f"t-{i}" for i in range(1, 11)]  # t-10 sends nothing
    reporting = frozenset(healthy)
    result = evaluate(gate(), poke(11, healthy, expected=expected, reporting=reporting))
    assert result.phase is Phase.NO_DATA and "t-10" in result.reason
    assert result.coverage[0].silent == ("t-10",) and result.coverage[0].required == 10
    row = next(m for m in result.measurements if m.metric == "coverage")
    assert (row.value, row.threshold, row.samples) == (9.0, 10.0, 10)
    lowered = evaluate(
        gate(min_coverage="90%"), poke(11, healthy, expected=expected, reporting=reporting)
    )
    assert lowered.phase is Phase.PASS


def test_a_check_may_ask_for_less_coverage_than_the_gate():
    check = {"metric": "error_rate", "op": "<=", "limit": 0.05, "min_coverage": 0.5}
    healthy = {"t-1": stats()}
    data = poke(11, healthy, expected=["t-1", "t-2"], reporting=frozenset(healthy))
    assert evaluate(gate(checks=[check]), data).phase is Phase.PASS


def test_a_coverage_shortfall_lasting_missing_data_after_is_no_data_before_the_bake_ends():
    healthy = {"t-1": stats()}
    data = poke(
        7, healthy, expected=["t-1", "t-2"], reporting=frozenset(healthy), last_data_at=None
    )
    result = evaluate(gate(), data)  # horizon 6 min into the bake, short since its start
    assert result.phase is Phase.NO_DATA
    assert result.reason == (
        "no data from 1 of 2 tenants (t-2; 2 must report) for 6m00s (missing_data.after 5m00s)"
    )


# -- monitoring errors ----------------------------------------------------------------------------


def failing(kind: str, consecutive: int) -> MonitoringError:
    return MonitoringError(kind, "HTTP 401 unauthorized", consecutive, consecutive)


def test_a_refused_query_is_an_error_verdict_at_once():
    result = evaluate(gate(), poke(3, {}, monitoring_error=failing("refused", 1)))
    assert result.phase is Phase.ERROR and "refused" in result.reason
    assert result.as_dict()["errors"]["kind"] == "refused"


def test_transient_errors_are_retried_until_the_streak_reaches_the_limit():
    spec = gate(error={"consecutive": 3, "action": "rollback"})
    below = evaluate(spec, poke(3, {}, monitoring_error=failing("unavailable", 2)))
    assert below.phase is Phase.RUNNING and "2 of 3" in below.reason
    at = evaluate(spec, poke(3, {}, monitoring_error=failing("unavailable", 3)))
    assert at.phase is Phase.ERROR and "3 poke(s) in a row" in at.reason


def test_an_error_verdict_follows_the_error_action():
    spec = gate(error={"action": "rollback"})
    policy = Policy.model_validate(
        {"batches": [{"ratio": 1.0, "bake": "1m"}], "gate": spec.model_dump(mode="json")}
    )
    assert decide(Phase.ERROR, policy).action is Action.ROLLBACK
    assert decide("error", policy.model_copy(update={"gate": gate()})).action is Action.PAUSE


# -- control baseline at the last batch -----------------------------------------------------------


def test_a_control_check_falls_back_to_the_pre_upgrade_baseline_without_a_control_group():
    check = {
        "metric": "error_rate",
        "op": "<=",
        "limit": "+50%",
        "baseline": "control",
        "scope": "cumulative",
    }
    upgraded = {"t-1": stats(errors=12)}
    data = poke(
        11,
        upgraded,
        cumulative=upgraded,
        pre_upgrade={"t-1": stats(errors=10)},
        has_control=False,
    )
    result = evaluate(gate(checks=[check]), data)
    measured = result.measurements[0]
    assert measured.threshold == pytest.approx(0.015) and measured.phase is Phase.PASS
    assert "pre_upgrade baseline instead" in measured.detail
    assert result.phase is Phase.PASS
    with_group = evaluate(gate(checks=[check]), poke(11, upgraded, cumulative=upgraded))
    assert with_group.measurements[0].phase is Phase.INCONCLUSIVE  # a silent control group
