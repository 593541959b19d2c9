"""GET /runs/{run_id}, PATCH /runs/{run_id}, POST /runs/{run_id}/decisions (the controls that
need no waiting human decision) and GET /runs/{run_id}/report, against a real ledger."""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import ADMIN, VIEWER, Api

pytestmark = pytest.mark.unit

BATCHES = [
    {"index": 1, "name": "canary", "tenants": ["t-1", "t-2"], "cumulative_ratio": 0.2},
    {"index": 2, "name": "rest", "tenants": ["t-3", "t-4", "t-5"], "cumulative_ratio": 1.0},
]


def with_batches(api: Api, run_id: str = "manual__r1") -> str:
    api.start_run(run_id)
    api.ledger.update_run(run_id, batches=BATCHES)
    return run_id


def decide(api: Api, run_id: str, decision: str, token: str | None, **body):
    headers = {**ADMIN, **({"X-Approval-Token": token} if token else {})}
    return api.client.post(
        f"/runs/{run_id}/decisions",
        json={"decision": decision, "reason": "watching it", **body},
        headers=headers,
    )


def test_a_run_shows_its_batches_decisions_controls_and_approvals(api: Api):
    run_id = with_batches(api)
    api.ledger.record_gate(
        run_id, 1, phase="pass", reason="all checks pass", measurements=[], final=True
    )
    api.ledger.record_decision(run_id, batch_index=1, kind="decide", decision="promote", via="auto")
    assert decide(api, run_id, "takeover", api.token("takeover")).status_code == 202

    view = api.client.get(f"/runs/{run_id}", headers=VIEWER)
    assert view.status_code == 200, view.text
    body = view.json()
    assert (body["plan_id"], body["status"], body["outcome"]) == ("crm-sync-stack", "running", None)
    assert [(b["index"], b["tenants"], b["verdict"]) for b in body["batches"]] == [
        (1, 2, "pass"),
        (2, 3, None),
    ]
    assert [(d["kind"], d["decision"]) for d in body["decisions"]] == [("decide", "promote")]
    assert [(c["kind"], c["actor"], c["via"]) for c in body["controls"]] == [
        ("takeover", "alice", "api")
    ]
    assert [(a["action"], a["subject"], a["via"]) for a in body["approvals"]] == [
        ("takeover", "ops-approver", "api")
    ]
    assert body["takeover"] is True and body["takeover_by"] == "alice"


def test_takeover_and_release_are_recorded_and_a_release_without_takeover_is_409(api: Api):
    run_id = with_batches(api)
    nothing = decide(api, run_id, "release", api.token("takeover"))
    assert nothing.status_code == 409 and nothing.json()["detail"]["code"] == "no_takeover"
    assert api.ledger.approvals() == []  # refused before the token was used up

    assert decide(api, run_id, "takeover", api.token("takeover")).status_code == 202
    again = decide(api, run_id, "takeover", api.token("takeover"))
    assert again.status_code == 409
    released = decide(api, run_id, "release", api.token("takeover"), batch=2)
    assert released.status_code == 202, released.text
    assert [(c.kind, c.batch_index) for c in api.ledger.controls(run_id)] == [
        ("takeover", None),
        ("release", 2),
    ]
    assert [p["operation"] for p in api.accepted()] == ["decision.takeover", "decision.release"]


def test_pause_needs_a_takeover_token_and_a_pause_answer_needs_a_waiting_pause(api: Api):
    run_id = with_batches(api)
    wrong = decide(api, run_id, "pause", api.token("resume"))
    assert wrong.status_code == 403 and wrong.json()["detail"]["code"] == "wrong_action"
    paused = decide(api, run_id, "pause", api.token("takeover"))
    assert paused.status_code == 202
    assert [c.kind for c in api.ledger.controls(run_id)] == ["pause"]


def test_a_decision_on_a_finished_run_is_409(api: Api):
    run_id = with_batches(api)
    api.ledger.finish_run(run_id, "promoted")
    answer = decide(api, run_id, "takeover", api.token("takeover"))
    assert answer.status_code == 409 and answer.json()["detail"]["code"] == "run_finished"


def test_an_adjustment_is_validated_with_paths_then_recorded(api: Api):
    run_id = with_batches(api)
    bad = api.client.patch(
        f"/runs/{run_id}",
        json={"adjust": {"batches": {"9": {"ratio": 0.5}}, "bake": "soon"}, "reason": "x"},
        headers={**ADMIN, "X-Approval-Token": api.token("adjust")},
    )
    assert bad.status_code == 422, bad.text
    paths = {p["path"] for p in bad.json()["detail"]}
    assert "adjust.bake" in paths
    assert api.ledger.controls(run_id) == [] and api.ledger.approvals() == []

    good = api.client.patch(
        f"/runs/{run_id}",
        json={"adjust": {"checks": [{"metric": "error_rate", "limit": 0.03}]}, "reason": "tighter"},
        headers={**ADMIN, "X-Approval-Token": api.token("adjust")},
    )
    assert good.status_code == 202, good.text
    (control,) = api.ledger.controls(run_id)
    assert control.kind == "adjust"
    assert control.payload == {
        "adjust": {"checks": [{"metric": "error_rate", "limit": 0.03}]},
        "reason": "tighter",
    }
    from powerx_upgrade.config import load_config
    from powerx_upgrade.rollout.controls import effective_policy

    plan = load_config([api.config]).plans["crm-sync-stack"]
    policy = effective_policy(plan, api.ledger, run_id)
    assert [c.limit.value for c in policy.gate.checks if c.metric == "error_rate"] == [0.03]


def test_the_stored_report_is_served_in_each_format(api: Api):
    run_id = with_batches(api, "manual__2026-03-07T02:00:00+00:00")
    api.ledger.finish_run(run_id, "promoted")
    folder = api.reports / "crm-sync-stack" / "manual__2026-03-07T02_00_00_00_00"
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({"approvals": [{"decision": "approve"}]}))
    (folder / "report.html").write_text("<html>stored</html>")
    answer = api.client.get(f"/runs/{run_id}/report", params={"format": "json"}, headers=VIEWER)
    assert answer.status_code == 200
    assert answer.json()["approvals"] == [{"decision": "approve"}]
    assert answer.headers["X-PowerX-Report"] == "stored"
    html = api.client.get(f"/runs/{run_id}/report", headers={"Cookie": "_token=viewer-token"})
    assert html.status_code == 200 and html.text == "<html>stored</html>"
    assert html.headers["content-type"].startswith("text/html")
    missing = api.client.get(f"/runs/{run_id}/report", params={"format": "md"}, headers=VIEWER)
    assert missing.status_code == 404 and missing.json()["detail"]["code"] == "no_report"


def test_an_active_runs_report_is_built_live_from_the_ledger(api: Api):
    run_id = with_batches(api)
    answer = api.client.get(f"/runs/{run_id}/report", params={"format": "json"}, headers=VIEWER)
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-PowerX-Report"] == "live"
    assert answer.json()["run"]["run_id"] == run_id
    assert answer.json()["outcome"] == "unfinished"
