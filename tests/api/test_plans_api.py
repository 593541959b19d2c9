"""POST /plan and GET /plans/{plan_id}: validated by the policy engine with the rest of the
config, written atomically to plans/<plan_id>.yaml, versioned by ETag."""

from __future__ import annotations

import hashlib

import pytest

from powerx_upgrade.config import load_config
from tests.api.conftest import ADMIN, VIEWER, Api

pytestmark = pytest.mark.unit

NEW_PLAN = {
    "plugin": "crm-sync",
    "policy": "stack-auto",
    "target_version": "2.4.0",
    "tenants": {"select": {"tier": ["gold"]}},
}


def post(api: Api, plan_id: str, plan: dict, headers: dict | None = None):
    return api.client.post(
        "/plan", json={"plan_id": plan_id, "plan": plan}, headers={**ADMIN, **(headers or {})}
    )


def test_a_new_plan_is_written_validated_and_loads_as_a_dag_of_the_config(api: Api):
    answer = post(api, "crm-sync-gold", NEW_PLAN)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    path = api.config / "plans" / "crm-sync-gold.yaml"
    assert body["dag_id"] == "plugin_upgrade__crm-sync-gold"
    assert body["reparse_requested"] is False  # no Airflow here: the DAG shows at the next parse
    assert body["path"] == str(path)
    assert body["etag"] == answer.headers["ETag"]
    assert body["etag"] == f'"{hashlib.sha256(path.read_bytes()).hexdigest()}"'
    config = load_config([api.config])
    assert config.plans["crm-sync-gold"].policy_id == "stack-auto"
    assert config.plans["crm-sync-gold"].source.file.endswith("plans/crm-sync-gold.yaml")
    assert [p["operation"] for p in api.accepted()] == ["plan.created"]
    assert api.accepted()[0]["user"] == "alice"
    # no temp file is left beside it
    assert sorted(p.name for p in (api.config / "plans").iterdir() if p.suffix != ".lock") == [
        "crm-sync-gold.yaml"
    ]

    read = api.client.get("/plans/crm-sync-gold", headers=VIEWER)
    assert read.status_code == 200
    assert read.json()["plan"] == NEW_PLAN
    assert read.headers["ETag"] == body["etag"]


def test_an_update_needs_the_current_etag(api: Api):
    first = post(api, "crm-sync-gold", NEW_PLAN).json()["etag"]
    path = api.config / "plans" / "crm-sync-gold.yaml"
    original = path.read_bytes()

    missing = post(api, "crm-sync-gold", {**NEW_PLAN, "target_version": "2.5.0"})
    assert missing.status_code == 428
    assert missing.json()["detail"]["code"] == "precondition_required"
    assert missing.headers["ETag"] == first
    assert path.read_bytes() == original

    changed = {**NEW_PLAN, "target_version": "2.5.0"}
    updated = post(api, "crm-sync-gold", changed, {"If-Match": first})
    assert updated.status_code == 200, updated.text
    second = updated.json()["etag"]
    assert second != first and updated.json()["created"] is False
    assert load_config([api.config]).plans["crm-sync-gold"].target_version == "2.5.0"

    stale = post(api, "crm-sync-gold", NEW_PLAN, {"If-Match": first})
    assert stale.status_code == 412
    assert stale.json()["detail"]["code"] == "stale_plan"
    assert second in stale.json()["detail"]["message"]
    assert load_config([api.config]).plans["crm-sync-gold"].target_version == "2.5.0"
    assert [r["reason"] for r in api.refusals()] == ["precondition_required", "stale_plan"]


def test_if_match_on_a_plan_that_does_not_exist_is_refused(api: Api):
    answer = post(api, "crm-sync-gold", NEW_PLAN, {"If-Match": '"abc"'})
    assert answer.status_code == 412
    assert answer.json()["detail"]["code"] == "plan_missing"
    assert not (api.config / "plans" / "crm-sync-gold.yaml").exists()


def test_an_invalid_plan_gets_every_problem_with_its_field_path_and_line(api: Api):
    bad = {**NEW_PLAN, "policy": "stack-autoo", "tenants": {"select": {"tier": ["gold"]}, "x": 1}}
    answer = post(api, "crm-sync-bad", bad)
    assert answer.status_code == 422, answer.text
    problems = answer.json()["detail"]
    paths = {p["path"] for p in problems}
    assert "plan.tenants.x" in paths, problems
    assert all(p["line"] >= 1 for p in problems)
    assert not (api.config / "plans" / "crm-sync-bad.yaml").exists()

    unknown = post(api, "crm-sync-bad", {**NEW_PLAN, "policy": "stack-autoo"})
    (problem,) = unknown.json()["detail"]
    assert problem["path"] == "plan.policy"
    assert "did you mean 'stack-auto'" in problem["message"]
    assert [r["reason"] for r in api.refusals()] == ["invalid_plan", "invalid_plan"]
    assert "crm-sync-bad" not in load_config([api.config]).invalid_plans


def test_a_plan_id_defined_by_hand_elsewhere_is_refused_as_a_duplicate(api: Api):
    answer = post(api, "crm-sync-stack", NEW_PLAN)
    assert answer.status_code == 422
    assert "duplicate plan id" in answer.text
    assert not (api.config / "plans" / "crm-sync-stack.yaml").exists()


