"""The UI pages served by the control plane's app (docs/ui.md), in-process against a real ledger:
what the Rollout tab and the Grey upgrades page show, who sees the action buttons, and the CSRF
rule that lets the Airflow UI's cookie act only from the page."""

from __future__ import annotations

import re

import pytest

from powerx_upgrade.api.ui.csrf import CSRF_HEADER, csrf_token
from tests.api.conftest import ADMIN, DAG, VIEWER, Api
from tests.api.test_runs_api import with_batches

pytestmark = pytest.mark.unit

MEASURED = {
    "check": 0,
    "metric": "error_rate",
    "scope": "batch",
    "op": "<=",
    "limit": "0.05",
    "threshold": 0.05,
    "samples": 800,
    "phase": "pass",
}


def rollout(api: Api, run_id: str, headers: dict[str, str], part: str = "") -> str:
    answer = api.client.get(
        f"/ui/rollout{part}", params={"dag_id": DAG, "run_id": run_id}, headers=headers
    )
    assert answer.status_code == 200, answer.text
    return answer.text


def test_the_rollout_tab_shows_batches_live_gate_values_and_verdicts_in_words(api: Api):
    run_id = with_batches(api)
    api.ledger.record_gate(
        run_id,
        1,
        phase="pass",
        reason="ok",
        measurements=[{**MEASURED, "value": 0.011}],
        final=False,
    )
    page = rollout(api, run_id, ADMIN)
    assert 'data-testid="batch-1"' in page and 'data-testid="batch-2"' in page
    assert re.search(r'data-live="value">1.10%<', page)
    assert 'data-live="pokes">1<' in page
    api.ledger.record_gate(
        run_id,
        1,
        phase="pass",
        reason="within limits",
        measurements=[{**MEASURED, "value": 0.02}],
        final=True,
    )
    live = api.client.get(
        "/ui/rollout/live", params={"dag_id": DAG, "run_id": run_id}, headers=ADMIN
    ).json()
    assert re.search(r'data-live="value">2.00%<', live["html"])
    assert (
        "Batch 1 (canary, 2 tenants) passed its gate: error_rate 2.00% (limit &lt;= 5.00%, "
        "800 samples): pass" in live["html"]
    )
    assert live["active"] is True


def test_an_editor_sees_the_action_buttons_and_a_viewer_none(api: Api):
    run_id = with_batches(api)
    editor = rollout(api, run_id, ADMIN)
    actions = re.findall(r'data-action="(\w+)"', editor)
    assert actions == ["approve", "reject", "pause", "resume", "rollback"]
    assert 'id="act-token"' in editor and 'for="act-token"' in editor
    viewer = rollout(api, run_id, VIEWER)
    assert re.findall(r'data-action="(\w+)"', viewer) == []
    assert 'data-testid="read-only"' in viewer


def test_a_page_without_login_says_so_in_html(api: Api):
    answer = api.client.get("/ui/rollout", params={"dag_id": DAG, "run_id": "x"})
    assert answer.status_code == 401
    assert answer.headers["content-type"].startswith("text/html")
    assert "Log in to Airflow" in answer.text


def test_a_run_not_in_the_ledger_says_it_will_appear(api: Api):
    assert 'data-testid="not-in-ledger"' in rollout(api, "manual__unknown", ADMIN)


def test_the_cookie_acts_only_with_the_pages_csrf_token_and_is_recorded_as_ui(api: Api):
    run_id = with_batches(api)
    api.client.cookies.set("_token", "admin-token")
    body = {"decision": "pause", "reason": "look closer"}
    token = {"X-Approval-Token": api.token("takeover")}
    refused = api.client.post(f"/runs/{run_id}/decisions", json=body, headers=token)
    assert refused.status_code == 401 and CSRF_HEADER in refused.json()["detail"]["message"]
    forged = api.client.post(
        f"/runs/{run_id}/decisions", json=body, headers={**token, CSRF_HEADER: "0" * 64}
    )
    assert forged.status_code == 401
    page = api.client.get("/ui/rollout", params={"dag_id": DAG, "run_id": run_id}).text
    assert f'data-csrf="{csrf_token("admin-token")}"' in page
    done = api.client.post(
        f"/runs/{run_id}/decisions",
        json=body,
        headers={**token, CSRF_HEADER: csrf_token("admin-token")},
    )
    assert done.status_code == 202, done.text
    [control] = api.ledger.controls(run_id)
    assert (control.kind, control.actor, control.via) == ("pause", "alice", "ui")


def test_the_grey_upgrades_page_shows_fleet_drift_runs_and_problems(api: Api):
    run_id = with_batches(api)
    settings = api.client.app.state.powerx_settings
    settings.platform_tenants = lambda plugin: [
        {"id": "t-1", "version": "2.4.0"},
        {"id": "t-2", "version": "2.3.1"},
        {"id": "t-3", "version": "2.3.1"},
    ]
    page = api.client.get("/ui/grey-upgrades", headers=VIEWER)
    assert page.status_code == 200, page.text
    text = page.text
    assert 'data-testid="fleet-crm-sync"' in text
    assert re.search(r"<td>2.3.1</td><td class=\"num\">2</td>", text)
    assert run_id in text and "0 of 2 batches done" in text
    # Airflow is not reachable in this test: the page says so instead of "nothing waits"
    assert "could not be read" in text


def test_the_ui_files_are_served_and_others_are_not(api: Api):
    assert "data-theme" in api.client.get("/ui/static/ui.css").text
    assert api.client.get("/ui/static/ui.js").status_code == 200
    assert api.client.get("/ui/static/secret.py").status_code == 404
