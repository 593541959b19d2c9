"""The rollout steps the DAG tasks call (one call each), on a real SQLite ledger without Airflow:
a batch's decision, the gate's verdict and its events, a human answer, the window's freeze, the
batch and late rollbacks' verification and records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from powerx_upgrade.domain.decide import Action
from powerx_upgrade.domain.gate import GateEvaluation, Phase
from powerx_upgrade.domain.measurement import Measurement, TenantStats
from powerx_upgrade.domain.models import Plan, Policy, SourceRef, TenantSelection
from powerx_upgrade.domain.planner import Tenant, plan_batches
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.rollout import gate_steps, human, metrics, rollback, run_steps, window
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.record import Recorder
from powerx_upgrade.rollout.services import Services

pytestmark = pytest.mark.unit

POLICY = Policy.model_validate(
    {
        "batches": [
            {"name": "canary", "ratio": 0.1, "bake": "10s", "approval": "required"},
            {"ratio": 1.0, "bake": "20s"},
        ],
        "gate": {"checks": [{"metric": "error_rate", "op": "<=", "limit": 0.05}]},
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
CTX = RunContext(
    run_id="run-1",
    dag_id="plugin_upgrade__crm",
    plan_id="crm",
    plugin="crm-sync",
    target_version="2.4.0",
    triggered_by="release-bot",
)


class Sent:
    """Notifications and metrics, as sent."""

    def __init__(self) -> None:
        self.notes: list[dict[str, Any]] = []
        self.metrics: list[tuple[str, str, float]] = []

    def send(self, notification: dict[str, Any]) -> dict[str, Any]:
        self.notes.append(notification)
        return {}

    def count(self, name: str, tags: dict[str, str]) -> None:
        self.metrics.append(("count", name, 1))

    def gauge(self, name: str, value: float, tags: dict[str, str]) -> None:
        self.metrics.append(("gauge", name, value))

    def timing(self, name: str, milliseconds: float, tags: dict[str, str]) -> None:
        self.metrics.append(("timing", name, milliseconds))


class Platform:
    """A platform whose tenants are all back on 2.3.0 except `stuck`."""

    def __init__(self, stuck: str | None = None) -> None:
        self.stuck = stuck

    def list_tenants(self, plugin: str) -> list[dict[str, Any]]:
        return [
            {"id": f"t-{i:02d}", "version": "2.4.0" if f"t-{i:02d}" == self.stuck else "2.3.0"}
            | {"state": "ready"}
            for i in range(20)
        ]


@pytest.fixture
def sent() -> Sent:
    return Sent()


@pytest.fixture
def services(tmp_path: Path, sent: Sent) -> Services:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.start_run(
        CTX.run_id,
        dag_id=CTX.dag_id,
        plan_id=CTX.plan_id,
        plugin=CTX.plugin,
        target_version=CTX.target_version,
    )
    fleet = [Tenant(f"t-{i:02d}") for i in range(20)]
    ledger.update_run(CTX.run_id, batches=[b.as_dict() for b in plan_batches(PLAN, fleet).batches])
    return Services(ledger, Recorder(ledger, None, sent), Platform(), sent)  # type: ignore[arg-type]


def events(services: Services) -> list[str]:
    return [r.event for r in services.ledger.audit_records(CTX.run_id)]


def failing(tenant: str) -> dict[str, Any]:
    check = {"metric": "error_rate", "op": "<=", "limit": 0.05, "value": 0.3, "phase": "fail"}
    return {"tenant": tenant, **check}


def test_a_failed_gate_is_decided_rollback_with_its_breaching_tenants_recorded(services):
    verdict = {
        "phase": "fail",
        "reason": "error_rate 0.3 > 0.05",
        "measurements": [failing("t-01")],
    }
    action = run_steps.decide_batch(services, PLAN, CTX, 1, verdict)
    assert action is Action.ROLLBACK
    [decision] = services.ledger.decisions(CTX.run_id)
    assert (decision.kind, decision.decision, decision.actor, decision.via) == (
        "decide",
        "rollback",
        "policy",
        "auto",
    )
    assert decision.detail["breaching"] == ["t-01"]
    assert "batch.rollback" in events(services)


def test_the_gates_xcom_is_bounded_and_the_decision_reads_every_breaching_tenant_from_the_ledger(
    services,
):
    """A per-tenant check over a big batch measures every tenant: the XCom carries at most
    XCOM_MEASUREMENTS of them (batch-scope first, then failing), the ledger all of them, and
    the decision's breaching tenants (the `breaching` rollback scope) come from the ledger."""

    def row(tenant: str | None, value: float, phase: Phase) -> Measurement:
        scope = "per_tenant" if tenant else "batch"
        return Measurement(0, "error_rate", scope, "<=", "0.05", 0.05, value, 100, phase, tenant)

    batch_row = row(None, 0.2, Phase.FAIL)
    passing = [row(f"t-p{n:04d}", 0.01, Phase.PASS) for n in range(300)]
    breaching = [row(f"t-f{n:04d}", 0.3, Phase.FAIL) for n in range(120)]
    measured = (*passing, *breaching, batch_row)
    stats = {str(m.tenant): TenantStats(100, 1, 120.0, 100) for m in passing}
    evaluation = GateEvaluation(
        Phase.FAIL, "error_rate 0.2 > 0.05", measured, 121, True, per_tenant=stats
    )
    step = gate_steps.finish(services, PLAN, CTX, 1, evaluation, {"history": [{"phase": "fail"}]})
    carried = step.verdict
    assert carried is not None and carried["measurements_total"] == len(measured)
    assert len(carried["measurements"]) == gate_steps.XCOM_MEASUREMENTS
    assert carried["measurements"][0] == batch_row.as_dict()  # the batch-scope row first
    assert all(m["phase"] == "fail" for m in carried["measurements"])  # then failing tenants
    assert "per_tenant" not in carried  # 300 tenants' stats stay out of XCom
    [final] = services.ledger.gate_evaluations(CTX.run_id, 1, final_only=True)
    assert len(final.measurements) == len(measured)
    run_steps.decide_batch(services, PLAN, CTX, 1, carried)
    [decision] = services.ledger.decisions(CTX.run_id)
    assert decision.detail["breaching"] == sorted(str(m.tenant) for m in breaching)


