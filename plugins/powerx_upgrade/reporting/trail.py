"""The report's decisions and approval trail: who decided what, when, through which path, with
which approval token."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from powerx_upgrade.ledger.records import ApprovalRecord, DecisionRecord
from powerx_upgrade.reporting.values import iso

HUMAN_DECISION_KINDS = ("pause", "approval", "rollback", "stop", "takeover")
"""Decisions a person takes (or that a timeout takes for them); `decide` is the DAG's own."""


def decision_entry(d: DecisionRecord) -> dict[str, Any]:
    detail = d.detail or {}
    return {
        "batch": d.batch_index,
        "kind": d.kind,
        "decision": d.decision,
        "actor": d.actor,
        "via": d.via,
        "at": iso(d.decided_at),
        "reason": detail.get("reason"),
        "timed_out": detail.get("timed_out"),
        "approval_jti": _jti_of(d),
        "detail": detail,
    }


def _jti_of(d: DecisionRecord) -> str | None:
    """The id of the approval token behind a decision (the run controls keep it as
    `detail.approval`), if any."""
    detail = d.detail or {}
    for key in ("approval_jti", "approval", "jti"):
        jti = detail.get(key)
        if isinstance(jti, str) and jti:
            return jti
    return None


def _human(d: DecisionRecord) -> bool:
    # a DAG decision credited to an operator (a requested rollback, a takeover's pause) counts
    if d.decision == "not_required":
        return False
    return d.kind in HUMAN_DECISION_KINDS or d.via not in (None, "auto")


def approval_trail(
    decisions: Sequence[DecisionRecord], approvals: Sequence[ApprovalRecord]
) -> list[dict[str, Any]]:
    """Every human decision and every approval token used, in time order: who, when, through
    which path (ui, api, cli; auto when a timeout decided), the action, the token id (jti) and
    the batch. A decision taken with a token shows the token's approver on the same line."""
    tokens = {a.jti: a for a in approvals}
    shown: set[str] = set()
    trail: list[tuple[datetime, dict[str, Any]]] = []
    for d in decisions:
        if not _human(d):
            continue
        jti = _jti_of(d)
        token = tokens.get(jti) if jti else None
        if token is not None:
            shown.add(token.jti)
        timed_out = bool((d.detail or {}).get("timed_out"))
        entry = {
            "at": iso(d.decided_at),
            "batch": d.batch_index,
            "action": d.kind,
            "decision": d.decision,
            "who": d.actor,
            "approver": token.subject if token else None,
            "via": "auto" if timed_out else d.via,
            "jti": jti,
            "mfa": token.mfa if token else None,
            "token_used_at": iso(token.used_at) if token else None,
            "timed_out": timed_out,
            "source": "decision",
        }
        trail.append((d.decided_at, entry))
    for a in approvals:
        if a.jti in shown:
            continue
        detail = a.detail or {}
        entry = {
            "at": iso(a.used_at),
            "batch": detail.get("batch"),
            "action": a.action,
            "decision": detail.get("operation"),
            "who": detail.get("actor") or a.subject,
            "approver": a.subject,
            "via": a.via,
            "jti": a.jti,
            "mfa": a.mfa,
            "token_used_at": iso(a.used_at),
            "timed_out": False,
            "source": "approval_token",
        }
        trail.append((a.used_at, entry))
    return [entry for _, entry in sorted(trail, key=lambda item: item[0])]
