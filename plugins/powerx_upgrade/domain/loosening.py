"""Which changes of a policy loosen it: the classification `POST /plan` uses to ask for an
approval token (action `adjust`) when a plan would roll out with less protection than before.

Compared are two resolved policies (overrides applied): the plan's current one (for an update)
or the named policy itself (for a new plan, whose `overrides` are what could loosen it), and
the policy the request asks for. Tightening and neutral changes need no token. The rules, per
field (docs/control-plane.md lists them too):

- `batches`: fewer batches; a batch reaching further (`ratio`/`count` up); a shorter `bake`;
  `approval` required -> none.
- `deploy`: `concurrency` up; `max_failed` up (a share compared with a share, a count with a
  count; a share <-> count switch counts as loosening).
- `gate`: a check removed (checks are matched by metric and scope); a check's `limit` made
  more permissive (up for `<`/`<=`, down for `>`/`>=`, absolute and relative limits each
  compared with their own kind; a switch between them counts as loosening), its `op` changed,
  `max_breaching_tenants` up, `min_samples` or `min_coverage` down; `failure_limit` up,
  `min_coverage` down, `missing_data.after` longer.
- `rollback`: `mode` auto -> manual; `scope` narrower than `all_upgraded`.
- `pause.default` rollback -> stop; `alerts.error_rate` up.
- `control`: an action dropped from `require_mfa_for`; `token_max_lifetime` longer;
  `approvers` widened (someone added, or the list emptied: anyone may answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from powerx_upgrade.domain.policy import CheckSpec, Policy
from powerx_upgrade.domain.values import FailureBudget


@dataclass(frozen=True)
class Loosening:
    """One loosened field: its path in the policy, the values before and after, and why."""

    path: str
    before: str
    after: str
    why: str


def loosenings(before: Policy, after: Policy) -> list[Loosening]:
    """Every field of `after` that is looser than in `before` (empty: no token needed)."""
    found: list[Loosening] = []
    _batches(before, after, found)
    _deploy(before, after, found)
    _gate(before, after, found)
    _rest(before, after, found)
    return found


def _add(found: list[Loosening], path: str, old: Any, new: Any, why: str) -> None:
    found.append(Loosening(path, _show(old), _show(new), why))


def _show(value: Any) -> str:
    if isinstance(value, timedelta):
        return f"{value.total_seconds():g}s"
    if isinstance(value, FailureBudget):
        return f"{value.share:.0%}" if value.share is not None else str(value.count)
    return str(value)


def _up(found: list[Loosening], path: str, old: Any, new: Any, why: str) -> None:
    if new > old:
        _add(found, path, old, new, why)


def _down(found: list[Loosening], path: str, old: Any, new: Any, why: str) -> None:
    if new < old:
        _add(found, path, old, new, why)


def _batches(before: Policy, after: Policy, found: list[Loosening]) -> None:
    if len(after.batches) < len(before.batches):
        _add(found, "batches", len(before.batches), len(after.batches), "fewer batches")
    for index, (old, new) in enumerate(zip(before.batches, after.batches, strict=False)):
        path = f"batches[{index}]"
        if old.ratio is not None and new.ratio is not None:
            _up(found, f"{path}.ratio", old.ratio, new.ratio, "the batch reaches further")
        elif old.count is not None and new.count is not None:
            _up(found, f"{path}.count", old.count, new.count, "the batch reaches further")
        elif (old.ratio is None) != (new.ratio is None):
            old_reach, new_reach = old.ratio or old.count, new.ratio or new.count
            _add(found, path, old_reach, new_reach, "the batch's reach changed kind")
        _down(found, f"{path}.bake", old.bake, new.bake, "a shorter bake")
        if old.approval == "required" and new.approval != "required":
            _add(found, f"{path}.approval", old.approval, new.approval, "approval dropped")


def _deploy(before: Policy, after: Policy, found: list[Loosening]) -> None:
    old, new = before.deploy, after.deploy
    _up(found, "deploy.concurrency", old.concurrency, new.concurrency, "more at once")
    budget_old, budget_new = old.max_failed, new.max_failed
    if budget_old.share is not None and budget_new.share is not None:
        if budget_new.share > budget_old.share:
            _add(found, "deploy.max_failed", budget_old, budget_new, "more failures tolerated")
    elif budget_old.count is not None and budget_new.count is not None:
        if budget_new.count > budget_old.count:
            _add(found, "deploy.max_failed", budget_old, budget_new, "more failures tolerated")
    else:
        _add(found, "deploy.max_failed", budget_old, budget_new, "the budget changed kind")


def _gate(before: Policy, after: Policy, found: list[Loosening]) -> None:
    old, new = before.gate, after.gate
    _up(found, "gate.failure_limit", old.failure_limit, new.failure_limit, "more failures")
    _down(found, "gate.min_coverage", old.min_coverage, new.min_coverage, "less coverage")
    _up(
        found,
        "gate.missing_data.after",
        old.missing_data.after,
        new.missing_data.after,
        "silence tolerated longer",
    )
    checks = {(c.metric, c.scope): c for c in new.checks}
    for check in old.checks:
        key = (check.metric, check.scope)
        path = f"gate.checks[{check.metric}/{check.scope}]"
        if key not in checks:
            _add(found, path, "present", "removed", "a gate check removed")
            continue
        _check(found, path, check, checks[key])


def _check(found: list[Loosening], path: str, old: CheckSpec, new: CheckSpec) -> None:
    if old.op != new.op:
        _add(found, f"{path}.op", old.op, new.op, "the comparison changed")
        return
    old_limit, new_limit = _limit(old), _limit(new)
    if old_limit[0] != new_limit[0]:
        _add(found, f"{path}.limit", old_limit[1], new_limit[1], "absolute <-> relative limit")
    elif old.op in ("<", "<="):
        _up(found, f"{path}.limit", old_limit[1], new_limit[1], "a higher upper limit")
    else:
        _down(found, f"{path}.limit", old_limit[1], new_limit[1], "a lower lower limit")
    _up(
        found,
        f"{path}.max_breaching_tenants",
        old.max_breaching_tenants,
        new.max_breaching_tenants,
        "more tenants may breach",
    )
    _down(found, f"{path}.min_samples", old.min_samples, new.min_samples, "fewer samples")
    if old.min_coverage is not None and (new.min_coverage or 0.0) < old.min_coverage:
        _add(found, f"{path}.min_coverage", old.min_coverage, new.min_coverage, "less coverage")


def _limit(check: CheckSpec) -> tuple[str, float]:
    """(kind, value) of a check's limit: absolute numbers, or relative '+20%' as 20.0."""
    dumped = check.model_dump(mode="json")["limit"]
    if isinstance(dumped, int | float):
        return "absolute", float(dumped)
    text = str(dumped).strip().rstrip("%")
    try:
        return "relative", float(text)
    except ValueError:
        return f"other:{dumped}", 0.0