def test_a_small_verdict_travels_whole(services):
    one = Measurement(0, "error_rate", "batch", "<=", "0.05", 0.05, 0.3, 100, Phase.FAIL)
    evaluation = GateEvaluation(Phase.FAIL, "error_rate 0.3 > 0.05", (one,), 1, True)
    step = gate_steps.finish(services, PLAN, CTX, 1, evaluation, {"history": []})
    assert step.verdict is not None
    assert step.verdict["measurements"] == [one.as_dict()]
    assert step.verdict["measurements_total"] == 1


def test_a_passed_gate_promotes_audited_under_the_policy(services, sent):
    action = run_steps.decide_batch(services, PLAN, CTX, 1, {"phase": "pass", "summary": "ok"})
    assert action is Action.PROMOTE
    [decision] = services.ledger.decisions(CTX.run_id)
    assert (decision.decision, decision.actor) == ("promote", "policy")
    assert "batch.promote" in events(services)
    assert sent.notes == []  # batch_promoted is not in the default notify.on


def test_the_verdict_is_recorded_with_its_earlier_pokes_audited_and_timed(services, sent):
    at = datetime(2026, 11, 30, 2, 0, tzinfo=UTC).isoformat()
    state = {"history": [{"phase": "pending", "checks": [], "at": at}, {"phase": "fail"}]}
    failed = GateEvaluation(Phase.FAIL, "error_rate 0.3 > 0.05", (), 1, False)
    step = gate_steps.finish(services, PLAN, CTX, 1, failed, state)
    assert step.verdict is not None and step.verdict["phase"] == "fail"
    assert step.verdict["pokes"] == 2 and step.verdict["batch"] == 1
    gates = services.ledger.gate_evaluations(CTX.run_id, 1)
    assert [(g.reason, g.final) for g in gates] == [("poke", False), (failed.reason, True)]
    assert "batch.gate.verdict" in events(services)


