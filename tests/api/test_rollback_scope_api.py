"""`POST /rollback` answers the scope the rollback will apply and records that scope in its
control (what the run's rollback group and the rollback DAG read): the one asked for, else the
policy's of the run's plan."""

from __future__ import annotations

import pytest

from tests.api.conftest import ADMIN, PLAN, Api

pytestmark = pytest.mark.unit

STANZA = "  crm-sync-stack:\n    plugin: crm-sync\n    policy: stack-auto\n"


def ask(api: Api, run_id: str, **body: str):
    sent = {**ADMIN, "X-Approval-Token": api.token("rollback", run=run_id)}
    return api.client.post(
        "/rollback", json={"run_id": run_id, "reason": "bad canary", **body}, headers=sent
    )


def policy_scope(api: Api, scope: str) -> None:
    path = api.config / "upgrade_policies.yaml"
    text = path.read_text(encoding="utf-8")
    assert STANZA in text
    path.write_text(
        text.replace(STANZA, STANZA + f"    overrides: {{rollback: {{scope: {scope}}}}}\n"),
        encoding="utf-8",
    )


def test_the_answer_and_the_control_carry_the_requested_scope(api: Api):
    run_id = api.start_run()
    answer = ask(api, run_id, scope="batch")
    assert answer.status_code == 202, answer.text
    assert (answer.json()["scope"], answer.json()["scope_source"]) == ("batch", "requested")
    (control,) = api.ledger.controls(run_id)
    assert control.payload["scope"] == "batch"


def test_without_a_scope_the_answer_is_the_policys_scope_the_run_will_apply(api: Api):
    policy_scope(api, "failed_tenants")
    run_id = api.start_run(plan=PLAN)
    answer = ask(api, run_id)
    assert answer.status_code == 202, answer.text
    assert (answer.json()["scope"], answer.json()["scope_source"]) == ("failed_tenants", "policy")
    (control,) = api.ledger.controls(run_id)
    assert control.payload["scope"] == "failed_tenants"
