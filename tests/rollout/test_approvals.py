"""accept_approval on a real SQLite ledger: every refusal is audited with its reason and uses up
nothing; an acceptance uses the token's jti once and is audited."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from powerx_upgrade.domain.config import parse_config
from powerx_upgrade.domain.models import ControlSpec
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.rollout.approvals import accept_approval
from powerx_upgrade.security.approval import ApprovalRefused, ApprovalSettings, issue_approval
from tests.conftest import EXAMPLE_POLICIES

pytestmark = pytest.mark.unit

SECRET = "rollout-approval-secret-0123456789abcdef"
SETTINGS = ApprovalSettings(secret=SECRET)
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
RUN = "manual__2026-11-27T11:00:00+00:00"


@pytest.fixture(scope="module")
def plan():
    result = parse_config([(str(EXAMPLE_POLICIES), EXAMPLE_POLICIES.read_text())])
    return result.plans["crm-sync-standard"]


@pytest.fixture
def ledger(tmp_path):
    with Ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as opened:
        yield opened


def token(plan_id="crm-sync-standard", key=SECRET, **fields):
    values = {"subject": "alice@example.com", "action": "rollback", "run_id": RUN, "now": NOW}
    return issue_approval(key, plan_id=plan_id, **{**values, **fields})


def accept(ledger, plan, tok, **overrides):
    values = {
        "operation": "rollback",
        "plan": plan,
        "run_id": RUN,
        "via": "api",
        "actor": "ops-admin",
        "now": NOW,
    }
    return accept_approval(ledger, tok, SETTINGS, **{**values, **overrides})


class AuditService:
    """Stands in for the audit service: keeps what it was sent."""

    def __init__(self) -> None:
        self.received: list[dict] = []

    def record(self, record: dict) -> dict:
        self.received.append(record)
        return {"ok": True}


def test_an_accepted_token_is_used_up_and_audited(ledger, plan):
    tok = token(jti="jti-ok")
    service = AuditService()
    claims = accept(ledger, plan, tok, audit=service)
    assert (claims.jti, claims.subject, claims.action) == (
        "jti-ok",
        "alice@example.com",
        "rollback",
    )
    [used] = ledger.approvals(run_id=RUN)
    assert (used.jti, used.action, used.plan_id, used.subject, used.via, used.mfa) == (
        "jti-ok",
        "rollback",
        "crm-sync-standard",
        "alice@example.com",
        "api",
        True,
    )
    assert used.used_at == NOW and used.detail["actor"] == "ops-admin"
    [record] = ledger.audit_records(RUN)
    assert record.event == "approval.accepted"
    assert record.payload["actor"] == "ops-admin"
    assert record.payload["details"]["jti"] == "jti-ok"
    assert record.payload["details"]["subject"] == "alice@example.com"
    assert record.payload["details"]["via"] == "api"
    assert record.payload["plugin"] == "crm-sync"
    assert record.delivered and service.received[0]["action"] == "approval.accepted"
    assert tok not in json.dumps([r.payload for r in ledger.audit_records()])


def _refusals():
    other_key = "another-secret-that-is-long-enough-000000"
    return {
        "missing": (None, {}),
        "expired": (token(now=NOW - timedelta(minutes=30)), {}),
        "forged": (token(key=other_key), {}),
        "wrong_action": (token(action="takeover"), {}),
        "wrong_plan": (token(plan_id="billing-export-cautious"), {}),
        "wrong_run": (token(run_id="scheduled__other"), {}),
        "mfa_required": (token(mfa=False), {}),
        "too_long_lived": (token(ttl=timedelta(hours=3)), {}),
        "wrong_audience": (token(audience="another-service"), {}),
        "malformed": ("not.a.jwt", {}),
    }


@pytest.mark.parametrize("code", list(_refusals()))
def test_every_refusal_has_its_code_is_audited_and_uses_up_nothing(ledger, plan, code):
    tok, overrides = _refusals()[code]
    with pytest.raises(ApprovalRefused) as caught:
        accept(ledger, plan, tok, **overrides)
    assert caught.value.code == code
    assert ledger.approvals() == []
    [record] = ledger.audit_records()
    assert record.event == "approval.refused"
    assert record.run_id == RUN
    assert record.payload["reason"] == code
    details = record.payload["details"]
    assert details["code"] == code
    assert details["operation"] == "rollback"
    assert details["plan_id"] == "crm-sync-standard"
    assert details["run_id"] == RUN
    assert details["via"] == "api"
    assert record.payload["actor"] == "ops-admin"
    assert details["message"] == caught.value.message
    if tok and code != "malformed":
        assert details["unverified_subject"] == "alice@example.com"
        assert details["unverified_jti"]
        assert tok not in json.dumps(record.payload)


def test_a_replayed_token_is_refused_audited_and_the_first_use_stands(ledger, plan):
    tok = token(jti="once")
    accept(ledger, plan, tok)
    with pytest.raises(ApprovalRefused) as caught:
        accept(ledger, plan, tok, via="cli", actor="someone-else")
    assert caught.value.code == "replayed"
    assert "'jti'" in caught.value.message and "'once'" in caught.value.message
    [used] = ledger.approvals()
    assert (used.via, used.detail["actor"]) == ("api", "ops-admin")
    events = [(r.event, r.payload["reason"]) for r in ledger.audit_records()]
    assert events == [("approval.accepted", None), ("approval.refused", "replayed")]
    assert ledger.audit_records()[1].payload["details"]["unverified_jti"] == "once"


def test_a_token_refused_once_can_still_be_used_for_the_right_operation(ledger, plan):
    tok = token(jti="j-2")
    with pytest.raises(ApprovalRefused):
        accept(ledger, plan, tok, operation="adjust")
    assert accept(ledger, plan, tok).jti == "j-2"


def test_without_settings_every_token_is_refused_as_not_configured(ledger, plan):
    with pytest.raises(ApprovalRefused) as caught:
        accept_approval(
            ledger,
            token(),
            None,
            operation="rollback",
            plan=plan,
            run_id=RUN,
            via="api",
            actor="ops-admin",
            now=NOW,
        )
    assert caught.value.code == "not_configured"
    assert [r.payload["reason"] for r in ledger.audit_records()] == ["not_configured"]


def test_the_policy_decides_which_actions_need_mfa_and_how_long_tokens_live(ledger, plan):
    relaxed = plan.model_copy(
        update={
            "policy": plan.policy.model_copy(
                update={
                    "control": ControlSpec(
                        require_mfa_for=["takeover"], token_max_lifetime=timedelta(hours=4)
                    )
                }
            )
        }
    )
    claims = accept(ledger, relaxed, token(mfa=False, ttl=timedelta(hours=3), jti="relaxed"))
    assert claims.mfa is False
    with pytest.raises(ApprovalRefused) as caught:
        accept(ledger, relaxed, token(action="takeover", mfa=False), operation="pause")
    assert caught.value.code == "mfa_required"


def test_a_plan_id_alone_gets_the_strictest_defaults(ledger):
    with pytest.raises(ApprovalRefused) as caught:
        accept(ledger, "crm-sync-standard", token(mfa=False))
    assert caught.value.code == "mfa_required"
    assert accept(ledger, "crm-sync-standard", token(jti="p")).plan_id == "crm-sync-standard"


def test_a_broken_connection_refuses_every_token_with_its_problem_and_audits_it(ledger, plan):
    broken = ApprovalSettings(problem="connection 'powerx_approval': unknown extra key 'secret'")
    with pytest.raises(ApprovalRefused) as caught:
        accept_approval(
            ledger,
            token(),
            broken,
            operation="rollback",
            plan=plan,
            run_id=RUN,
            via="api",
            actor="ops-admin",
            now=NOW,
        )
    assert caught.value.code == "not_configured" and "unknown extra key" in caught.value.message
    [record] = ledger.audit_records()
    assert record.payload["details"]["message"] == caught.value.message
    assert ledger.approvals() == []