def test_a_broken_trigger_is_a_failed_gate_never_a_pass(services):
    step = gate_steps.on_event(services, PLAN, CTX, 1, {"status": "error", "message": "boom"})
    assert step.verdict is not None
    assert step.verdict["phase"] == "fail" and "the gate broke: boom" in step.verdict["reason"]


def test_an_operator_request_made_during_the_deploy_ends_the_gate_before_its_first_poke(services):
    asked = services.ledger.request_control(CTX.run_id, "pause", actor="bob", via="cli")
    step = gate_steps.first_poke(services, PLAN, CTX, 1, query=None)  # type: ignore[arg-type]
    assert step.verdict is not None and step.verdict["control"] == asked.id
    assert step.verdict["phase"] == Phase.PAUSE_REQUESTED.value
    assert services.ledger.get_control(asked.id).pending is False


def test_a_batch_whose_deploys_all_failed_fails_its_gate_without_a_poke(services):
    step = gate_steps.first_poke(services, PLAN, CTX, 1, query=None)  # type: ignore[arg-type]
    assert step.verdict is not None and step.verdict["phase"] == "fail"
    assert "deploys failed" in step.verdict["reason"] and step.verdict["pokes"] == 0


def test_an_api_answer_that_agrees_with_the_ui_names_its_operator_and_is_applied(services):
    control = services.ledger.request_control(
        CTX.run_id,
        "answer",
        actor="alice",
        via="cli",
        payload={"task_id": "batch_1.approve", "chosen": ["Approve"]},
    )
    answer = human.Answer("batch_1.approve", ["Approve"], "admin", "now", timed_out=False)
    human.record_answer(services, CTX, 1, answer, kind="approval", decision="approve")
    [decision] = services.ledger.decisions(CTX.run_id)
    assert (decision.actor, decision.via, decision.detail["control"]) == (
        "alice",
        "cli",
        control.id,
    )
    assert services.ledger.get_control(control.id).outcome == "applied"
    assert "batch.approval.answered" in events(services)


def test_an_api_answer_the_ui_contradicted_first_is_refused(services):
    control = services.ledger.request_control(
        CTX.run_id,
        "answer",
        actor="alice",
        via="api",
        payload={"task_id": "batch_1.pause", "chosen": ["Resume"]},
    )
    answer = human.Answer("batch_1.pause", ["Stop"], "bob", "now", timed_out=False)
    human.record_answer(services, CTX, 1, answer, kind="pause", decision="stop")
    [decision] = services.ledger.decisions(CTX.run_id)
    assert (decision.actor, decision.via, decision.decision) == ("bob", "ui", "stop")
    assert services.ledger.get_control(control.id).outcome == "refused"


def test_an_approval_asks_with_the_batch_size_and_a_batch_without_approval_goes_on(services, sent):
    prompt = human.ask_approval(services, PLAN, CTX, 1)
    assert prompt is not None and "**2 tenants**" in prompt.body
    assert [n["event"] for n in sent.notes] == ["plugin.version.gray.approval"]
    assert human.ask_approval(services, PLAN, CTX, 2) is None
    [decision] = services.ledger.decisions(CTX.run_id)
    assert (decision.decision, decision.actor) == ("not_required", "policy")