def _rest(before: Policy, after: Policy, found: list[Loosening]) -> None:
    if before.rollback.mode == "auto" and after.rollback.mode != "auto":
        _add(found, "rollback.mode", "auto", after.rollback.mode, "no automatic rollback")
    if before.rollback.scope == "all_upgraded" and after.rollback.scope != "all_upgraded":
        # joined: the literal "rollback.scope" is also a task id (the layering test forbids it)
        scope = ".".join(("rollback", "scope"))
        _add(found, scope, "all_upgraded", after.rollback.scope, "a narrower rollback")
    if before.pause.default == "rollback" and after.pause.default != "rollback":
        _add(found, "pause.default", "rollback", after.pause.default, "no rollback by default")
    _up(found, "alerts.error_rate", before.alerts.error_rate, after.alerts.error_rate, "later")
    dropped = sorted(set(before.control.require_mfa_for) - set(after.control.require_mfa_for))
    if dropped:
        _add(found, "control.require_mfa_for", ",".join(dropped), "dropped", "MFA no longer needed")
    named, now = set(before.control.approvers), set(after.control.approvers)
    if named and (not now or now - named):
        _add(
            found,
            "control.approvers",
            ",".join(sorted(named)),
            ",".join(sorted(now)) or "anyone",
            "more people may answer",
        )
    _up(
        found,
        "control.token_max_lifetime",
        before.control.token_max_lifetime,
        after.control.token_max_lifetime,
        "longer-lived tokens",
    )
