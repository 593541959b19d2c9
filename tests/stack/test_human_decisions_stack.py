"""Human decisions on a live Airflow stack: a paused gate resumed and then rolled back; a batch
approved, then a rollback asked for while the next batch waits for its approval (the control
plane rejects that approval and the rollback DAG takes everyone back); an unanswered pause takes
its safe default. Each answer has its effect on the run and the tenants.
Some answers go through Airflow's HITL endpoint as the UI does
(`PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails`), the
others through the control plane (`POST /internal/version/upgrade/runs/{run_id}/decisions`
with an approval token, as the CLI does): the ledger says which path each took, and who."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from powerx_dev.devstack import AirflowStack
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.orchestration.operators.human import (
    APPROVE,
    REJECT,
    RESUME,
    ROLL_BACK,
    STOP,
)
from powerx_upgrade.security.approval import issue_approval
from tests.stack.conftest import (
    APPROVAL_DAG,
    APPROVAL_SECRET,
    FIGURES,
    PAUSE_DAG,
    RUN_TIMEOUT,
    UNANSWERED_DAG,
    artifact_for,
    explain,
    versions,
)

pytestmark = pytest.mark.stack


def planned(ledger: Ledger, run_id: str) -> list[list[str]]:
    """The run's batches as the DAG planned them (tenant ids per batch)."""
    record = ledger.get_run(run_id)
    assert record is not None and record.batches, record
    return [list(b["tenants"]) for b in record.batches]


def human_decisions(
    ledger: Ledger, run_id: str
) -> list[tuple[int | None, str, str, str | None, str | None]]:
    return [
        (d.batch_index, d.kind, d.decision, d.actor, d.via)
        for d in ledger.decisions(run_id)
        if d.via in ("ui", "api", "cli")
    ]


