"""Every refusal answers a clear JSON error, changes nothing and is audited (`api.refused`):
no or bad Airflow token, too little access, oversized bodies, bad bodies, and every kind of
bad approval token."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.api.conftest import ADMIN, NOW, PLAN, VIEWER, Api

pytestmark = pytest.mark.unit


def state(api: Api, run_id: str) -> tuple:
    """What a refused request must not change: controls, approvals, the run, plan files."""
    plans = api.config / "plans"
    return (
        [c.to_json() for c in api.ledger.controls(run_id)],
        [a.to_json() for a in api.ledger.approvals()],
        api.ledger.get_run(run_id).to_json(),
        sorted(p.name for p in plans.iterdir()) if plans.exists() else [],
    )


def rollback(api: Api, run_id: str, token: str | None, headers: dict | None = None):
    sent = {**(ADMIN if headers is None else headers)}
    if token is not None:
        sent["X-Approval-Token"] = token
    return api.client.post(
        "/rollback", json={"run_id": run_id, "reason": "bad canary"}, headers=sent
    )


def test_no_airflow_token_is_401_and_a_bad_one_403(api: Api):
    run_id = api.start_run()
    before = state(api, run_id)
    none = api.client.post("/rollback", json={"run_id": run_id, "reason": "x"})
    assert none.status_code == 401
    assert none.json()["detail"]["code"] == "not_authenticated"
    forged = api.client.post(
        "/rollback", json={"run_id": run_id, "reason": "x"}, headers={"Authorization": "Bearer eyJ"}
    )
    assert forged.status_code == 403
    assert state(api, run_id) == before
    assert [(r["reason"], r["user"], r["path"]) for r in api.refusals()] == [
        ("not_authenticated", None, "/rollback"),
        ("invalid_token", None, "/rollback"),
    ]


def test_a_viewer_may_read_a_run_but_not_roll_it_back(api: Api):
    run_id = api.start_run()
    before = state(api, run_id)
    assert api.client.get(f"/runs/{run_id}", headers=VIEWER).status_code == 200
    answer = rollback(api, run_id, api.token("rollback"), headers=VIEWER)
    assert answer.status_code == 403
    assert "victor" in answer.json()["detail"]["message"]
    assert state(api, run_id) == before


def test_a_body_over_64_kib_is_413_by_length_and_by_what_streams_in(api: Api):
    big = b'{"plan_id": "x", "plan": {"description": "' + b"a" * 70_000 + b'"}}'
    declared = api.client.post(
        "/plan", content=big, headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert declared.status_code == 413
    assert declared.json()["detail"]["code"] == "body_too_large"

    def chunks():
        for _ in range(80):
            yield b"a" * 1024

    streamed = api.client.post(
        "/plan", content=chunks(), headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert [(r["reason"], r["user"]) for r in api.refusals()] == [
        ("body_too_large", "alice"),
        ("body_too_large", "alice"),
    ]
    assert not (api.config / "plans").exists()


def test_a_body_just_under_the_limit_goes_through(api: Api):
    run_id = api.start_run()
    answer = api.client.post(
        "/rollback",
        json={"run_id": run_id, "reason": "r" * 1900, "extra": "e" * 60_000},
        headers=ADMIN,
    )
    assert answer.status_code == 422  # read whole and judged by its fields, not its size
    assert {"path": "extra", "message": "unknown field 'extra'"} in answer.json()["detail"]


def test_a_bad_body_names_each_field(api: Api):
    answer = api.client.post("/rollback", json={"run_id": "r", "scope": "all"}, headers=ADMIN)
    assert answer.status_code == 422
    paths = {p["path"] for p in answer.json()["detail"]}
    assert paths == {"scope", "reason"}
    assert api.refusals()[0]["reason"] == "invalid_body"


def test_an_unknown_run_is_404(api: Api):
    answer = rollback(api, "manual__nope", api.token("rollback"))
    assert answer.status_code == 404
    assert answer.json()["detail"]["code"] == "unknown_run"
    assert api.ledger.approvals() == []


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        (lambda api, run: None, 401, "missing"),
        (lambda api, run: api.token("rollback", key="another-secret-" + "x" * 30), 403, "forged"),
        (lambda api, run: api.token("rollback", now=NOW - timedelta(hours=2)), 403, "expired"),
        (lambda api, run: api.token("takeover"), 403, "wrong_action"),
        (lambda api, run: api.token("rollback", plan="crm-sync-other"), 403, "wrong_plan"),
        (lambda api, run: api.token("rollback", run="manual__other"), 403, "wrong_run"),
        (lambda api, run: api.token("rollback", mfa=False), 403, "mfa_required"),
        (lambda api, run: api.token("rollback", audience="someone-else"), 403, "wrong_audience"),
        (lambda api, run: "not-a-jwt", 403, "malformed"),
    ],
)
def test_a_bad_approval_token_is_refused_audited_and_changes_nothing(api: Api, make, status, code):
    run_id = api.start_run()
    before = state(api, run_id)
    answer = rollback(api, run_id, make(api, run_id))
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert detail["code"] == code
    assert detail["message"]
    assert state(api, run_id) == before
    (refusal,) = api.refusals()
    assert (refusal["reason"], refusal["user"], refusal["status"]) == (code, "alice", status)
    approval_refusals = [
        r.payload for r in api.ledger.audit_records() if r.event == "approval.refused"
    ]
    assert [r["reason"] for r in approval_refusals] == [code]


def test_a_replayed_approval_token_is_refused_the_second_time(api: Api):
    run_id = api.start_run()
    token = api.token("rollback", run=run_id)
    first = rollback(api, run_id, token)
    # the control is recorded; Airflow (not running here) could not say whether a pause waits
    assert first.status_code == 202, first.text
    assert first.json()["mode"] == "active_run"
    after_first = state(api, run_id)
    second = rollback(api, run_id, token)
    assert second.status_code == 403
    assert second.json()["detail"]["code"] == "replayed"
    assert state(api, run_id) == after_first
    (control,) = api.ledger.controls(run_id)
    assert (control.kind, control.actor, control.via) == ("rollback", "alice", "api")
    assert control.approval_jti == first.json()["approval_jti"]
    assert control.payload == {"scope": "all_upgraded", "reason": "bad canary"}


def test_no_token_ever_lands_in_the_audit_outbox(api: Api):
    run_id = api.start_run()
    token = api.token("rollback")
    rollback(api, run_id, token)
    rollback(api, run_id, token)
    rollback(api, run_id, api.token("rollback", mfa=False))
    text = str([r.payload for r in api.ledger.audit_records()])
    assert token not in text and token.split(".")[2] not in text
    assert "admin-token" not in text


def test_a_dry_run_or_a_rolled_back_run_is_not_rolled_back_again(api: Api):
    dry = api.start_run("manual__dry", dry_run=True)
    answer = rollback(api, dry, api.token("rollback"))
    assert answer.status_code == 409 and answer.json()["detail"]["code"] == "dry_run"
    done = api.start_run("manual__done")
    api.ledger.finish_run(done, "rolled_back")
    answer = rollback(api, done, api.token("rollback"))
    assert answer.status_code == 409 and answer.json()["detail"]["code"] == "already_rolled_back"
    assert api.ledger.approvals() == []


def test_a_finished_run_needs_airflow_before_its_token_is_used(api: Api):
    done = api.start_run("manual__done")
    api.ledger.finish_run(done, "promoted")
    answer = rollback(api, done, api.token("rollback"))
    assert answer.status_code == 502
    assert answer.json()["detail"]["code"] == "airflow_unreachable"
    assert api.ledger.approvals() == [] and api.ledger.controls(done) == []


def test_rollback_by_plan_picks_the_plans_active_run(api: Api):
    api.start_run("manual__old")
    api.ledger.finish_run("manual__old", "promoted")
    active = api.start_run("manual__new")
    answer = api.client.post(
        "/rollback",
        json={"plan_id": PLAN, "reason": "x"},
        headers={**ADMIN, "X-Approval-Token": api.token("rollback")},
    )
    assert answer.status_code == 202, answer.text
    assert answer.json()["run_id"] == active
    wrong = api.client.post("/rollback", json={"plan_id": "../x", "reason": "x"}, headers=ADMIN)
    assert wrong.status_code == 422


def test_the_ui_cookie_reads_but_never_changes_anything(api: Api):
    run_id = api.start_run()
    before = state(api, run_id)
    cookie = {"Cookie": "_token=admin-token"}
    assert api.client.get(f"/runs/{run_id}", headers=cookie).status_code == 200
    answer = api.client.post(
        "/rollback",
        json={"run_id": run_id, "reason": "x"},
        headers={**cookie, "X-Approval-Token": api.token("rollback")},
    )
    assert answer.status_code == 401
    assert "reading only" in answer.json()["detail"]["message"]
    assert state(api, run_id) == before