def test_the_approval_and_pause_texts_carry_each_finished_gate_in_words_and_the_tab_link(
    services, sent
):
    measured = {
        "check": 0,
        "metric": "error_rate",
        "op": "<=",
        "limit": "0.05",
        "threshold": 0.05,
        "value": 0.012,
        "samples": 840,
        "phase": "pass",
    }
    services.ledger.record_gate(
        CTX.run_id, 1, phase="pass", reason="within limits", measurements=[measured], final=True
    )
    url = "http://airflow/dags/d/runs/r/plugin/powerx-rollout"
    prompt = human.ask_approval(services, PLAN, CTX, 1, url)
    assert prompt is not None
    assert (
        "- Batch 1 (canary, 2 tenants) passed its gate: error_rate 1.20% (limit <= 5.00%, "
        "840 samples): pass. Verdict: within limits"
    ) in prompt.body.splitlines()
    assert f"[Rollout tab]({url})" in prompt.body
    paused = human.ask_pause(services, PLAN, CTX, 1, {"phase": "pass"}, "Roll back", url)
    assert "Batch 1 (" in paused.body and "840 samples" in paused.body


def test_a_pause_marks_the_run_paused_counts_and_says_why(services, sent):
    verdict = {"phase": "no_data", "reason": "no data for 1m"}
    prompt = human.ask_pause(services, PLAN, CTX, 1, verdict, "Roll back")
    assert prompt.subject == "crm: batch 1 paused: no data for 1m"
    assert "No answer within" in prompt.body and prompt.body.endswith("Roll back.")
    assert services.ledger.get_run(CTX.run_id).status == "paused"
    assert ("count", metrics.PAUSED_TOTAL, 1) in sent.metrics


def test_a_freeze_stops_the_run_in_preflight_recorded_and_audited(services):
    with pytest.raises(window.Frozen, match="frozen"):
        window.stop_for_freeze(services, CTX, "black-friday")
    [decision] = services.ledger.decisions(CTX.run_id)
    assert (decision.kind, decision.actor) == ("stop", "window")
    assert "run.stopped.freeze" in events(services)


def test_a_batch_the_run_did_not_plan_is_refused(services):
    with pytest.raises(window.BatchNotPlanned):
        window.check_window(services, PLAN, CTX, 5, resumed=True)
    assert window.check_window(services, PLAN, CTX, 2, resumed=True).open


def test_rollback_verification_names_a_tenant_not_back_and_raises_the_alert(services, sent):
    services = Services(services.ledger, services.recorder, Platform(stuck="t-02"), sent)
    targets = [{"tenant": t, "from_version": "2.3.0"} for t in ("t-01", "t-02")]
    started = datetime.now(UTC) - timedelta(seconds=3)
    verification = rollback.verify(services, CTX, targets, started)
    assert [v["tenant"] for v in verification["verified"]] == ["t-01"]
    assert [b["tenant"] for b in verification["broken"]] == ["t-02"]
    assert verification["duration_ms"] >= 3000
    alert = rollback.alert_failures(services, PLAN, CTX, [], verification["broken"])
    assert alert is not None and alert.rule == "rollback_failure"
    assert "alert.rollback_failure" in events(services)


def test_the_batch_rollback_scope_marks_the_run_rolling_back(services):
    shards = rollback.start_batch_rollback(services, PLAN, CTX)
    assert shards == []  # no tenant was upgraded
    run = services.ledger.get_run(CTX.run_id)
    assert run.status == "rolling_back"
    assert run.detail["rollback_verification"]["note"] == "no tenant was on the new version"
    assert rollback.verify_batch_rollback(services, PLAN, CTX)["verified"] == 0


def test_a_late_rollback_needs_a_reason(services):
    with pytest.raises(rollback.RollbackRefused, match="reason"):
        rollback.resolve_late(services, {"run_id": CTX.run_id}, dag_run_id="r", user="u")


def test_the_run_start_is_audited_and_announced(services, sent):
    result = run_steps.announce_run(services, PLAN, CTX, {"selected": 20, "batches": [1, 2]})
    assert result["notified"] is True
    assert "run.started" in events(services)
    assert "20 tenants in 2 batches" in sent.notes[0]["message"]