def decide_via_api(
    stack: AirflowStack, dag_id: str, run_id: str, decision: str, action: str, batch: int
) -> str:
    """Answer the waiting decision through the control plane; returns the token's id."""
    plan = dag_id.removeprefix("plugin_upgrade__")
    answer = httpx.post(
        f"{stack.base_url}/internal/version/upgrade/runs/{run_id}/decisions",
        headers={
            "Authorization": f"Bearer {stack.token()}",
            "X-Approval-Token": issue_approval(
                APPROVAL_SECRET,
                subject="release-approver",
                action=action,
                plan_id=plan,
                run_id=run_id,
            ),
        },
        json={"decision": decision, "batch": batch, "reason": "stack test"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["approval_jti"])


def test_a_pause_answered_resume_deploys_the_next_batch_then_roll_back_restores_everyone(
    stack: AirflowStack, sandbox: httpx.Client, ledger: Ledger
):
    before = versions(sandbox)
    started = time.monotonic()
    run_id = stack.trigger(PAUSE_DAG, {"target_version": "2.5.0", **artifact_for("2.5.0")})

    # Batch 1 (bronze, where 2.5.0 misbehaves) fails its gate; manual rollback: a pause.
    request = stack.wait_for_hitl(PAUSE_DAG, run_id, "batch_1.pause", timeout=RUN_TIMEOUT)
    FIGURES["pause: trigger to first pause (s)"] = time.monotonic() - started
    assert request["options"] == [RESUME, ROLL_BACK, STOP]
    assert request["defaults"] == [ROLL_BACK]
    assert "gate verdict **fail**" in request["body"], request["body"]
    # the verdict in words, where the approver reads it: metric, value, limit, samples, batch
    sentence = r"error_rate \d+\.\d+ % > limit 5\.00 % over \d+ samples in batch 1\b"
    assert re.search(sentence, request["body"]), request["body"]
    assert re.search(sentence, request["subject"]), request["subject"]
    first, rest = planned(ledger, run_id)
    paused = versions(sandbox)
    assert all(paused[t]["version"] == "2.5.0" for t in first)
    assert all(paused[t]["version"] == "2.3.1" for t in rest)
    assert ledger.get_run(run_id).status == "paused"

    resumed_by = decide_via_api(stack, PAUSE_DAG, run_id, "resume", "resume", 1)
    assert stack.hitl_detail(PAUSE_DAG, run_id, "batch_1.pause")["chosen_options"] == [RESUME]

    # Resume: the next batch deploys (and, still on the bad version, pauses again).
    stack.wait_for_hitl(PAUSE_DAG, run_id, "batch_2.pause", timeout=RUN_TIMEOUT)
    states = stack.task_states(PAUSE_DAG, run_id)
    assert states["batch_1.resume"] == "success"
    assert states["batch_1.pause_rollback"] == states["batch_1.pause_stop"] == "skipped"
    assert states["batch_2.deploy[0]"] == "success"
    resumed = versions(sandbox)
    assert all(resumed[t]["version"] == "2.5.0" for t in first + rest)

    stack.answer_hitl(PAUSE_DAG, run_id, "batch_2.pause", ROLL_BACK)

    # Roll back: every upgraded tenant is back on its previous version; the run fails.
    assert stack.wait_for_run(PAUSE_DAG, run_id, timeout=RUN_TIMEOUT) == "failed", explain(
        stack, PAUSE_DAG, run_id
    )
    FIGURES["pause: trigger to run end (s)"] = time.monotonic() - started
    states = stack.task_states(PAUSE_DAG, run_id)
    assert states["batch_2.pause_rollback"] == "success"
    assert states["rollback.verify"] == "success"
    assert states["finalize.result"] == "failed"
    after = versions(sandbox)
    for tenant in first + rest:
        assert after[tenant]["version"] == before[tenant]["version"] == "2.3.1"
        assert after[tenant]["config_version"] == before[tenant]["config_version"]
    record = ledger.get_run(run_id)
    assert record.outcome == "rolled_back", record
    assert human_decisions(ledger, run_id) == [
        (1, "pause", "resume", stack.login[0], "api"),
        (2, "pause", "rollback", stack.login[0], "ui"),
    ]
    (resume,) = [d for d in ledger.decisions(run_id) if d.via == "api"]
    assert resumed_by in str(resume.detail), resume.detail  # the token id, in the ledger


def test_an_api_approval_deploys_its_batch_and_an_api_rollback_at_the_next_approval_rejects_it_and_rolls_back(
    stack: AirflowStack, sandbox: httpx.Client, ledger: Ledger
):
    before = versions(sandbox)
    started = time.monotonic()
    run_id = stack.trigger(APPROVAL_DAG, {"target_version": "2.4.0", **artifact_for("2.4.0")})

    # Batch 1 needs no approval and promotes; batch 2 waits for one before it deploys anything.
    request = stack.wait_for_hitl(APPROVAL_DAG, run_id, "batch_2.approve", timeout=RUN_TIMEOUT)
    FIGURES["approval: trigger to first approval request (s)"] = time.monotonic() - started
    assert request["options"] == [APPROVE, REJECT]
    assert request["defaults"] == [REJECT]
    # the approver sees how batch 1 did, in words, without going elsewhere
    assert re.search(r"Last gate: every check held in batch 1\b.*error_rate", request["body"]), (
        request["body"]
    )
    first, second, third = planned(ledger, run_id)
    waiting = versions(sandbox)
    assert all(waiting[t]["version"] == "2.4.0" for t in first)
    assert all(waiting[t]["version"] == "2.3.1" for t in second + third)
    assert stack.task_states(APPROVAL_DAG, run_id)["batch_2.shards"] is None

    approved_by = decide_via_api(stack, APPROVAL_DAG, run_id, "approve", "approve", 2)

    # Approve: batch 2 deploys, passes its gate; batch 3 asks again.
    stack.wait_for_hitl(APPROVAL_DAG, run_id, "batch_3.approve", timeout=RUN_TIMEOUT)
    states = stack.task_states(APPROVAL_DAG, run_id)
    assert states["batch_2.deploy[0]"] == "success"
    assert states["batch_2.promote"] == "success"
    approved = versions(sandbox)
    assert all(approved[t]["version"] == "2.4.0" for t in first + second)
    assert all(approved[t]["version"] == "2.3.1" for t in third)

    # Batch 3 waits for its approval when on-call asks the control plane for a rollback: the
    # API answers the approval Reject (nothing more deploys, the run stops) and hands the
    # upgraded tenants to plugin_upgrade_rollback, which waits for the run to end.
    plan = APPROVAL_DAG.removeprefix("plugin_upgrade__")
    asked = httpx.post(
        f"{stack.base_url}/internal/version/upgrade/rollback",
        headers={
            "Authorization": f"Bearer {stack.token()}",
            "X-Approval-Token": issue_approval(
                APPROVAL_SECRET,
                subject="on-call",
                action="rollback",
                plan_id=plan,
                run_id=run_id,
            ),
        },
        json={"run_id": run_id, "reason": "stack test: roll back at an approval"},
        timeout=60,
    )
    assert asked.status_code == 202, asked.text
    done = asked.json()
    assert done["mode"] == "rollback_dag" and done["dag_id"] == "plugin_upgrade_rollback", done

    assert stack.wait_for_run(APPROVAL_DAG, run_id, timeout=RUN_TIMEOUT) == "failed", explain(
        stack, APPROVAL_DAG, run_id
    )
    FIGURES["approval: trigger to run end (s)"] = time.monotonic() - started
    states = stack.task_states(APPROVAL_DAG, run_id)
    assert states["batch_3.rejected"] == "success"
    assert states["batch_3.shards"] == "skipped"
    assert states["finalize.record"] == "success"
    assert states["finalize.result"] == "failed"
    rollback_state = stack.wait_for_run(
        "plugin_upgrade_rollback", done["dag_run_id"], timeout=RUN_TIMEOUT
    )
    assert rollback_state == "success", explain(
        stack, "plugin_upgrade_rollback", done["dag_run_id"]
    )
    FIGURES["approval: trigger to rollback DAG done (s)"] = time.monotonic() - started
    after = versions(sandbox)
    for tenant in third:  # never deployed
        assert after[tenant]["version"] == before[tenant]["version"]
        assert not after[tenant]["operations"], after[tenant]
    for tenant in first + second:  # upgraded, then rolled back with their old config
        assert after[tenant]["version"] == before[tenant]["version"] == "2.3.1"
        assert after[tenant]["config_version"] == before[tenant]["config_version"]
    record = ledger.get_run(run_id)
    assert record.outcome == "rolled_back", record
    assert record.detail.get("outcome_before_rollback") == "stopped", record.detail
    assert human_decisions(ledger, run_id)[:2] == [
        (2, "approval", "approve", stack.login[0], "api"),
        (3, "approval", "reject", stack.login[0], "api"),
    ]
    used = {a.action: a for a in ledger.approvals(run_id=run_id)}
    assert used["approve"].jti == approved_by and used["rollback"].subject == "on-call"


def test_an_unanswered_pause_takes_its_safe_default_and_rolls_back(
    stack: AirflowStack, sandbox: httpx.Client, ledger: Ledger
):
    started = time.monotonic()
    run_id = stack.trigger(UNANSWERED_DAG, {"target_version": "2.5.0", **artifact_for("2.5.0")})
    stack.wait_for_hitl(UNANSWERED_DAG, run_id, "batch_1.pause", timeout=RUN_TIMEOUT)
    (batch,) = planned(ledger, run_id)
    assert all(versions(sandbox)[t]["version"] == "2.5.0" for t in batch)

    # Nobody answers: after the pause's 15 s the scheduler applies the default, Roll back.
    assert stack.wait_for_run(UNANSWERED_DAG, run_id, timeout=RUN_TIMEOUT) == "failed", explain(
        stack, UNANSWERED_DAG, run_id
    )
    FIGURES["unanswered pause: trigger to run end (s)"] = time.monotonic() - started
    request = stack.hitl_detail(UNANSWERED_DAG, run_id, "batch_1.pause")
    assert request["chosen_options"] == [ROLL_BACK] and request["responded_by_user"] is None
    states = stack.task_states(UNANSWERED_DAG, run_id)
    assert states["batch_1.pause_rollback"] == "success"
    assert states["rollback.verify"] == "success"
    after = versions(sandbox)
    assert all(after[t]["version"] == "2.3.1" for t in batch)
    assert ledger.get_run(run_id).outcome == "rolled_back"
    (decision,) = [d for d in ledger.decisions(run_id) if d.kind == "pause"]
    assert (decision.decision, decision.actor) == ("rollback", "timeout default")
    assert decision.detail["timed_out"] is True
