"""Answers that bypass the control plane (Airflow's UI or REST API, a direct trigger of the
rollback DAG) against the policy's `control.require_mfa_for`: refused and audited where the
policy wants a token, accepted where it does not; the control plane's own answers pass."""

from __future__ import annotations

import pytest

from powerx_upgrade.domain.policy import ControlSpec
from powerx_upgrade.rollout import authority
from powerx_upgrade.security.approval import ApprovalRefused, ApprovalSettings, issue_approval
from tests.rollout.test_steps import CTX, PLAN, events, sent, services  # noqa: F401

pytestmark = pytest.mark.unit
SECRET = "authority-tests-secret-0123456789abcdef"


def with_control(**control: object):
    policy = PLAN.policy.model_copy(update={"control": ControlSpec.model_validate(control)})
    return PLAN.model_copy(update={"policy": policy})


def refused(services, plan, chosen, decision, task="batch_2.approve"):  # noqa: F811
    return authority.answer_refused(
        services,
        CTX,
        plan,
        2,
        task_id=task,
        chosen=chosen,
        user="mallory",
        timed_out=False,
        decision=decision,
    )


def test_a_ui_approve_is_refused_and_audited_where_the_policy_wants_a_token(services):  # noqa: F811
    assert refused(services, with_control(), ["Approve"], "approve")
    [record] = [
        r for r in services.ledger.audit_records(CTX.run_id) if r.event == authority.REFUSED
    ]
    assert record.payload["actor"] == "mallory"
    assert record.payload["details"]["chosen"] == ["Approve"]
    assert record.payload["details"]["via"] == "ui"


@pytest.mark.parametrize(
    ("decision", "needed"),
    [("approve", True), ("reject", True), ("resume", False), ("stop", False), ("rollback", True)],
)
def test_each_answer_follows_its_action_in_require_mfa_for(services, decision, needed):  # noqa: F811
    plan = with_control(require_mfa_for=["approve", "rollback"])
    assert refused(services, plan, ["x"], decision) is needed


def test_the_control_planes_answer_and_a_timeout_pass(services):  # noqa: F811
    services.ledger.request_control(
        CTX.run_id,
        "answer",
        actor="alice",
        via="api",
        payload={"task_id": "batch_2.approve", "chosen": ["Approve"]},
    )
    assert not refused(services, with_control(), ["Approve"], "approve")
    assert not authority.answer_refused(
        services,
        CTX,
        with_control(),
        2,
        task_id="batch_3.approve",
        chosen=["Reject"],
        user=None,
        timed_out=True,
        decision="reject",
    )
    assert authority.REFUSED not in events(services)


def test_a_direct_rollback_needs_a_token_unless_the_policy_or_the_control_plane_says(services):  # noqa: F811
    ledger, settings = services.ledger, ApprovalSettings(secret=SECRET)
    common = {"plan_id": PLAN.id, "run_id": CTX.run_id, "settings": settings, "user": "bob"}
    with pytest.raises(ApprovalRefused, match="no approval token"):
        authority.rollback_authorised(
            ledger, plan=with_control(), request=None, token=None, **common
        )
    assert "approval.refused" in events(services)
    lax = with_control(require_mfa_for=["approve"])
    assert (
        authority.rollback_authorised(ledger, plan=lax, request=None, token=None, **common)["by"]
        == "policy"
    )
    token = issue_approval(SECRET, subject="on-call", action="rollback", plan_id=PLAN.id)
    done = authority.rollback_authorised(
        ledger, plan=with_control(), request=None, token=token, **common
    )
    assert done["by"] == "token" and done["jti"]
    asked = ledger.request_control(
        CTX.run_id, "rollback", actor="alice", via="api", approval_jti="jti-api", payload={}
    )
    via_api = authority.rollback_authorised(
        ledger, plan=with_control(), request=asked, token=None, **common
    )
    assert via_api == {"by": "control_plane", "jti": "jti-api"}
    ledger.settle_control(asked.id, outcome="applied", note="served")
    with pytest.raises(ApprovalRefused, match="already served"):
        authority.rollback_authorised(
            ledger, plan=with_control(), request=ledger.get_control(asked.id), token=None, **common
        )
