"""Issue 15's control-plane reproductions: no input answers 500; every refusal (the JSON
parser's 400, the router's 404 and 405 included) has the documented error body and an
`api.refused` record; nothing is written that cannot be read back."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import ADMIN, Api
from tests.api.test_plans_api import NEW_PLAN

pytestmark = pytest.mark.unit


def lenient(api: Api) -> TestClient:
    """A client that sees the 500 a server fault answers instead of the exception."""
    return TestClient(api.client.app, raise_server_exceptions=False)


def post_raw(client: TestClient, path: str, text: str | bytes) -> Any:
    return client.post(path, content=text, headers={**ADMIN, "content-type": "application/json"})


def assert_documented(answer: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    if isinstance(detail, list):  # a 422 lists its problems
        assert detail and all({"path", "message"} <= set(p) for p in detail), detail
    else:
        assert set(detail) == {"code", "message"} and detail["message"], detail
        if code is not None:
            assert detail["code"] == code, detail
    return detail


def test_a_5000_character_time_zone_is_refused_not_a_500(api: Api):
    plan = {
        **NEW_PLAN,
        "window": {"schedule": "0 2 * * SAT", "duration": "4h", "timezone": "A" * 5000},
    }
    answer = lenient(api).post("/plan", json={"plan_id": "long-tz", "plan": plan}, headers=ADMIN)
    detail = assert_documented(answer, 422)
    assert "plan" in json.dumps(detail)
    assert not (api.config / "plans" / "long-tz.yaml").exists()
    assert api.refusals()[-1]["status"] == 422


def test_a_body_nested_400_levels_is_refused_naming_the_path(api: Api):
    nested: dict[str, Any] = {}
    cursor = nested
    for _ in range(400):
        cursor["a"] = {}
        cursor = cursor["a"]
    answer = lenient(api).post(
        "/plan", json={"plan_id": "deep", "plan": {**NEW_PLAN, "x-deep": nested}}, headers=ADMIN
    )
    (problem,) = assert_documented(answer, 422)
    assert "body.plan.x-deep.a" in problem["message"] and "deeper than 32" in problem["message"]
    assert not (api.config / "plans" / "deep.yaml").exists()
    assert api.refusals()[-1]["reason"] == "invalid_body"


def test_a_lone_surrogate_is_refused_before_anything_is_written(api: Api):
    client = lenient(api)
    body = json.dumps({"plan_id": "surrogate", "plan": {**NEW_PLAN, "description": "\ud800"}})
    (problem,) = assert_documented(post_raw(client, "/plan", body), 422)
    assert "body.plan.description" in problem["message"] and "surrogate" in problem["message"]
    assert not (api.config / "plans" / "surrogate.yaml").exists()
    assert not api.accepted()
    assert_documented(client.get("/plans/surrogate", headers=ADMIN), 404, "unknown_plan")
    # an unknown key that is itself a lone surrogate: the answer quoting it is still JSON
    odd_key = json.dumps({"plan_id": "x", "plan": {}, "\udc80": 1})
    assert_documented(post_raw(client, "/plan", odd_key), 422)


@pytest.mark.parametrize("alg", [["HS256"], {"alg": "HS256"}, None, 7])
def test_an_approval_token_whose_alg_is_not_a_string_is_refused_and_audited(api: Api, alg):
    run_id = api.start_run()

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    token = f"{part({'alg': alg, 'typ': 'JWT'})}.{part({'sub': 'x', 'jti': 'j'})}.c2ln"
    answer = lenient(api).post(
        "/rollback",
        json={"run_id": run_id, "reason": "odd alg"},
        headers={**ADMIN, "X-Approval-Token": token},
    )
    assert_documented(answer, 403, "forged")
    assert [r["reason"] for r in api.refusals()] == ["forged"]
    assert token not in json.dumps(api.refusals())
    assert not api.ledger.approvals(run_id=run_id)


def test_a_not_finite_number_is_refused_before_it_is_echoed(api: Api):
    run_id = api.start_run()
    body = '{"adjust": {"batches": NaN}, "reason": "x"}'
    answer = lenient(api).patch(
        f"/runs/{run_id}", content=body, headers={**ADMIN, "content-type": "application/json"}
    )
    (problem,) = assert_documented(answer, 422)
    assert "not a finite number" in problem["message"]


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "code"),
    [
        ("POST", "/plan", b"{not json", 422, None),
        ("POST", "/plan", b"[" * 30_000, 400, "malformed_body"),
        ("POST", "/plan", b'{"plan_id": 1' + b"0" * 5000 + b"}", 400, "malformed_body"),
        ("GET", "/no/such/route", None, 404, "not_found"),
        ("DELETE", "/plan", None, 405, "method_not_allowed"),
        ("PUT", "/runs/r1/decisions", b"{}", 405, "method_not_allowed"),
    ],
)
def test_parser_and_router_refusals_have_the_error_body_and_are_audited(
    api: Api, method, path, content, status, code
):
    answer = lenient(api).request(
        method, path, content=content, headers={**ADMIN, "content-type": "application/json"}
    )
    assert_documented(answer, status, code)
    (record,) = api.refusals()
    assert record["status"] == status and record["path"] == path
    assert record["method"] == method and record["user"] == "alice"
    if status == 405:
        assert answer.headers["allow"]


def test_a_fault_inside_a_route_answers_the_documented_500_and_is_audited(api: Api, monkeypatch):
    from powerx_upgrade.api import views

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug in the status view")

    monkeypatch.setattr(views, "run_view", broken)
    run_id = api.start_run()
    answer = lenient(api).get(f"/runs/{run_id}", headers=ADMIN)
    detail = assert_documented(answer, 500, "internal_error")
    assert "RuntimeError" in detail["message"] and "error id" in detail["message"]
    assert api.refusals()[-1]["reason"] == "internal_error"


LOOSE_OVERRIDES = {"overrides": {"deploy": {"concurrency": 500}}}


def test_a_plan_that_loosens_its_policy_needs_an_approval_token(api: Api):
    plan = {**NEW_PLAN, **LOOSE_OVERRIDES}
    body = {"plan_id": "loose", "plan": plan}
    refused = api.client.post("/plan", json=body, headers=ADMIN)
    detail = assert_documented(refused, 401, "missing")
    assert "deploy.concurrency: 10 -> 500" in detail["message"]
    assert not (api.config / "plans" / "loose.yaml").exists()

    token = api.token("adjust", plan="loose")
    done = api.client.post("/plan", json=body, headers={**ADMIN, "X-Approval-Token": token})
    assert done.status_code == 201, done.text
    assert done.json()["loosened"] == ["deploy.concurrency"]
    (used,) = api.ledger.approvals()
    assert used.action == "adjust" and used.plan_id == "loose"
    assert api.accepted()[-1]["approval_jti"] == used.jti


def test_tightening_an_existing_plan_needs_no_token_but_undoing_it_does(api: Api):
    plan = {**NEW_PLAN, "overrides": {"deploy": {"concurrency": 2}}}
    created = api.client.post("/plan", json={"plan_id": "tight", "plan": plan}, headers=ADMIN)
    assert created.status_code == 201, created.text  # tighter than the named policy
    etag = created.json()["etag"]
    back = api.client.post(
        "/plan", json={"plan_id": "tight", "plan": NEW_PLAN}, headers={**ADMIN, "If-Match": etag}
    )
    detail = assert_documented(back, 401, "missing")
    assert "deploy.concurrency: 2 -> 10" in detail["message"]
    wrong = api.token("rollback", plan="tight")
    forged = api.client.post(
        "/plan",
        json={"plan_id": "tight", "plan": NEW_PLAN},
        headers={**ADMIN, "If-Match": etag, "X-Approval-Token": wrong},
    )
    assert_documented(forged, 403, "wrong_action")
    assert [r["reason"] for r in api.refusals()] == ["missing", "wrong_action"]
