"""The release manager's cockpit in a real browser (headless Chromium + Playwright) against the
live session stack: log in, trigger a plan from Airflow's trigger form, watch the Rollout tab
advance through a batch (a live value changes without a reload), approve the waiting batches
from it, open the finished run and its report, see case B's rollback with every tenant
verified, and check that a viewer sees no action buttons. Screenshots: test-output/ui/."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from powerx_dev.devstack import AirflowStack
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.security.approval import issue_approval
from tests.stack.conftest import APPROVAL_DAG, APPROVAL_SECRET, AUTO_DAG, RUN_TIMEOUT, explain
from tests.stack.ui.conftest import SHOTS, shot

pytestmark = pytest.mark.stack

PLAN = APPROVAL_DAG.removeprefix("plugin_upgrade__")
FINISHED: dict[str, str] = {}
"""The run the first test finished, for the viewer's test."""


def tab(dag_id: str, run_id: str) -> str:
    return f"/dags/{dag_id}/runs/{run_id}/plugin/powerx-rollout"


def rollout_frame(page: Any) -> Any:
    """The Rollout tab's iframe, once its page has loaded."""
    try:
        page.wait_for_selector("iframe", timeout=90_000)
        frame = page.frame_locator("iframe").first
        frame.locator("#rollout").wait_for(timeout=90_000)
    except Exception:
        shot(page, "failed-no-rollout-frame")
        raise
    return frame


def run_runs(stack: AirflowStack, dag_id: str) -> set[str]:
    runs = stack.api.get(f"/api/v2/dags/{dag_id}/dagRuns", limit=100)["dag_runs"]
    return {r["dag_run_id"] for r in runs}


def trigger_from_form(page: Any, stack: AirflowStack, dag_id: str) -> str:
    stack.unpause(dag_id)  # the form's run would wait in the queue of a paused DAG
    before = run_runs(stack, dag_id)
    page.goto(f"/dags/{dag_id}")
    page.get_by_role("button", name=re.compile(r"^trigger", re.I)).first.click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    reason = dialog.get_by_label(re.compile(r"change reason", re.I))
    if reason.count() == 0:
        reason = dialog.locator("[id*=reason], [name*=reason]")
    try:
        reason.first.fill("UI test: roll out 2.4.0 from the trigger form", timeout=10_000)
    except Exception:
        (SHOTS / "trigger-dialog.html").write_text(dialog.inner_html())
        raise
    shot(page, "02-trigger-form")
    dialog.get_by_role("button", name=re.compile(r"^trigger", re.I)).last.click()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        new = run_runs(stack, dag_id) - before
        if new:
            return new.pop()
        time.sleep(0.5)
    raise AssertionError("the trigger form started no run")


def approve_in_tab(frame: Any, run_id: str, batch: int) -> None:
    token = issue_approval(
        APPROVAL_SECRET, subject="release-approver", action="approve", plan_id=PLAN, run_id=run_id
    )
    frame.locator("#act-reason").fill(f"batch {batch} looks healthy in the Rollout tab")
    frame.locator("#act-token").fill(token)
    frame.locator("#act-batch").fill(str(batch))
    frame.get_by_role("button", name="Approve").click()
    frame.locator("#act-result.ok, #act-result.refused").wait_for(timeout=90_000)
    said = frame.locator("#act-result").inner_text()
    assert "approve accepted" in said, said


def wait_waiting(frame: Any, batch: int) -> str:
    line = frame.locator("[data-testid=waiting-line]", has_text=f"batch {batch} waits for approval")
    line.wait_for(timeout=RUN_TIMEOUT * 1000)
    return line.inner_text()


