"""What follows a gate verdict, and which tenants a rollback takes back: pure rules."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from powerx_upgrade.domain.measurement import Phase
from powerx_upgrade.domain.models import Policy, RollbackScope


class Action(StrEnum):
    PROMOTE = "promote"
    """The batch is good: go on to the next batch (or finish after the last)."""
    ROLLBACK = "rollback"
    PAUSE = "pause"
    """Ask a human: resume, roll back or stop."""


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


def decide(phase: Phase | str, policy: Policy, *, why: str = "") -> Decision:
    """The action for a batch's final gate verdict under a policy. A gate never promotes
    without a pass: anything unknown or missing counts as a failure."""
    try:
        phase = Phase(phase)
    except ValueError:
        return Decision(_on_failure(policy), f"unknown verdict {phase!r}: treated as fail")
    suffix = f": {why}" if why else ""
    if phase is Phase.PASS:
        return Decision(Action.PROMOTE, f"gate passed{suffix}")
    if phase is Phase.ROLLBACK_REQUESTED:
        return Decision(Action.ROLLBACK, f"rollback requested by an operator{suffix}")
    if phase is Phase.PAUSE_REQUESTED:
        return Decision(Action.PAUSE, f"pause requested by an operator{suffix}")
    if phase is Phase.NO_DATA:
        action = Action(policy.gate.missing_data.action)
        return Decision(action, f"no monitoring data (missing_data.action {action}){suffix}")
    if phase is Phase.ERROR:
        action = Action(policy.gate.error.action)
        return Decision(action, f"monitoring error (error.action {action}){suffix}")
    if phase is Phase.INCONCLUSIVE:
        action = Action(policy.gate.inconclusive.action)
        return Decision(action, f"gate inconclusive (inconclusive.action {action}){suffix}")
    action = _on_failure(policy)
    return Decision(action, f"gate failed (rollback.mode {policy.rollback.mode}){suffix}")


def _on_failure(policy: Policy) -> Action:
    return Action.ROLLBACK if policy.rollback.mode == "auto" else Action.PAUSE


@dataclass(frozen=True)
class Upgraded:
    """A tenant this run upgraded (or tried to): what a rollback needs to know."""

    tenant: str
    batch: int
    from_version: str | None
    state: str
    """succeeded | failed (a failed upgrade may have left the tenant half-way: it is rolled back
    too, except when it is still on its old version)."""


def rollback_targets(
    scope: RollbackScope,
    upgraded: Iterable[Upgraded],
    *,
    failing_batch: int | None,
    breaching: Iterable[str] = (),
    current_versions: Mapping[str, str] | None = None,
    target_version: str | None = None,
) -> list[Upgraded]:
    """The tenants to roll back, in rollout order.

    - all_upgraded: every tenant this run touched;
    - batch: the tenants of the failing batch (all of them when the batch is unknown);
    - failed_tenants: tenants whose deploy failed, plus tenants a per-tenant check found
      breaching (falls back to the failing batch when no single tenant is to blame).
    A tenant whose current version is known and is not the target is left alone: nothing of the
    new version is on it.
    """
    touched = [u for u in upgraded if _on_new_version(u, current_versions, target_version)]
    if scope == "all_upgraded" or failing_batch is None:
        return touched
    in_batch = [u for u in touched if u.batch == failing_batch]
    if scope == "batch":
        return in_batch
    blamed = set(breaching)
    chosen = [u for u in touched if u.state == "failed" or u.tenant in blamed]
    return chosen or in_batch


def _on_new_version(
    upgraded: Upgraded, current: Mapping[str, str] | None, target: str | None
) -> bool:
    if current is None or target is None or upgraded.tenant not in current:
        return True
    return current[upgraded.tenant] == target