def test_every_pokes_input_is_kept_for_backtests_and_the_report_charts_skip_it(services, sent):
    from powerx_upgrade.reporting.sections import _gate

    at = [datetime(2026, 11, 30, 2, m, tzinfo=UTC).isoformat() for m in (0, 1)]
    check = {"check": 0, "metric": "error_rate", "scope": "batch", "op": "<=", "value": 0.01}
    state = {
        "history": [
            {"phase": "running", "checks": [check], "at": at[0], "input": {"v": 1, "now": at[0]}},
            {"phase": "fail", "checks": [check], "at": at[1], "input": {"v": 1, "now": at[1]}},
        ]
    }
    failed = GateEvaluation(Phase.FAIL, "error_rate 0.3 > 0.05", (), 1, False)
    gate_steps.finish(services, PLAN, CTX, 1, failed, state)
    rows = services.ledger.gate_evaluations(CTX.run_id, 1)
    assert [(r.final, [m["metric"] for m in r.measurements]) for r in rows] == [
        (False, ["error_rate", "gate_input"]),
        (False, ["gate_input"]),  # the last poke: its checks are the verdict's row
        (True, []),
    ]
    assert rows[1].measurements[0]["input"] == {"v": 1, "now": at[1]}
    report = _gate(rows, rows[-1], None)
    assert report["pokes"] == 2
    assert [s["metric"] for s in report["series"]] == ["error_rate"]


def test_a_closed_window_is_audited_once_with_the_moment_it_opens(services):
    from powerx_upgrade.domain.models import WindowSpec

    plan = PLAN.model_copy(
        update={"window": WindowSpec(schedule="0 0 1 1 *", duration=timedelta(minutes=1))}
    )
    check = window.check_window(services, plan, CTX, 1, resumed=False)
    assert not check.open and check.opens_at is not None
    assert check.opens_at.month == 1 and check.opens_at.day == 1 and check.opens_at.minute == 0
    window.check_window(services, plan, CTX, 1, resumed=True)  # the resumed wait: no new record
    waits = [r for r in services.ledger.audit_records(CTX.run_id) if r.event == "run.window_wait"]
    assert len(waits) == 1
    assert waits[0].payload["details"]["opens_at"] == check.opens_at.isoformat()
    assert waits[0].payload["details"]["batch"] == 1


def test_a_run_that_could_not_begin_is_recorded_fails_and_has_no_batch_to_judge(services):
    from powerx_upgrade.rollout import finalize, preflight

    assert gate_steps.preflight_failure(services, CTX) is None
    refused = RuntimeError("POST internal/monitoring/query: HTTP 422 invalid_query")
    preflight.record_begin_failure(services.recorder, CTX, "begin", refused)
    failed = gate_steps.preflight_failure(services, CTX)
    assert failed == {"step": "begin", "error": f"RuntimeError: {refused}"}
    assert "run.preflight_failed" in events(services)
    outcome, detail = finalize.outcome_of(services.ledger, services.platform, CTX)
    assert outcome == "failed"
    assert detail["note"] == (
        f"preflight could not begin the run (begin): RuntimeError: {refused}; no tenant was touched"
    )


def test_a_begin_that_succeeds_on_a_later_try_forgets_the_failure_so_its_gates_judge(services):
    """A person clears the failed begin and it succeeds: a failure left recorded would make
    every gate skip its batch, and the run promote unjudged."""
    from powerx_upgrade.rollout import preflight

    preflight.record_begin_failure(services.recorder, CTX, "begin", TimeoutError("no answer"))
    preflight.clear_begin_failure(services.ledger, CTX.run_id)
    assert gate_steps.preflight_failure(services, CTX) is None
    assert "preflight_failed" not in (services.ledger.get_run(CTX.run_id).detail or {})