def test_trigger_watch_live_approve_and_open_the_finished_report(
    admin_page: Any, stack: AirflowStack, ledger: Ledger, sandbox: httpx.Client
):
    page = admin_page
    run_id = trigger_from_form(page, stack, APPROVAL_DAG)
    page.goto(tab(APPROVAL_DAG, run_id))
    frame = rollout_frame(page)
    loaded = frame.locator("body").evaluate("() => window.powerxPageLoadedAt")

    # the run enters the ledger, batch 1 deploys and bakes: the count of gate evaluations and
    # the gate's values change on the page without a reload
    pokes = frame.locator("[data-live=pokes]")
    pokes.wait_for(timeout=RUN_TIMEOUT * 1000)
    first = pokes.inner_text()
    shot(page, "03-rollout-deploying")
    deadline = time.monotonic() + RUN_TIMEOUT
    while pokes.inner_text() == first:
        if time.monotonic() > deadline:
            shot(page, "failed-no-live-change")
            raise AssertionError(
                f"no new gate evaluation shown after {first}\n"
                + explain(stack, APPROVAL_DAG, run_id)
            )
        time.sleep(0.25)
    frame.locator("[data-testid=gate-1]").wait_for()
    assert frame.locator("body").evaluate("() => window.powerxPageLoadedAt") == loaded
    shot(page, "04-rollout-live-update")

    # batch 2 waits for approval: the tab and the Grey upgrades page say so, with who may answer
    said = wait_waiting(frame, 2)
    assert re.fullmatch(r"batch 2 waits for approval since \d\d:\d\d:\d\d", said), said
    assert "Batch 1 (" in frame.locator("[data-testid=verdict-1]").inner_text()
    shot(page, "05-rollout-waits-for-approval")
    page.goto("/plugin/grey-upgrades")
    fleet = page.frame_locator("iframe").first
    fleet.locator("[data-testid=waiting]").wait_for()
    assert run_id in fleet.locator("[data-testid=waiting]").inner_text()
    assert fleet.locator("[data-testid=fleet-crm-sync]").count() == 1
    shot(page, "06-grey-upgrades")

    # approve batches 2 and 3 from the tab, through the control plane
    page.goto(tab(APPROVAL_DAG, run_id))
    frame = rollout_frame(page)
    wait_waiting(frame, 2)
    approve_in_tab(frame, run_id, 2)
    shot(page, "07-approved-batch-2")
    wait_waiting(frame, 3)
    approve_in_tab(frame, run_id, 3)

    state = stack.wait_for_run(APPROVAL_DAG, run_id, timeout=RUN_TIMEOUT)
    assert state == "success", explain(stack, APPROVAL_DAG, run_id)
    approvals = [
        (d.batch_index, d.decision, d.actor, d.via)
        for d in ledger.decisions(run_id)
        if d.kind == "approval" and d.decision != "not_required"
    ]
    assert approvals == [(2, "approve", "admin", "ui"), (3, "approve", "admin", "ui")]
    tenants = sandbox.get("/sandbox/tenants", params={"plugin": "crm-sync"}).json()["tenants"]
    upgraded = {t["id"] for t in tenants if t["version"] == "2.4.0"}
    planned = {t for b in (ledger.get_run(run_id).batches or []) for t in b["tenants"]}
    assert planned and planned <= upgraded

    # the finished run: the same tab from the stored report, and the full report
    page.goto(tab(APPROVAL_DAG, run_id))
    frame = rollout_frame(page)
    assert "from its stored report" in frame.locator("header").first.inner_text()
    assert frame.locator("[data-testid=run-state]").inner_text() == "promoted"
    assert frame.locator("[data-action]").count() == 1  # only Roll back is left
    shot(page, "08-finished-run")
    frame.locator("[data-testid=report-link]").click()  # the report opens in the tab's frame
    frame.locator("body", has_text=run_id).wait_for()
    assert frame.locator("#rollout").count() == 0
    shot(page, "09-report")
    FINISHED["run_id"] = run_id


def test_case_b_rollback_shows_every_tenant_verified(admin_page: Any, case_b: Any, ledger: Ledger):
    page = admin_page
    page.goto(tab(AUTO_DAG, case_b.run_id))
    frame = rollout_frame(page)
    counts = frame.locator("[data-testid=rollback-counts]").inner_text()
    targets = (ledger.get_run(case_b.run_id).detail or {}).get("rollback_targets") or []
    assert targets
    assert f"{len(targets)} of {len(targets)} tenants verified" in counts, counts
    rows = frame.locator("[data-testid=rollback-tenants] tbody tr")
    assert rows.count() == len(targets)
    assert frame.locator(
        "[data-testid=rollback-tenants] .badge.pass", has_text="verified"
    ).count() == len(targets)
    assert frame.locator("[data-testid=run-state]").inner_text() == "rolled_back"
    shot(page, "11-case-b-rollback")


def test_a_viewer_sees_the_rollout_but_no_action_buttons(viewer_page: Any, case_b: Any):
    page = viewer_page
    run_id = FINISHED.get("run_id")
    dag_id = APPROVAL_DAG if run_id else AUTO_DAG
    page.goto(tab(dag_id, run_id or case_b.run_id))
    frame = rollout_frame(page)
    frame.locator("[data-testid=timeline]").wait_for()
    assert frame.locator("[data-action]").count() == 0
    assert frame.locator("[data-testid=read-only]").count() == 1
    shot(page, "12-viewer-no-buttons")
