"""Policy backtest: recorded pokes evaluated again by the live gate's code, edited policies,
and the result in words (exact lines)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from powerx_upgrade.domain.backtest import (
    EditError,
    RecordedBatch,
    RecordedPoke,
    RecordedRun,
    edit_policy,
    replay_run,
    run_lines,
)
from powerx_upgrade.domain.gate import GateInput, TenantStats, evaluate
from powerx_upgrade.domain.models import Policy
from powerx_upgrade.domain.replay import BUDGET, TENANT_CAP, input_from_json, input_json

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
TENANTS = ("t-1", "t-2", "t-3", "t-4")
POLICY = Policy.model_validate(
    {
        "batches": [
            {"name": "canary", "ratio": 0.5, "bake": "10m"},
            {"name": "rest", "ratio": 1.0, "bake": "10m"},
        ],
        "gate": {
            "poke_interval": "1m",
            "signal_delay": "1m",
            "checks": [{"metric": "error_rate", "op": "<=", "limit": 0.05, "scope": "batch"}],
        },
    }
)


def stats(rate: float, requests: int = 1000) -> TenantStats:
    return TenantStats(requests=requests, errors=round(rate * requests), samples=10)


def poke_input(start: datetime, minutes: int, rate: float, tenants=TENANTS[:2]) -> GateInput:
    batch = {t: stats(rate) for t in tenants}
    return GateInput(
        now=start + timedelta(minutes=minutes),
        bake_started=start,
        bake=timedelta(minutes=10),
        batch=batch,
        cumulative=batch,
        expected=list(tenants),
        cumulative_expected=list(tenants),
        reporting=frozenset(tenants),
        has_control=True,
        silence_grace=timedelta(minutes=1),
    )


def recorded(start: datetime, index: int, rates: list[float], live: str, tenants) -> RecordedBatch:
    pokes = tuple(
        RecordedPoke(start + timedelta(minutes=m), input_json(poke_input(start, m, r, tenants)))
        for m, r in enumerate(rates, start=1)
    )
    return RecordedBatch(index, pokes, live, "live reason", pokes[-1].at)


# batch 1 bakes from 02:00 at 2 % and passes at 02:11; batch 2 from 02:20 climbs to 6 % and
# fails at 02:24 (its 4th poke)
RUN = RecordedRun(
    run_id="manual__1",
    plan_id="crm",
    outcome="rolled_back",
    planned=(1, 2),
    batches=(
        recorded(T0, 1, [0.02] * 11, "pass", TENANTS[:2]),
        recorded(T0 + timedelta(minutes=20), 2, [0.01, 0.02, 0.04, 0.06], "fail", TENANTS[2:]),
    ),
    pre_upgrade={},
)


def lines(*edits: str, run: RecordedRun = RUN) -> list[str]:
    policy, done = edit_policy(POLICY, "standard", list(edits))
    return run_lines(run, "crm", "standard", done, replay_run(policy, run, {}))


def test_the_policy_as_it_is_gives_back_the_live_verdicts_at_the_same_pokes():
    assert lines() == [
        "run manual__1, outcome rolled_back: policy standard as it is now (times UTC)",
        "  batch 1 canary: would have passed at 02:11:00 (every check held over the bake), "
        "as it did",
        "  batch 2 rest: would have failed at 02:24:00 (error_rate 0.06, limit <= 0.05; "
        "check(s) 0 failed; 1 failed evaluation(s) > failure_limit 0), as it did",
    ]


def test_a_tighter_limit_fails_batch_1_at_its_first_poke_over_it():
    assert lines("policies.standard.gate.checks[0].limit=0.01") == [
        "run manual__1, outcome rolled_back: policy standard with gate.checks[0].limit 0.05 -> "
        "0.01 (times UTC)",
        "  batch 1 canary: would have failed at 02:01:00 (error_rate 0.02, limit <= 0.01; "
        "check(s) 0 failed; 1 failed evaluation(s) > failure_limit 0); it passed at 02:11:00",
        "  batch 2 rest: would have failed at 02:22:00 (error_rate 0.02, limit <= 0.01; "
        "check(s) 0 failed; 1 failed "
        "evaluation(s) > failure_limit 0); it failed at 02:24:00 (the backtest's run would have "
        "stopped at batch 1)",
    ]


def test_a_limit_of_3_percent_fails_batch_2_a_poke_earlier():
    assert lines("policy.gate.checks[0].limit='3%'")[2] == (
        "  batch 2 rest: would have failed at 02:23:00 (error_rate 0.04, limit <= 0.03; "
        "check(s) 0 failed; 1 failed evaluation(s) > failure_limit 0); it failed at 02:24:00"
    )


def test_a_looser_limit_leaves_batch_2_undecided_where_the_live_gate_stopped():
    assert lines("policies.standard.gate.checks[0].limit=0.1")[2] == (
        "  batch 2 rest: no verdict by 02:24:00, where the recorded series ends; it failed at "
        "02:24:00; the edited gate would have gone on"
    )


def test_a_shorter_bake_passes_batch_1_earlier():
    assert lines("policies.standard.batches[0].bake=5m")[1] == (
        "  batch 1 canary: would have passed at 02:06:00 (every check held over the bake); it "
        "passed at 02:11:00"
    )


def test_pokes_recorded_without_their_input_are_named_not_guessed():
    old = RecordedBatch(
        1, tuple(RecordedPoke(T0 + timedelta(minutes=m), None) for m in (1, 2, 3)), "pass", "", T0
    )
    capped = RecordedBatch(
        2,
        (RecordedPoke(T0, {"v": 1, "omitted": "900 tenant entries (the cap is 500 per poke)"}),),
        "fail",
        "",
        T0,
    )
    run = RecordedRun("old", "other-plan", None, (1, 2, 3), (old, capped), {})
    assert lines(run=run) == [
        "run old (a run of plan other-plan), outcome none yet: policy standard as it is now "
        "(times UTC)",
        "  batch 1 canary: cannot replay: 3 of 3 poke(s) were recorded without their input "
        "(recorded before the backtest existed); it passed at 02:00:00",
        "  batch 2 rest: cannot replay: 1 of 1 poke(s) were recorded without their input "
        "(900 tenant entries (the cap is 500 per poke)); it failed at 02:00:00",
        "  batch 3 batch_3: cannot replay: never ran: the run ended before it",
    ]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("gate.checks[0].limit=0.1", "a path starts with policies.standard. (or policy.)"),
        ("policies.other.gate.failure_limit=1", "the plan's policy is 'standard'"),
        ("policy.gate.checks[3].limit=0.1", "gate.checks[3]: no such entry (there are 1)"),
        ("policy.gate.chekcs[0].limit=0.1", "gate.chekcs: no such field"),
        ("policy.gate.failure_limit=-1", "policy standard: gate.failure_limit: Input should be"),
        ("policy.gate.failure_limit", "expected PATH=VALUE"),
    ],
)
def test_an_edit_that_does_not_fit_the_policy_is_refused_naming_it(edit, message):
    with pytest.raises(EditError, match=re.escape(message)):
        edit_policy(POLICY, "standard", [edit])


def test_a_recorded_input_evaluates_as_the_original_including_a_pooled_control_group():
    gate = Policy.model_validate(
        {
            "batches": [{"ratio": 1.0, "bake": "10m"}],
            "gate": {
                "checks": [
                    {
                        "metric": "latency_p95_ms",
                        "op": "<=",
                        "limit": "+10%",
                        "baseline": "control",
                        "scope": "per_tenant",
                        "max_breaching_tenants": 0,
                    },
                    {"metric": "queue", "op": "<=", "limit": "+10%", "baseline": "control"},
                    {"metric": "error_rate", "op": "<=", "limit": 0.05, "scope": "cumulative"},
                ]
            },
        }
    ).gate
    control = {
        "c-1": TenantStats(100, 1, 100.0, 5, {"queue": 10.0}),
        "c-2": TenantStats(300, 3, 140.0, 5, {"queue": 30.0}),
    }
    original = GateInput(
        now=T0 + timedelta(minutes=4),
        bake_started=T0,
        bake=timedelta(minutes=10),
        batch={"t-1": TenantStats(200, 2, 140.0, 5, {"queue": 33.0})},
        cumulative={
            "t-1": TenantStats(200, 2, 140.0, 5, {"queue": 33.0}),
            "t-0": TenantStats(500, 40, 90.0, 5),
        },
        control=control,
        pools={"queue": "max"},
        expected=["t-1"],
        cumulative_expected=["t-0", "t-1"],
        reporting=frozenset({"t-0", "t-1"}),
    )
    raw = input_json(original)
    again = input_from_json(
        raw,
        bake=original.bake,
        pre_upgrade={},
        pools={"queue": "max"},
        failures_so_far=0,
        last_data_at=None,
    )
    assert raw["control"]["queue"] == 30.0  # the max pool, folded
    first, second = evaluate(gate, original), evaluate(gate, again)
    assert first.phase == second.phase == "fail"
    assert [m.as_dict() for m in first.measurements] == [m.as_dict() for m in second.measurements]


def test_an_input_too_large_to_keep_says_so():
    many = tuple(f"t-{i}" for i in range(TENANT_CAP))
    assert input_json(poke_input(T0, 1, 0.0, many)) == {
        "v": 1,
        "omitted": f"{4 * TENANT_CAP} tenant entries (the cap is {TENANT_CAP} per poke)",
    }
    few = poke_input(T0, 1, 0.0)
    assert input_json(few, used=BUDGET - 1)["omitted"] == (
        f"8 tenant entries (the cap is {BUDGET} per gate)"
    )
