"""Runtime adjustments of an active run (thresholds, bake, remaining ratios, concurrency):
the model, its validation against the plan and the batches already started, and its effect on
the policy. Pure: the ledger keeps the adjustments, `rollout.controls` applies them to a run.

When each part takes effect (docs/control-plane.md, "Run controls"): check limits and bake from
the gate's next poke (the batch baking now included); ratios, counts and deploy concurrency
from the next batch; rollback concurrency at the next rollback.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Annotated, Any

from pydantic import Field, ValidationError, WithJsonSchema, field_validator, model_validator

from powerx_upgrade.domain.checks import check_policy
from powerx_upgrade.domain.durations import Duration, format_duration
from powerx_upgrade.domain.measurement import KNOWN_METRICS
from powerx_upgrade.domain.models import (
    CheckScope,
    DeploySpec,
    GateSpec,
    Identifier,
    Limit,
    Plan,
    Policy,
    RollbackSpec,
    Strict,
    batch_ratio,
)
from powerx_upgrade.domain.problems import Problem
from powerx_upgrade.domain.validation import describe

SOURCE = "adjust"
"""The `file` of an adjustment's problems, and the first element of their field paths."""

_DEPLOY_CONCURRENCY = DeploySpec.model_fields["concurrency"].metadata
_ROLLBACK_CONCURRENCY = RollbackSpec.model_fields["concurrency"].metadata


