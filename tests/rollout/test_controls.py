"""Run controls as the rollout steps read them, against a real SQLite ledger: what ends a gate,
the gate and bake of the next poke, takeover, re-cut batches, HITL answers, the run's end."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from powerx_upgrade.domain.decide import Action, Decision
from powerx_upgrade.domain.gate import Phase
from powerx_upgrade.domain.models import Plan, Policy, SourceRef, TenantSelection
from powerx_upgrade.domain.planner import Tenant, plan_batches
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.rollout import controls
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.record import Recorder

pytestmark = pytest.mark.unit

POLICY = Policy.model_validate(
    {
        "batches": [
            {"name": "canary", "ratio": 0.1, "bake": "10s"},
            {"ratio": 0.5, "bake": "20s"},
            {"ratio": 1.0, "bake": "30s"},
        ],
        "deploy": {"concurrency": 10},
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


@pytest.fixture
def book(tmp_path: Path) -> Ledger:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.start_run(
        CTX.run_id,
        dag_id=CTX.dag_id,
        plan_id=CTX.plan_id,
        plugin=CTX.plugin,
        target_version=CTX.target_version,
    )
    fleet = [Tenant(f"t-{i:02d}") for i in range(20)]
    planned = [b.as_dict() for b in plan_batches(PLAN, fleet).batches]
    ledger.update_run(CTX.run_id, batches=planned)
    return ledger


def watch(batch: int = 2) -> dict:
    return {"batch": batch, "bake_seconds": 20, "merged": []}


def test_without_controls_the_gate_pokes_as_planned(book):
    found = controls.gate_controls(book, CTX.run_id, POLICY.gate, watch())
    assert found.request is None and found.applied == ()
    assert found.gate == POLICY.gate and found.bake_seconds == 20


def test_a_pending_rollback_outranks_a_pause_and_ends_the_gate_with_who_asked(book):
    pause = book.request_control(CTX.run_id, "pause", actor="bob", via="cli")
    rollback = book.request_control(
        CTX.run_id, "rollback", actor="alice", via="api", payload={"reason": "pager"}
    )
    found = controls.gate_controls(book, CTX.run_id, POLICY.gate, watch())
    assert found.request == rollback
    verdict = controls.requested_evaluation(found.request, 2)
    assert verdict.phase is Phase.ROLLBACK_REQUESTED
    assert verdict.reason == (
        f"rollback requested by alice via api (control {rollback.id}) at batch 2: pager"
    )
    assert controls.settle_request(book, CTX, rollback.id, batch=2, phase=verdict.phase.value)
    assert not controls.settle_request(book, CTX, rollback.id, batch=2, phase="again")
    assert controls.gate_request(book, CTX.run_id) == pause
    assert controls.requested_evaluation(pause, 2).phase is Phase.PAUSE_REQUESTED
    [audit] = [r for r in book.audit_records(CTX.run_id) if r.event == "control.rollback.applied"]
    assert audit.payload["actor"] == "alice" and audit.payload["details"]["batch"] == 2


def test_adjustments_change_the_next_pokes_limits_and_bake_and_are_reported_as_applied(book):
    first = book.request_control(
        CTX.run_id, "adjust", actor="carol", via="api", payload={"bake": "45s"}
    )
    second = book.request_control(
        CTX.run_id,
        "adjust",
        actor="carol",
        via="cli",
        payload={"adjust": {"checks": [{"metric": "error_rate", "limit": "1%"}]}, "reason": "x"},
    )
    found = controls.gate_controls(book, CTX.run_id, POLICY.gate, watch())
    assert found.bake_seconds == 45
    assert found.gate.checks[0].limit.value == 0.01
    assert found.applied == (first.id, second.id)
    settled = controls.settle_adjustments(book, CTX, found.applied, where="the gate of batch 2")
    assert settled == [first.id, second.id]
    assert controls.settle_adjustments(book, CTX, found.applied, where="again") == []
    note = book.get_control(second.id).note
    assert note == "in force from the gate of batch 2: error_rate limit -> 0.01"
    again = controls.gate_controls(book, CTX.run_id, POLICY.gate, watch())
    assert again.applied == () and again.bake_seconds == 45  # settled ones stay in force


def test_takeover_is_in_force_until_released(book):
    assert controls.takeover_active(book, CTX.run_id) is None
    taken = book.request_control(CTX.run_id, "takeover", actor="dave", via="api")
    assert controls.takeover_active(book, CTX.run_id) == taken
    controls.settle_toggles(book, CTX, 1)
    assert controls.takeover_active(book, CTX.run_id).pending is False
    book.request_control(CTX.run_id, "release", actor="dave", via="api")
    assert controls.takeover_active(book, CTX.run_id) is None
    again = book.request_control(CTX.run_id, "takeover", actor="erin", via="cli")
    assert controls.takeover_active(book, CTX.run_id) == again


def test_replan_recuts_the_batches_not_started_in_the_ledger_audited(book):
    before = controls.planned_batches(book, CTX.run_id)
    assert [b["cumulative_count"] for b in before] == [2, 10, 20]
    change = book.request_control(
        CTX.run_id,
        "adjust",
        actor="carol",
        via="api",
        payload={"batches": {"2": {"ratio": 0.8}}, "deploy_concurrency": 3},
    )
    done = controls.replan_remaining(book, PLAN, CTX, 2, Recorder(book))
    assert done["after"] == [
        {"index": 2, "size": 14, "cumulative_count": 16, "bake_seconds": 20},
        {"index": 3, "size": 4, "cumulative_count": 20, "bake_seconds": 30},
    ]
    after = controls.planned_batches(book, CTX.run_id)
    assert after[0] == before[0]
    assert [t for b in after for t in b["tenants"]] == [t for b in before for t in b["tenants"]]
    assert not book.get_control(change.id).pending
    assert controls.effective_policy(PLAN, book, CTX.run_id).deploy.concurrency == 3
    events = [r.event for r in book.audit_records(CTX.run_id)]
    assert events == ["control.adjust.applied", "run.replanned"]
    assert controls.replan_remaining(book, PLAN, CTX, 2, Recorder(book)) is None


def test_an_adjustment_that_no_longer_parses_is_refused_not_applied(book):
    bad = book.request_control(CTX.run_id, "adjust", actor="x", via="api", payload={"bake": "?"})
    assert controls.replan_remaining(book, PLAN, CTX, 2) is None
    refused = book.get_control(bad.id)
    assert refused.outcome == "refused" and "adjust.bake" in refused.note
    assert controls.effective_policy(PLAN, book, CTX.run_id) == POLICY


def test_the_answer_for_a_hitl_task_is_its_latest_pending_one(book):
    book.request_control(
        CTX.run_id, "answer", actor="a", via="api", payload={"task_id": "batch_1.pause"}
    )
    mine = book.request_control(
        CTX.run_id,
        "answer",
        actor="b",
        via="cli",
        approval_jti="j-2",
        payload={"task_id": "batch_2.pause", "decision": "resume", "chosen": ["Resume"]},
    )
    assert controls.answer_for(book, CTX.run_id, "batch_2.pause") == mine
    assert controls.answer_for(book, CTX.run_id, "batch_3.pause") is None
    book.settle_control(mine.id, outcome="applied")
    assert controls.answer_for(book, CTX.run_id, "batch_2.pause") is None


def test_the_runs_end_expires_what_it_cannot_honour_but_keeps_rollbacks_for_the_rollback_dag(
    book,
):
    pause = book.request_control(CTX.run_id, "pause", actor="a", via="api")
    rollback = book.request_control(CTX.run_id, "rollback", actor="b", via="api")
    assert controls.settle_at_end(book, CTX, "promoted") == [pause.id]
    assert book.get_control(pause.id).outcome == "expired"
    assert book.get_control(rollback.id).pending
    assert controls.settle_at_end(book, CTX, "rolled_back") == [rollback.id]
    assert book.get_control(rollback.id).outcome == "applied"


def test_bake_of_a_batch_that_absorbed_later_ones_is_the_longest_adjusted(book):
    book.request_control(
        CTX.run_id, "adjust", actor="c", via="api", payload={"batches": {"3": {"bake": "2m"}}}
    )
    found = controls.gate_controls(
        book, CTX.run_id, POLICY.gate, {"batch": 2, "bake_seconds": 20, "merged": [3]}
    )
    assert found.bake_seconds == timedelta(minutes=2).total_seconds()


def test_under_a_takeover_every_promotion_becomes_a_pause_by_the_operator_until_released(book):
    passed = Decision(Action.PROMOTE, "gate passed")
    failed = Decision(Action.ROLLBACK, "gate failed")
    assert controls.decide_under_controls(book, CTX, passed, {}, 1) == controls.Decided(
        passed, "policy", "auto"
    )
    taken = book.request_control(
        CTX.run_id, "takeover", actor="dave", via="api", approval_jti="jti-7"
    )
    decided = controls.decide_under_controls(book, CTX, passed, {"phase": "pass"}, 2)
    assert decided.decision == Decision(Action.PAUSE, "manual takeover by dave")
    assert (decided.actor, decided.via) == ("dave", "api")
    assert decided.detail == {"takeover": taken.id, "approval": "jti-7", "gate": "gate passed"}
    assert book.get_control(taken.id).note == "in force from the decision of batch 2"
    # a failing gate still rolls back: a takeover stops expansion, not safety
    assert controls.decide_under_controls(book, CTX, failed, {}, 2).decision == failed
    book.request_control(CTX.run_id, "release", actor="dave", via="cli")
    assert controls.decide_under_controls(book, CTX, passed, {}, 3).decision == passed


def test_a_verdict_that_ended_on_a_request_is_the_requesting_operators_decision(book):
    asked = book.request_control(
        CTX.run_id, "rollback", actor="alice", via="cli", approval_jti="jti-1"
    )
    rollback = Decision(Action.ROLLBACK, "rollback requested by an operator")
    decided = controls.decide_under_controls(book, CTX, rollback, {"control": asked.id}, 1)
    assert (decided.decision, decided.actor, decided.via) == (rollback, "alice", "cli")
    assert decided.detail == {"control": asked.id, "approval": "jti-1"}