@pytest.mark.parametrize(
    "plan_id",
    ["../../etc/passwd", "..", "../plans/x", "a/b", "x.yaml", "Upper", "-lead", "a" * 64, ""],
)
def test_a_plan_id_is_never_a_path(api: Api, plan_id: str):
    before = sorted(str(p) for p in api.config.parent.rglob("*"))
    answer = post(api, plan_id, NEW_PLAN)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["path"] == "plan_id"
    assert sorted(str(p) for p in api.config.parent.rglob("*") if "ledger.db" not in str(p)) == [
        p for p in before if "ledger.db" not in p
    ]
    (refusal,) = api.refusals()
    assert refusal["reason"] == "invalid_plan_id" and refusal["user"] == "alice"


def test_a_plan_id_in_the_url_is_never_a_path_either(api: Api):
    answer = api.client.get("/plans/..%2F..%2Fupgrade_policies", headers=ADMIN)
    assert answer.status_code in (404, 422)
    assert "upgrade_policies" not in answer.json().get("plan", "")


def test_a_viewer_may_not_write_plans(api: Api):
    answer = api.client.post(
        "/plan", json={"plan_id": "crm-sync-gold", "plan": NEW_PLAN}, headers=VIEWER
    )
    assert answer.status_code == 403
    assert answer.json()["detail"]["code"] == "forbidden"
    assert not (api.config / "plans").exists() or not any((api.config / "plans").iterdir())
    assert api.refusals()[0]["user"] == "victor"


def test_a_single_file_config_is_refused_with_what_to_do(api: Api, tmp_path):
    api.client.app.state.powerx_settings.config_dir = lambda: api.config / "upgrade_policies.yaml"
    answer = post(api, "crm-sync-gold", NEW_PLAN)
    assert answer.status_code == 409
    assert "POWERX_UPGRADE_CONFIG" in answer.json()["detail"]["message"]


def test_two_updates_from_the_same_etag_cannot_both_win(api: Api, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from powerx_upgrade.api.errors import Refused
    from powerx_upgrade.api.plans import PlanStore

    etag = post(api, "crm-sync-gold", NEW_PLAN).json()["etag"]
    store = PlanStore(api.config)

    def update(version: str) -> str:
        try:
            store.write("crm-sync-gold", {**NEW_PLAN, "target_version": version}, etag)
        except Refused as exc:
            return exc.code
        return "written"

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(update, ["2.5.0", "2.6.0", "2.7.0", "2.8.0"]))
    assert sorted(results) == ["stale_plan", "stale_plan", "stale_plan", "written"]


PREVIEW_TENANTS = [
    {"id": f"t-{i:02d}", "labels": {"tier": ("gold", "silver", "bronze")[i % 3]}} for i in range(10)
]


def test_preview_estimates_each_batch_from_the_ledgers_measured_upgrades(api: Api):
    body = {"tenants": PREVIEW_TENANTS, "now": "2026-12-05T02:00:00+00:00"}
    first = api.client.post("/plans/crm-sync-stack/preview", json=body, headers=VIEWER)
    assert first.status_code == 200, first.text
    estimate = first.json()["estimate"]
    assert estimate["latency"]["source"] == "default" and estimate["latency"]["samples"] == 0
    assert [b["tenants"] for b in estimate["batches"]] == [2, 8]
    # 30 s per tenant, concurrency 10: one wave each; gate = bake 8s + signal_delay 2s + poke 2s
    assert [b["total_seconds"] for b in estimate["batches"]] == [42.0, 42.0]
    assert estimate["window"]["fits"] is True and estimate["window"]["window_closes"] is None

    run_id = api.start_run()
    for tenant in ("t-01", "t-02"):
        key = f"{run_id}:{tenant}"
        api.ledger.begin_action(
            run_id=run_id,
            plugin="crm-sync",
            tenant_id=tenant,
            batch_index=1,
            kind="upgrade",
            from_version="2.3.1",
            to_version="2.4.0",
            idempotency_key=key,
        )
        api.ledger.finish_action(key, "succeeded")
    measured = api.client.post("/plans/crm-sync-stack/preview", json=body, headers=VIEWER)
    latency = measured.json()["estimate"]["latency"]
    assert (latency["source"], latency["samples"], latency["runs"]) == ("ledger", 2, 1)
    assert "median of 2 settled upgrade(s) of crm-sync" in latency["text"]


def test_preview_of_an_unknown_plan_is_a_404_and_unplannable_tenants_a_422(api: Api):
    body = {"tenants": PREVIEW_TENANTS}
    missing = api.client.post("/plans/no-such-plan/preview", json=body, headers=VIEWER)
    assert missing.status_code == 404 and "no-such-plan" in missing.text
    nobody = {"tenants": [{"id": "t-1", "labels": {"tier": "platinum"}}]}
    empty = api.client.post("/plans/crm-sync-stack/preview", json=nobody, headers=VIEWER)
    assert empty.status_code == 422 and "selects no tenant" in empty.text
