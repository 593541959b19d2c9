"""Accepting an approval token for one control-plane operation: verify it against the plan's
policy, use it up in the ledger (single use), and audit the acceptance or the refusal with its
reason. No Airflow: the API and the CLI paths call this with the settings they read."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from powerx_upgrade.domain.models import ControlSpec, Plan
from powerx_upgrade.ledger import ApprovalReplayed, AuditEntry, Ledger
from powerx_upgrade.rollout.record import AuditClient, Recorder, audit_payload, stable_id
from powerx_upgrade.security.approval import (
    ApprovalClaims,
    ApprovalRefused,
    ApprovalSettings,
    action_for,
    peek_unverified,
    verify_approval,
)

ACCEPTED = "approval.accepted"
REFUSED = "approval.refused"


def accept_approval(
    ledger: Ledger,
    token: str | None,
    settings: ApprovalSettings | None,
    *,
    operation: str,
    plan: Plan | str,
    run_id: str | None,
    via: str,
    actor: str | None,
    now: datetime | None = None,
    batch: int | None = None,
    audit: AuditClient | None = None,
) -> ApprovalClaims:
    """Verify `token` for `operation` on `plan` (and `run_id`), use it up, audit the outcome.

    Raises `ApprovalRefused` (after auditing `approval.refused` with its code) when the token
    is missing, invalid for this operation, or was used before (`replayed`); a refused token
    is not used up. On success the jti is recorded in the ledger and `approval.accepted` is
    audited in the same transaction.

    :param ledger: the run ledger.
    :param token: the approval token as received (never stored nor logged).
    :param settings: how to verify (`orchestration.approvals.approval_settings()`), or None when
        no verification key is configured (every token is then refused as `not_configured`).
    :param operation: the operation asked (`ACTION_FOR` key: rollback, pause, approve, ...).
    :param plan: the plan acted on; its policy's `control` says which actions need MFA and the
        longest token lifetime. A plan id alone gets the strictest defaults.
    :param run_id: the run acted on, if the operation names one.
    :param via: the path the request came by: `api`, `cli` or `ui`.
    :param actor: who sent the request (the authenticated Airflow user), besides the approver.
    :param now: the time to check the token against; default the current time.
    :param batch: the batch the operation concerns, if any (kept for the report's trail).
    :param audit: the audit service client; given, the outbox is delivered at once.
    """
    action = action_for(operation)
    now = now or datetime.now(UTC)
    plan_id, plugin, control = _plan_facts(plan)
    where = {
        "operation": operation,
        "plan_id": plan_id,
        "run_id": run_id,
        "batch": batch,
        "via": via,
    }
    try:
        claims = verify_approval(
            token,
            settings,
            operation=operation,
            plan_id=plan_id,
            run_id=run_id,
            require_mfa=action in control.require_mfa_for,
            max_lifetime=control.token_max_lifetime,
            now=now,
        )
        details = {
            **where,
            "jti": claims.jti,
            "subject": claims.subject,
            "approved_action": claims.action,
            "approved_plan": claims.plan_id,
            "approved_run": claims.run_id,
            "mfa": claims.mfa,
            "expires_at": claims.expires_at.isoformat(),
        }
        entry = AuditEntry(
            ACCEPTED,
            _payload(ACCEPTED, actor or claims.subject, plugin, details, now, reason=None),
            stable_id(f"{ACCEPTED}:{claims.jti}"),
        )
        ledger.use_approval(
            jti=claims.jti,
            action=claims.action,
            plan_id=plan_id,
            run_id=run_id,
            subject=claims.subject,
            via=via,
            mfa=claims.mfa,
            issued_at=claims.issued_at,
            expires_at=claims.expires_at,
            used_at=now,
            detail={
                "operation": operation,
                "actor": actor,
                "batch": batch,
                "approved_plan": claims.plan_id,
            },
            audit=entry,
        )
    except ApprovalRefused as refusal:
        _audit_refusal(ledger, refusal, token, where, actor, plugin, now)
        _flush(ledger, audit)
        raise
    except ApprovalReplayed as replay:
        when = f" at {replay.used_at}" if replay.used_at else ""
        replayed = ApprovalRefused(
            "replayed",
            f"claim 'jti' is {replay.jti!r}, which was already used{when};"
            " expected a token not used before (approval tokens are single use)",
        )
        _audit_refusal(ledger, replayed, token, where, actor, plugin, now)
        _flush(ledger, audit)
        raise replayed from None
    _flush(ledger, audit)
    return claims


def _plan_facts(plan: Plan | str) -> tuple[str, str | None, ControlSpec]:
    if isinstance(plan, Plan):
        return plan.id, plan.plugin, plan.policy.control
    return plan, None, ControlSpec()


def _payload(
    event: str,
    actor: str | None,
    plugin: str | None,
    details: dict[str, Any],
    now: datetime,
    *,
    reason: str | None,
) -> dict[str, Any]:
    # the audit service's record shape; the plan (no field of its own there) is in details
    return audit_payload(
        event,
        actor=actor,
        plugin=plugin,
        run_id=details["run_id"],
        reason=reason,
        details=details,
        at=now,
    )


def _audit_refusal(
    ledger: Ledger,
    refusal: ApprovalRefused,
    token: str | None,
    where: dict[str, Any],
    actor: str | None,
    plugin: str | None,
    now: datetime,
) -> None:
    # what the token claims, unverified (it may be forged): enough to trace an attempt
    unverified = peek_unverified(token) if refusal.code != "missing" else {}
    details = {
        **where,
        "code": refusal.code,
        "message": refusal.message,
        "unverified_subject": unverified.get("sub"),
        "unverified_jti": unverified.get("jti"),
    }
    ledger.enqueue_audit(
        run_id=where["run_id"],
        event=REFUSED,
        payload=_payload(REFUSED, actor, plugin, details, now, reason=refusal.code),
        audit_id=uuid.uuid4().hex,
    )


def _flush(ledger: Ledger, audit: AuditClient | None) -> None:
    if audit is not None:
        Recorder(ledger, audit=audit).flush()
