"""Approvals that mean something, on the live stack (issue 15 point 5), and what the stack wrote
(point 7). An Approve given through Airflow's own HITL endpoint (as the UI does) without an
approval token, where the policy wants one, is refused, audited, and the request stays open; the
control plane's answer (with a token) then counts. `plugin_upgrade_rollback` triggered directly
without a token is refused; with a token in its conf it rolls back. Afterwards nothing the stack
wrote (task logs, reports, audit records, the platform's notifications and audit) holds a secret
or a token, and its databases are 0600."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from powerx_dev.devstack import AirflowStack
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.orchestration.operators.human import APPROVE
from powerx_upgrade.security.approval import issue_approval
from tests.signing import TEST_PRIVATE_KEY
from tests.stack.conftest import (
    APPROVAL_DAG,
    APPROVAL_SECRET,
    RUN_TIMEOUT,
    artifact_for,
    explain,
    versions,
)

pytestmark = pytest.mark.stack
ROLLBACK_DAG = "plugin_upgrade_rollback"
PLAN = APPROVAL_DAG.removeprefix("plugin_upgrade__")
TOKENS: list[str] = []
"""Every approval token this module handed out: none may show up in what the stack wrote."""


def token(action: str, run_id: str) -> str:
    issued = issue_approval(
        APPROVAL_SECRET, subject="release-approver", action=action, plan_id=PLAN, run_id=run_id
    )
    TOKENS.append(issued)
    return issued


def decide(stack: AirflowStack, run_id: str, decision: str, action: str, batch: int) -> Any:
    return httpx.post(
        f"{stack.base_url}/internal/version/upgrade/runs/{run_id}/decisions",
        headers={
            "Authorization": f"Bearer {stack.token()}",
            "X-Approval-Token": token(action, run_id),
        },
        json={"decision": decision, "batch": batch, "reason": "stack test"},
        timeout=60,
    )


def test_an_airflow_approve_without_token_is_refused_and_the_rollback_dag_needs_one_too(
    stack: AirflowStack, sandbox: httpx.Client, ledger: Ledger
):
    before = versions(sandbox)
    run_id = stack.trigger(APPROVAL_DAG, {"target_version": "2.4.0", **artifact_for("2.4.0")})
    stack.wait_for_hitl(APPROVAL_DAG, run_id, "batch_2.approve", timeout=RUN_TIMEOUT)

    # Approve through Airflow's own HITL endpoint, as the UI does: no approval token.
    stack.answer_hitl(APPROVAL_DAG, run_id, "batch_2.approve", APPROVE)
    deadline = time.monotonic() + RUN_TIMEOUT
    refused: list[Any] = []
    while not refused and time.monotonic() < deadline:
        refused = [r for r in ledger.audit_records(run_id) if r.event == "batch.answer.refused"]
        time.sleep(1)
    assert refused, explain(stack, APPROVAL_DAG, run_id)
    details = refused[0].payload["details"]
    assert details["chosen"] == [APPROVE] and details["via"] == "ui", details
    assert refused[0].payload["actor"] == stack.login[0]
    # the request is open again and nothing of batch 2 deployed
    again = stack.wait_for_hitl(APPROVAL_DAG, run_id, "batch_2.approve", timeout=RUN_TIMEOUT)
    assert again["chosen_options"] in (None, []), again
    assert stack.task_states(APPROVAL_DAG, run_id)["batch_2.shards"] is None
    assert not [d for d in ledger.decisions(run_id) if d.kind == "approval" and d.via != "auto"]

    # The control plane's answer, with a token, counts.
    approved = decide(stack, run_id, "approve", "approve", 2)
    assert approved.status_code == 200, approved.text
    stack.wait_for_hitl(APPROVAL_DAG, run_id, "batch_3.approve", timeout=RUN_TIMEOUT)
    [decision] = [
        d for d in ledger.decisions(run_id) if d.kind == "approval" and d.batch_index == 2
    ]
    assert (decision.decision, decision.via) == ("approve", "api")
    rejected = decide(stack, run_id, "reject", "approve", 3)
    assert rejected.status_code == 200, rejected.text
    assert stack.wait_for_run(APPROVAL_DAG, run_id, timeout=RUN_TIMEOUT) == "failed"
    upgraded = [t for t, v in versions(sandbox).items() if v["version"] == "2.4.0"]
    assert upgraded

    # plugin_upgrade_rollback triggered directly, without a token: refused, nothing rolled back.
    conf = {"run_id": run_id, "reason": "stack test: direct trigger"}
    bare = stack.trigger(ROLLBACK_DAG, conf)
    assert stack.wait_for_run(ROLLBACK_DAG, bare, timeout=RUN_TIMEOUT) == "failed"
    assert stack.task_states(ROLLBACK_DAG, bare)["rollback.resolve"] == "failed"
    assert [t for t, v in versions(sandbox).items() if v["version"] == "2.4.0"] == upgraded
    reasons = [
        r.payload["reason"] for r in ledger.audit_records(run_id) if r.event == "approval.refused"
    ]
    assert "missing" in reasons, reasons

    # With a token for the rollback in its conf: it rolls back.
    tokened = stack.trigger(ROLLBACK_DAG, {**conf, "approval_token": token("rollback", run_id)})
    state = stack.wait_for_run(ROLLBACK_DAG, tokened, timeout=RUN_TIMEOUT)
    assert state == "success", explain(stack, ROLLBACK_DAG, tokened)
    after = versions(sandbox)
    assert all(after[t]["version"] == before[t]["version"] for t in upgraded)
    assert {a.action for a in ledger.approvals(run_id=run_id)} >= {"approve", "rollback"}


def secrets_of(stack: AirflowStack) -> dict[str, str]:
    key = TEST_PRIVATE_KEY.read_text()
    body = "".join(line for line in key.splitlines() if "-----" not in line)
    return {
        "approval secret (connection password)": APPROVAL_SECRET,
        "signing private key": body[:40],
        "Airflow token": stack.token(),
        **{f"approval token {i}": t for i, t in enumerate(TOKENS)},
    }


def written_files(home: Path) -> list[Path]:
    """Everything the stack wrote but its databases (logs, reports, state files)."""
    skip = (".db", ".db-wal", ".db-shm", ".db-journal")
    return [p for p in home.rglob("*") if p.is_file() and not p.name.endswith(skip)]


def test_nothing_the_stack_wrote_holds_a_secret_and_its_databases_are_private(
    stack: AirflowStack, ledger: Ledger, sandbox_url: str, ledger_url: str
):
    """Runs after the test above (file order): its approval run, its two rollback DAG runs
    and every other run the session's stack finished so far."""
    assert TOKENS, "run with the test above: its tokens are the ones searched for"
    secrets = secrets_of(stack)
    assert len(secrets) >= 4
    sources: dict[str, str] = {}
    files = written_files(stack.home)
    logs = [p for p in files if "logs" in p.parts]
    assert logs, f"no task logs under {stack.home}"
    for path in files:
        sources[str(path)] = path.read_text(errors="replace")
    sources["ledger audit records"] = json.dumps([r.payload for r in ledger.audit_records()])
    with httpx.Client(base_url=sandbox_url, timeout=10) as client:
        for inspect in ("/sandbox/notifications", "/sandbox/audit", "/sandbox/events"):
            sources[f"sandbox {inspect}"] = client.get(inspect).text
    leaks = [
        f"{name} in {where}"
        for name, secret in secrets.items()
        for where, text in sources.items()
        if secret and secret in text
    ]
    assert leaks == [], leaks
    databases = [stack.home / "airflow.db", Path(ledger_url.removeprefix("sqlite:///"))]
    modes = {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in databases}
    assert set(modes.values()) == {"0o600"}, modes
