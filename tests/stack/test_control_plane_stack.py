"""The control-plane API on a live Airflow stack (`/internal/version/upgrade`, mounted by the
package's AirflowPlugin in the api-server): refusals (no token, forged tokens, wrong role, bad
approval tokens, path traversal, oversized bodies) change nothing and are audited; a valid
rollback rolls an active run back through its own rollback group; POST /plan makes a new DAG;
the report lists the approvals; no token or secret reaches a log or a report.

Two DAG runs: the stack plan, rolled back while batch 1's gate bakes; the pause plan, whose
pause the API answers "Stop", then rolled back after its end by `plugin_upgrade_rollback`."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest

from powerx_dev.devstack import AirflowStack
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.security.approval import issue_approval
from tests.stack.conftest import (
    APPROVAL_SECRET,
    AUTO_DAG,
    FIGURES,
    PAUSE_DAG,
    RUN_TIMEOUT,
    VIEWER,
    artifact_for,
    explain,
    versions,
    viewer_password,
)

pytestmark = pytest.mark.stack

API = "/internal/version/upgrade"
PLAN = "crm-sync-stack"
SECRETS_SEEN: list[str] = []
"""Every token and secret the tests used: none may appear in a log or report of the stack."""


def approval(action: str, *, plan: str = PLAN, run: str | None = None, **kw: Any) -> str:
    token = issue_approval(
        APPROVAL_SECRET, subject="release-approver", action=action, plan_id=plan, run_id=run, **kw
    )
    SECRETS_SEEN.append(token)
    return token


def call(
    stack: AirflowStack,
    method: str,
    path: str,
    *,
    token: str | None = None,
    approval_token: str | None = None,
    **kwargs: Any,
) -> httpx.Response:
    headers = dict(kwargs.pop("headers", {}))
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if approval_token:
        headers["X-Approval-Token"] = approval_token
    return httpx.request(
        method, f"{stack.base_url}{API}{path}", headers=headers, timeout=60, **kwargs
    )


def refusals(ledger: Ledger, since: int) -> list[dict[str, Any]]:
    return [
        r.payload["details"] for r in ledger.audit_records()[since:] if r.event == "api.refused"
    ]


def login(stack: AirflowStack, username: str, password: str) -> str:
    answer = httpx.post(
        f"{stack.base_url}/auth/token",
        json={"username": username, "password": password},
        timeout=30,
    )
    answer.raise_for_status()
    token = answer.json()["access_token"]
    SECRETS_SEEN.append(token)
    return token


@pytest.fixture(scope="module")
def active_run(stack: AirflowStack, sandbox_url: str) -> dict[str, Any]:
    """A run of the stack plan (2.4.0: healthy) whose batch 1 has deployed and whose gate bakes
    in the triggerer (deferred)."""
    with httpx.Client(base_url=sandbox_url, timeout=10) as sandbox:
        sandbox.post("/sandbox/reset").raise_for_status()
        before = versions(sandbox)
    run_id = stack.trigger(AUTO_DAG, {"target_version": "2.4.0", **artifact_for("2.4.0")})
    stack.wait_for_task(AUTO_DAG, run_id, "batch_1.gate", ["deferred"], timeout=RUN_TIMEOUT)
    return {"run_id": run_id, "before": before}


def test_refusals_answer_clearly_change_nothing_and_are_audited(
    stack: AirflowStack, ledger: Ledger, stack_config, active_run: dict[str, Any]
):
    run_id = active_run["run_id"]
    admin = stack.token()
    SECRETS_SEEN.append(admin)
    since = len(ledger.audit_records())
    body = {"run_id": run_id, "reason": "stack test refusal"}

    def rollback(**kw: Any) -> httpx.Response:
        return call(stack, "POST", "/rollback", json=body, **kw)

    forged_airflow = jwt.encode(
        {"sub": "admin", "role": "admin", "exp": int(time.time()) + 600},
        "not-the-stack-secret-" + "x" * 64,
        algorithm="HS512",
    )
    viewer = login(stack, VIEWER, viewer_password(stack))
    good = approval("rollback", run=run_id)
    answers = {
        "no token": rollback(),
        "forged airflow token": rollback(token=forged_airflow, approval_token=good),
        "wrong role": rollback(token=viewer, approval_token=good),
        "no approval token": rollback(token=admin),
        "forged approval": rollback(
            token=admin,
            approval_token=issue_approval(
                "forged-secret-" + "y" * 32, subject="x", action="rollback", plan_id=PLAN
            ),
        ),
        "expired": rollback(
            token=admin,
            approval_token=approval("rollback", now=datetime(2026, 1, 1, tzinfo=UTC), run=run_id),
        ),
        "wrong action": rollback(token=admin, approval_token=approval("takeover")),
        "wrong plan": rollback(
            token=admin, approval_token=approval("rollback", plan="crm-sync-stack-pause")
        ),
        "missing MFA": rollback(token=admin, approval_token=approval("rollback", mfa=False)),
        "path traversal": call(
            stack,
            "POST",
            "/plan",
            token=admin,
            json={"plan_id": "../../dags/evil", "plan": {"plugin": "crm-sync"}},
        ),
        "oversized body": call(
            stack,
            "POST",
            "/plan",
            token=admin,
            content=b'{"plan_id": "big", "plan": {"description": "' + b"a" * 70_000 + b'"}}',
            headers={"Content-Type": "application/json"},
        ),
    }
    statuses = {name: (a.status_code, _code(a)) for name, a in answers.items()}
    assert statuses == {
        "no token": (401, "not_authenticated"),
        "forged airflow token": (403, "invalid_token"),
        "wrong role": (403, "forbidden"),
        "no approval token": (401, "missing"),
        "forged approval": (403, "forged"),
        "expired": (403, "expired"),
        "wrong action": (403, "wrong_action"),
        "wrong plan": (403, "wrong_plan"),
        "missing MFA": (403, "mfa_required"),
        "path traversal": (422, "plan_id"),
        "oversized body": (413, "body_too_large"),
    }, {name: a.text[:300] for name, a in answers.items()}
    assert "approval token required" in answers["no approval token"].text

    # nothing changed: the run goes on untouched, no token was used, no file was written
    assert ledger.controls(run_id) == [], ledger.controls(run_id)
    assert ledger.approvals(run_id=run_id) == []
    assert ledger.get_run(run_id).active
    assert not (stack_config / "plans").exists() or not any((stack_config / "plans").iterdir())
    assert not (stack_config.parent / "dags").exists()
    reasons = [r["reason"] for r in refusals(ledger, since)]
    assert sorted(reasons) == sorted(
        [
            "not_authenticated",
            "invalid_token",
            "forbidden",
            "missing",
            "forged",
            "expired",
            "wrong_action",
            "wrong_plan",
            "mfa_required",
            "invalid_plan_id",
            "body_too_large",
        ]
    ), reasons
    users = {r["reason"]: r["user"] for r in refusals(ledger, since)}
    assert users["forbidden"] == VIEWER and users["mfa_required"] == "admin"
    assert users["not_authenticated"] is None


@pytest.fixture(scope="module")
def api_rollback(
    stack: AirflowStack, sandbox_url: str, active_run: dict[str, Any]
) -> dict[str, Any]:
    """One valid `POST /rollback` of the active run (after the refusals test, which needs the
    run still active), followed until every tenant is back and the run has ended."""
    run_id = active_run["run_id"]
    admin = stack.token()
    with httpx.Client(base_url=sandbox_url, timeout=10) as sandbox:
        at_call = versions(sandbox)
        upgraded = sorted(t for t, v in at_call.items() if v["version"] == "2.4.0")
        assert upgraded, "batch 1 deployed nothing before its gate"
        gate = stack.task_instance(AUTO_DAG, run_id, "batch_1.gate")["state"]
        token = approval("rollback", run=run_id)
        body = {"run_id": run_id, "reason": "stack test: roll the canary back"}
        called_at = datetime.now(UTC)
        started = time.monotonic()
        answer = call(stack, "POST", "/rollback", token=admin, approval_token=token, json=body)
        assert answer.status_code == 202, answer.text
        done = answer.json()
        # the same token again, while the run rolls back
        replay = call(stack, "POST", "/rollback", token=admin, approval_token=token, json=body)
        # every tenant back on 2.3.1, as the sandbox (the platform) sees it
        while True:
            now = versions(sandbox)
            if all(v["version"] == "2.3.1" for v in now.values()):
                break
            assert time.monotonic() - started < RUN_TIMEOUT, explain(stack, AUTO_DAG, run_id)
            time.sleep(0.2)
        restored = time.monotonic() - started
        assert stack.wait_for_run(AUTO_DAG, run_id, timeout=RUN_TIMEOUT) == "failed", explain(
            stack, AUTO_DAG, run_id
        )
        after = versions(sandbox)
    return {
        "run_id": run_id,
        "admin": admin,
        "upgraded": upgraded,
        "gate": gate,
        "done": done,
        "replay": replay,
        "called_at": called_at,
        "restored": restored,
        "after": after,
    }


def test_a_valid_rollback_rolls_the_active_run_back_within_one_gate_poke(
    stack: AirflowStack, ledger: Ledger, active_run: dict[str, Any], api_rollback: dict[str, Any]
):
    run_id, admin, done = api_rollback["run_id"], api_rollback["admin"], api_rollback["done"]
    upgraded, gate, after = api_rollback["upgraded"], api_rollback["gate"], api_rollback["after"]
    restored, called_at = api_rollback["restored"], api_rollback["called_at"]
    replay = api_rollback["replay"]
    assert done["mode"] == "active_run" and done["run_id"] == run_id
    # the same token again, while the run rolled back: single use
    assert replay.status_code == 403 and _code(replay) == "replayed", replay.text
    FIGURES["control plane: rollback call to last tenant restored (s)"] = restored
    FIGURES["control plane: tenants rolled back through the API"] = float(len(upgraded))
    rollbacks = [a for a in ledger.actions(run_id) if a.kind == "rollback"]
    rolled = {a.tenant_id for a in rollbacks if a.state == "succeeded"}
    assert set(upgraded) <= rolled, (upgraded, rolled)
    last = max(a.finished_at for a in rollbacks)
    FIGURES["control plane: rollback call to last verified tenant, ledger (s)"] = (
        last - called_at
    ).total_seconds()
    assert restored < 180, gate  # the use case's floor: rollback within 3 minutes
    for tenant in rolled:
        assert after[tenant]["config_version"] == active_run["before"][tenant]["config_version"]

    run = ledger.get_run(run_id)
    assert run.outcome == "rolled_back", run
    (control,) = [c for c in ledger.controls(run_id) if c.kind == "rollback"]
    assert (control.actor, control.via, control.approval_jti) == (
        "admin",
        "api",
        done["approval_jti"],
    )
    assert control.outcome == "applied", control
    (used,) = ledger.approvals(run_id=run_id)
    assert (used.action, used.subject, used.via, used.mfa) == (
        "rollback",
        "release-approver",
        "api",
        True,
    )
    again = call(
        stack,
        "POST",
        "/rollback",
        token=admin,
        approval_token=approval("rollback", run=run_id),
        json={"run_id": run_id, "reason": "again"},
    )
    assert again.status_code == 409 and _code(again) == "already_rolled_back"
    assert len(ledger.approvals(run_id=run_id)) == 1


def test_the_report_lists_the_approvals_and_the_run_view_its_controls(
    stack: AirflowStack, api_rollback: dict[str, Any]
):
    run_id, jti = api_rollback["run_id"], api_rollback["done"]["approval_jti"]
    admin = stack.token()
    report = call(stack, "GET", f"/runs/{run_id}/report", token=admin, params={"format": "json"})
    assert report.status_code == 200, report.text
    assert report.headers["X-PowerX-Report"] == "stored"
    document = report.json()
    trail = document.get("approval_trail") or document["approvals"]
    assert any(entry.get("jti") == jti for entry in trail), trail
    # the task's "Run report" link is this view, and opens from a logged-in browser (the cookie)
    written = stack.get(
        f"/api/v2/dags/{AUTO_DAG}/dagRuns/{run_id}/taskInstances/finalize.report"
        "/xcomEntries/return_value"
    )["value"]
    assert written["link"] == f"{stack.base_url}{API}/runs/{quote(run_id, safe='')}/report"
    html = httpx.get(written["link"], cookies={"_token": admin}, timeout=30)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    view = call(stack, "GET", f"/runs/{run_id}", token=admin).json()
    assert view["outcome"] == "rolled_back"
    assert [c["kind"] for c in view["controls"]] == ["rollback"]
    assert [a["jti"] for a in view["approvals"]] == [jti]
    assert view["batches"][0]["deployed"] >= 1


def test_a_pause_answered_stop_through_the_api_then_the_finished_run_rolled_back_by_the_dag(
    stack: AirflowStack, ledger: Ledger, sandbox_url: str
):
    pause_plan = "crm-sync-stack-pause"
    with httpx.Client(base_url=sandbox_url, timeout=10) as sandbox:
        sandbox.post("/sandbox/reset").raise_for_status()
        run_id = stack.trigger(PAUSE_DAG, {"target_version": "2.5.0", **artifact_for("2.5.0")})
        stack.wait_for_hitl(PAUSE_DAG, run_id, "batch_1.pause", timeout=RUN_TIMEOUT)
        admin = stack.token()

        def decide(decision: str, action: str) -> httpx.Response:
            return call(
                stack,
                "POST",
                f"/runs/{run_id}/decisions",
                token=admin,
                approval_token=approval(action, plan=pause_plan, run=run_id),
                json={"decision": decision, "batch": 1, "reason": "stack test"},
            )

        # a pause waits, not an approval: 'approve' has nothing to answer, its token stays unused
        nothing = decide("approve", "approve")
        assert nothing.status_code == 409 and _code(nothing) == "nothing_waiting", nothing.text
        assert ledger.approvals(run_id=run_id) == []

        stopped = decide("stop", "resume")
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["task_id"] == "batch_1.pause"
        assert stopped.json()["chosen"] == ["Stop"]
        assert stack.wait_for_run(PAUSE_DAG, run_id, timeout=RUN_TIMEOUT) == "failed", explain(
            stack, PAUSE_DAG, run_id
        )
        assert ledger.get_run(run_id).outcome == "stopped"
        left = sorted(t for t, v in versions(sandbox).items() if v["version"] == "2.5.0")
        assert left, "the stopped run left no tenant upgraded"

        # the finished run: one call, rolled back by plugin_upgrade_rollback
        started = time.monotonic()
        answer = call(
            stack,
            "POST",
            "/rollback",
            token=admin,
            approval_token=approval("rollback", plan=pause_plan, run=run_id),
            json={"run_id": run_id, "reason": "bronze errors after all"},
        )
        assert answer.status_code == 202, answer.text
        done = answer.json()
        assert done["mode"] == "rollback_dag" and done["dag_id"] == "plugin_upgrade_rollback"
        state = stack.wait_for_run("plugin_upgrade_rollback", done["dag_run_id"], RUN_TIMEOUT)
        assert state == "success", explain(stack, "plugin_upgrade_rollback", done["dag_run_id"])
        FIGURES["control plane: finished run, rollback call to rollback DAG done (s)"] = (
            time.monotonic() - started
        )
        after = versions(sandbox)
    assert all(after[t]["version"] == "2.3.1" for t in left)
    assert ledger.get_run(run_id).outcome == "rolled_back"
    (pause,) = [d for d in ledger.decisions(run_id) if d.kind == "pause"]
    assert (pause.decision, pause.actor, pause.via) == ("stop", "admin", "api")
    assert pause.detail["approval"] == stopped.json()["approval_jti"]
    (request,) = [c for c in ledger.controls(run_id) if c.kind == "rollback"]
    assert request.id == done["control_id"] and request.outcome == "applied", request
    assert {a.action for a in ledger.approvals(run_id=run_id)} == {"resume", "rollback"}


def test_post_plan_creates_a_plan_whose_dag_appears(stack: AirflowStack, stack_config):
    admin = stack.token()
    plan = {
        "plugin": "crm-sync",
        "policy": "stack-auto",
        "target_version": "2.4.0",
        "description": "written through the control-plane API",
        "tenants": {"select": {"tier": ["gold"]}},
    }
    started = time.monotonic()
    answer = call(
        stack, "POST", "/plan", token=admin, json={"plan_id": "crm-sync-api", "plan": plan}
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["dag_id"] == "plugin_upgrade__crm-sync-api"
    assert answer.json()["reparse_requested"] is True  # a priority parse of the loader file
    assert (stack_config / "plans" / "crm-sync-api.yaml").is_file()
    stack.wait_for_dags(["plugin_upgrade__crm-sync-api"], timeout=150)
    FIGURES["control plane: POST /plan to DAG visible (s)"] = time.monotonic() - started
    tasks = stack.get("/api/v2/dags/plugin_upgrade__crm-sync-api/tasks")["tasks"]
    assert "batch_1.gate" in {t["task_id"] for t in tasks}  # a real rollout DAG, not a broken one
    stale = call(
        stack,
        "POST",
        "/plan",
        token=admin,
        json={"plan_id": "crm-sync-api", "plan": plan},
        headers={"If-Match": '"0000"'},
    )
    assert stale.status_code == 412


def test_no_token_or_secret_appears_in_the_stacks_logs_or_reports(stack: AirflowStack):
    assert SECRETS_SEEN, "the tests above used no token"
    needles = {APPROVAL_SECRET, *SECRETS_SEEN}
    # a JWT's signature alone identifies it: look for that too
    needles |= {t.rsplit(".", 1)[-1] for t in SECRETS_SEEN if t.count(".") == 2}
    found = []
    for folder in (stack.home / "logs", stack.home / "reports"):
        for path in folder.rglob("*"):
            if path.is_file():
                text = path.read_text(encoding="utf-8", errors="replace")
                found += [(str(path), n[:12]) for n in needles if n in text]
    assert found == []


def _code(answer: httpx.Response) -> str | None:
    try:
        detail = answer.json()["detail"]
    except (ValueError, KeyError):
        return None
    if isinstance(detail, dict):
        return detail.get("code")
    if isinstance(detail, list) and detail:
        return detail[0].get("path")
    return None