class CheckAdjustment(Strict):
    """A new limit for the gate check on `metric` (and `scope`, when several checks share it)."""

    metric: Identifier
    scope: CheckScope | None = None
    limit: Annotated[Limit, WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string"}]})]


class BatchAdjustment(Strict):
    """New settings of one batch that has not started: its cumulative reach, its bake."""

    ratio: float | None = None
    count: int | None = Field(default=None, ge=1)
    bake: Duration | None = None

    @field_validator("ratio", mode="before")
    @classmethod
    def _ratio(cls, value: Any) -> Any:
        return batch_ratio(value)

    @model_validator(mode="after")
    def _changes_something(self) -> BatchAdjustment:
        if self.ratio is not None and self.count is not None:
            raise ValueError("give a batch either 'ratio' or 'count', not both")
        if self.ratio is None and self.count is None and self.bake is None:
            raise ValueError("a batch adjustment needs 'ratio', 'count' or 'bake'")
        return self


class Adjustment(Strict):
    """What an operator changes in an active run (`PATCH /runs/{run_id}`, `powerx plugin
    adjust`); everything is optional, but an adjustment must change something."""

    checks: list[CheckAdjustment] = Field(default_factory=list)
    bake: Duration | None = Field(
        default=None, description="bake of the batch baking now and of every later batch"
    )
    batches: dict[int, BatchAdjustment] = Field(
        default_factory=dict, description="by batch number (1-based); only batches not started"
    )
    deploy_concurrency: Annotated[int, *_DEPLOY_CONCURRENCY] | None = None
    rollback_concurrency: Annotated[int, *_ROLLBACK_CONCURRENCY] | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> Adjustment:
        if not self.model_fields_set or all(
            getattr(self, name) in (None, [], {}) for name in type(self).model_fields
        ):
            raise ValueError(
                "an adjustment changes at least one of: checks, bake, batches, "
                "deploy_concurrency, rollback_concurrency"
            )
        return self


def _problem(path: Iterable[str | int], message: str) -> Problem:
    return Problem(SOURCE, None, "error", ".".join(str(p) for p in (SOURCE, *path)), message)


def parse_adjustment(data: Any) -> tuple[Adjustment | None, list[Problem]]:
    """An adjustment from JSON/YAML data, or the problems (paths like `adjust.batches.3.ratio`)."""
    if not isinstance(data, Mapping):
        return None, [_problem((), f"an adjustment is a mapping, not {type(data).__name__}")]
    try:
        return Adjustment.model_validate(data), []
    except ValidationError as exc:
        return None, [_problem(path, message) for path, message in describe(Adjustment, exc)]


def validate_adjustment(
    plan: Plan,
    adjustment: Adjustment,
    *,
    started_batches: int,
    policy: Policy | None = None,
) -> list[Problem]:
    """Why the adjustment cannot apply to a run of `plan` whose first `started_batches` batches
    have started (deployed, or deploying); an empty list when it can.

    :param policy: the run's policy as adjusted so far (default: the plan's policy).
    """
    policy = policy or plan.policy
    count = len(policy.batches)
    problems: list[Problem] = []
    for position, check in enumerate(adjustment.checks):
        problems += _check_problems(policy, position, check)
    if adjustment.bake is not None and started_batches > count:
        problems.append(_problem(("bake",), "every batch has baked already: nothing to adjust"))
    for index, batch in sorted(adjustment.batches.items()):
        if not 1 <= index <= count:
            problems.append(
                _problem(("batches", index), f"no batch {index}: the policy has {count}")
            )
        elif index <= started_batches and (batch.ratio is not None or batch.count is not None):
            field = "ratio" if batch.ratio is not None else "count"
            problems.append(
                _problem(
                    ("batches", index, field),
                    f"batch {index} has already started ({started_batches} of {count} have): "
                    "only batches not started can be re-cut",
                )
            )
        elif index < started_batches and batch.bake is not None:
            problems.append(
                _problem(("batches", index, "bake"), f"batch {index} has baked already")
            )
    if problems:
        return problems
    try:
        adjusted = apply_adjustments(policy, [adjustment])
    except (ValidationError, ValueError) as exc:  # pragma: no cover - guarded by the above
        return [_problem((), f"the adjusted policy is invalid: {exc}")]
    return problems + _policy_problems(policy, adjusted, adjustment)


def _check_problems(policy: Policy, position: int, check: CheckAdjustment) -> list[Problem]:
    path = ("checks", position)
    if check.metric not in KNOWN_METRICS:
        return [
            _problem(
                (*path, "metric"),
                f"unknown metric {check.metric!r} (known: {', '.join(KNOWN_METRICS)})",
            )
        ]
    matches = _matching_checks(policy, check)
    gate = ", ".join(f"{c.metric} ({c.scope})" for c in policy.gate.checks)
    if not matches:
        scope = f" with scope {check.scope}" if check.scope else ""
        return [
            _problem(
                (*path, "metric"),
                f"the gate has no check on {check.metric}{scope} (its checks: {gate})",
            )
        ]
    if len(matches) > 1:
        return [
            _problem(
                (*path, "scope"),
                f"{len(matches)} checks measure {check.metric}: give the scope "
                f"({', '.join(policy.gate.checks[i].scope for i in matches)})",
            )
        ]
    current = policy.gate.checks[matches[0]]
    if check.limit.relative != current.limit.relative:
        kind = "relative to its baseline" if current.limit.relative else "absolute"
        return [
            _problem(
                (*path, "limit"),
                f"the {check.metric} check's limit {current.limit} is {kind}: "
                f"{check.limit} is not (write it like {current.limit})",
            )
        ]
    return []


def _matching_checks(policy: Policy | GateSpec, check: CheckAdjustment) -> list[int]:
    gate = policy.gate if isinstance(policy, Policy) else policy
    return [
        i
        for i, c in enumerate(gate.checks)
        if c.metric == check.metric and (check.scope is None or c.scope == check.scope)
    ]


def _policy_problems(before: Policy, after: Policy, adjustment: Adjustment) -> list[Problem]:
    """Errors the adjusted policy has that the policy before it had not (config rules)."""
    known = {(path, message) for path, message, _ in check_policy(before)}
    problems: list[Problem] = []
    for path, message, severity in check_policy(after):
        if severity != "error" or (path, message) in known:
            continue
        problems.append(_problem(_adjust_path(path, adjustment, after), message))
    return problems


def _adjust_path(
    path: tuple[str | int, ...], adjustment: Adjustment, policy: Policy
) -> tuple[str | int, ...]:
    """A policy path (`batches`, 2, `ratio`) as the adjustment's (`batches`, 3, `ratio`)."""
    if path[:1] == ("batches",) and len(path) > 1 and isinstance(path[1], int):
        return ("batches", path[1] + 1, *path[2:])
    if path[:2] == ("gate", "checks") and len(path) > 2:
        for position, check in enumerate(adjustment.checks):
            if path[2] in _matching_checks(policy, check):
                return ("checks", position, "limit")
    return path


def apply_adjustments(policy: Policy, adjustments: Iterable[Adjustment]) -> Policy:
    """The policy with the adjustments applied in order (a later one wins where both set a
    value). Validate each with `validate_adjustment` first: this one only applies."""
    adjustments = list(adjustments)
    data = policy.model_dump(mode="python")
    data["gate"] = adjusted_gate(policy.gate, adjustments).model_dump(mode="python")
    for adjustment in adjustments:
        if adjustment.bake is not None:
            for batch in data["batches"]:
                batch["bake"] = adjustment.bake
        _apply_batches(data["batches"], adjustment)
        if adjustment.deploy_concurrency is not None:
            data["deploy"]["concurrency"] = adjustment.deploy_concurrency
        if adjustment.rollback_concurrency is not None:
            data["rollback"]["concurrency"] = adjustment.rollback_concurrency
    return Policy.model_validate(data)


def adjusted_gate(gate: GateSpec, adjustments: Iterable[Adjustment]) -> GateSpec:
    """The gate with the adjustments' check limits applied in order (what the gate trigger
    re-reads at every poke)."""
    checks = list(gate.checks)
    for adjustment in adjustments:
        for change in adjustment.checks:
            for index in _matching_checks(gate, change):
                checks[index] = checks[index].model_copy(update={"limit": change.limit})
    return gate.model_copy(update={"checks": checks}) if checks != gate.checks else gate


def _apply_batches(batches: list[dict[str, Any]], adjustment: Adjustment) -> None:
    for index, change in adjustment.batches.items():
        if not 1 <= index <= len(batches):
            continue
        batch = batches[index - 1]
        if change.ratio is not None:
            batch.update(ratio=change.ratio, count=None)
        if change.count is not None:
            batch.update(count=change.count, ratio=None)
        if change.bake is not None:
            batch["bake"] = change.bake


def describe_adjustment(adjustment: Adjustment) -> str:
    """One line for logs, audit records and the report: what changes."""
    parts = [
        f"{c.metric}{f' ({c.scope})' if c.scope else ''} limit -> {c.limit}"
        for c in adjustment.checks
    ]
    if adjustment.bake is not None:
        parts.append(f"bake -> {format_duration(adjustment.bake)}")
    for index, change in sorted(adjustment.batches.items()):
        settings = []
        if change.ratio is not None:
            settings.append(f"ratio {change.ratio:g}")
        if change.count is not None:
            settings.append(f"count {change.count}")
        if change.bake is not None:
            settings.append(f"bake {format_duration(change.bake)}")
        parts.append(f"batch {index}: {', '.join(settings)}")
    if adjustment.deploy_concurrency is not None:
        parts.append(f"deploy concurrency -> {adjustment.deploy_concurrency}")
    if adjustment.rollback_concurrency is not None:
        parts.append(f"rollback concurrency -> {adjustment.rollback_concurrency}")
    return "; ".join(parts)


def adjusted_bake(
    adjustments: Iterable[Adjustment], batch: int, merged: Iterable[int] = ()
) -> timedelta | None:
    """The bake the adjustments give batch `batch` (a planned batch that absorbed `merged`
    later ones bakes as long as the longest), or None when none of them sets it."""
    bakes: dict[int, timedelta] = {}
    for adjustment in adjustments:
        for index in (batch, *merged):
            change = adjustment.batches.get(index)
            if change is not None and change.bake is not None:
                bakes[index] = change.bake
            elif adjustment.bake is not None:
                bakes[index] = adjustment.bake
    return max(bakes.values()) if bakes else None


def recut_remaining(
    planned: Sequence[Mapping[str, Any]], policy: Policy, first: int, *, canary: int = 0
) -> list[dict[str, Any]]:
    """The run's planned batches (as the ledger keeps them) with every batch from `first` on
    re-cut under `policy`'s batches: the tenants not deployed yet keep their planned order, the
    batches already started keep theirs. The planner's rules hold: cumulative targets over all
    selected tenants, at least one tenant more per batch, empty trailing batches merged into the
    last (longest bake, approval if any asks), and the last batch takes everyone left.

    :param canary: the size of the canary cohort (batch 1 holds it whole, when re-cut).
    """
    kept = [dict(b) for b in planned if b["index"] < first]
    remaining = [t for b in planned if b["index"] >= first for t in b["tenants"]]
    if not remaining:
        return kept
    total = sum(len(b["tenants"]) for b in planned)
    base = start = total - len(remaining)
    absorbed = max((i for b in kept for i in (b["index"], *b.get("merged", []))), default=0)
    positions = range(max(first, absorbed + 1), len(policy.batches) + 1)
    recut: list[dict[str, Any]] = []
    for position in positions:
        spec = policy.batches[position - 1]
        if spec.ratio is not None:
            target = math.ceil(spec.ratio * total - 1e-9)
        else:
            target = min(spec.count or 0, total)
        if position == 1:
            target = max(target, canary)
        if position == positions[-1]:
            target = total
        target = min(max(target, start + 1), total) if start < total else start
        if target == start and recut:
            last = recut[-1]
            last["bake_seconds"] = max(last["bake_seconds"], int(spec.bake.total_seconds()))
            last["approval_required"] = last["approval_required"] or spec.approval == "required"
            last["merged"] = [*last["merged"], position]
            continue
        tenants = remaining[start - base : target - base]
        recut.append(
            {
                "index": position,
                "name": spec.name or f"batch_{position}",
                "tenants": tenants,
                "size": len(tenants),
                "cumulative_count": target,
                "cumulative_ratio": round(target / total, 6),
                "bake_seconds": int(spec.bake.total_seconds()),
                "approval_required": spec.approval == "required",
                "merged": [],
            }
        )
        start = target
    if not recut:  # the started batches already absorbed every later one: nothing to re-cut
        return [dict(b) for b in planned]
    return kept + recut
