"""The batch planner: a plan plus the platform's tenants -> ordered, deterministic batches.

Rules (documented for users in docs/plans.md):
- selection: a tenant is selected when every `select` label matches (a list matches any value),
  it is not excluded (by id or by label selector), or it is named in the canary cohort;
- order: the canary cohort first, in the order written; then by the `order` keys; ties broken by
  a seeded hash of the tenant id, so the same plan and tenants give the same batches anywhere;
- sizes: batch k reaches ceil(ratio_k * N) (or count_k) tenants in total, at least one more
  than batch k-1 while tenants remain; batch 1 grows to hold the whole canary cohort;
- fewer tenants than batches: trailing empty batches merge into the last non-empty one, which
  keeps the strictest settings (approval if any asked for it, the longest bake);
- represent: batches 1..through_batch first take tenants of every segment, then fill in order
  (`domain.represent`); sizes do not change.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta

from powerx_upgrade.domain.models import OrderKey, Plan, TenantSelection
from powerx_upgrade.domain.represent import SegmentGap, assign, segment_counts, segment_labels


class PlanningError(ValueError):
    """The tenants and the plan do not give a rollout (nothing selected, a missing canary...)."""


@dataclass(frozen=True)
class Tenant:
    id: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedBatch:
    index: int
    """1-based position of the policy batch this is (the DAG's task group `batch_<index>`)."""
    name: str
    tenants: tuple[str, ...]
    cumulative_count: int
    cumulative_ratio: float
    bake: timedelta
    approval_required: bool
    merged: tuple[int, ...] = ()
    """Indices of later policy batches folded into this one because tenants ran out."""
    segments: tuple[tuple[str, int], ...] = ()
    """Tenants per segment (`tier=bronze`) of the plan's segment labels, by segment name."""

    def as_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "name": self.name,
            "tenants": list(self.tenants),
            "size": len(self.tenants),
            "cumulative_count": self.cumulative_count,
            "cumulative_ratio": round(self.cumulative_ratio, 6),
            "bake_seconds": int(self.bake.total_seconds()),
            "approval_required": self.approval_required,
            "merged": list(self.merged),
        }


@dataclass(frozen=True)
class BatchPlan:
    plan_id: str
    selected: tuple[str, ...]
    batches: tuple[PlannedBatch, ...]
    notes: tuple[str, ...] = ()
    segment_labels: tuple[str, ...] = ()
    segments: tuple[tuple[str, int], ...] = ()
    """Tenants per segment of the whole selection."""
    gaps: tuple[SegmentGap, ...] = ()
    """Segments a batch leaves out: of a stratified batch, or of batch 1 when none is."""
    gaps_intended: bool = False

    def batch_of(self, tenant_id: str) -> PlannedBatch | None:
        return next((b for b in self.batches if tenant_id in b.tenants), None)

    def as_dict(self) -> dict[str, object]:
        return {
            "plan": self.plan_id,
            "selected": len(self.selected),
            "batches": [
                {**batch.as_dict(), "segments": dict(batch.segments)} for batch in self.batches
            ],
            "notes": list(self.notes),
            "segment_labels": list(self.segment_labels),
            "segments": dict(self.segments),
            "gaps": [gap.as_dict() for gap in self.gaps],
            "gaps_intended": self.gaps_intended,
        }


def plan_batches(plan: Plan, tenants: Iterable[Tenant]) -> BatchPlan:
    """Split the plan's selected tenants into the policy's batches; raises PlanningError."""
    fleet = _index(tenants)
    ordered = order_tenants(plan.tenants, fleet, seed=plan.seed)
    if not ordered:
        raise PlanningError(
            f"plan {plan.id!r} selects no tenant: select {dict(plan.tenants.select) or '{}'} "
            f"minus {len(plan.tenants.exclude)} exclusion(s) matched none of the "
            f"{len(fleet)} tenants of plugin {plan.plugin!r}"
        )
    total = len(ordered)
    notes: list[str] = []
    specs = plan.policy.batches
    canary = len(plan.tenants.canary)

    targets: list[int] = []
    for position, spec in enumerate(specs):
        if spec.ratio is not None:
            target = math.ceil(spec.ratio * total - 1e-9)
        else:
            target = min(spec.count or 0, total)
        if position == 0 and target < canary:
            notes.append(
                f"batch 1 grows from {target} to {canary} tenant(s) to hold the whole canary cohort"
            )
            target = canary
        previous = targets[-1] if targets else 0
        targets.append(min(max(target, previous + 1), total))
    if targets[-1] < total:
        raise PlanningError(
            f"plan {plan.id!r}: the policy's batches reach {targets[-1]} of the {total} selected "
            "tenants; end the policy with a batch of ratio 1.0 or raise the last count"
        )

    batches: list[PlannedBatch] = []
    start = 0
    for position, (spec, target) in enumerate(zip(specs, targets, strict=True), start=1):
        if target == start and batches:
            last = batches[-1]
            batches[-1] = PlannedBatch(
                index=last.index,
                name=last.name,
                tenants=last.tenants,
                cumulative_count=last.cumulative_count,
                cumulative_ratio=last.cumulative_ratio,
                bake=max(last.bake, spec.bake),
                approval_required=last.approval_required or spec.approval == "required",
                merged=(*last.merged, position),
            )
            continue
        batches.append(
            PlannedBatch(
                index=position,
                name=spec.name or f"batch_{position}",
                tenants=(),
                cumulative_count=target,
                cumulative_ratio=target / total,
                bake=spec.bake,
                approval_required=spec.approval == "required",
            )
        )
        start = target
    sizes = [
        (b.index, b.cumulative_count - (p.cumulative_count if p else 0))
        for p, b in zip([None, *batches[:-1]], batches, strict=True)
    ]
    assigned = assign(ordered, sizes, fleet, plan.tenants)
    labels = segment_labels(plan.tenants)
    batches = [
        replace(b, tenants=tenants, segments=segment_counts(tenants, fleet, labels))
        for b, tenants in zip(batches, assigned.batches, strict=True)
    ]
    notes += assigned.notes
    for batch in batches:
        if batch.merged:
            folded = ", ".join(str(i) for i in batch.merged)
            notes.append(
                f"{total} selected tenant(s) for {len(specs)} batches: batch(es) {folded} merged "
                f"into batch {batch.index} (it keeps approval if any asked for it, and the "
                "longest bake)"
            )
    represent = plan.tenants.represent
    return BatchPlan(
        plan.id,
        tuple(ordered),
        tuple(batches),
        tuple(notes),
        segment_labels=labels,
        segments=segment_counts(ordered, fleet, labels),
        gaps=assigned.gaps,
        gaps_intended=bool(represent and represent.intended_gaps),
    )


def order_tenants(selection: TenantSelection, fleet: Mapping[str, Tenant], seed: str) -> list[str]:
    """Selected tenant ids in rollout order: canary cohort, order keys, then a seeded hash."""
    missing = [tenant_id for tenant_id in selection.canary if tenant_id not in fleet]
    if missing:
        raise PlanningError(
            f"canary tenant(s) {', '.join(missing)} are not among the platform's tenants; "
            "fix tenants.canary (a rollout never starts without its canary cohort)"
        )
    for tenant_id in selection.canary:
        reason = _excluded_by(selection, fleet[tenant_id])
        if reason:
            raise PlanningError(f"canary tenant {tenant_id} is excluded by tenants.{reason}")
    canary = list(dict.fromkeys(selection.canary))
    cohort = set(canary)
    rest = [
        tenant
        for tenant in fleet.values()
        if tenant.id not in cohort
        and _matches(selection.select, tenant.labels)
        and not _excluded_by(selection, tenant)
    ]
    keys = [key if isinstance(key, OrderKey) else OrderKey(label=key) for key in selection.order]
    salt = seed.encode() + b"\x00"

    def sort_key(tenant: Tenant) -> tuple[tuple[int, str] | bytes | str, ...]:
        ranks: list[tuple[int, str]] = []
        for key in keys:
            value = tenant.labels.get(key.label)
            if key.values is not None:
                rank = key.values.index(value) if value in key.values else len(key.values)
                ranks.append((rank, value or ""))
            else:
                ranks.append((value is None, value or ""))
        digest = hashlib.blake2b(salt + tenant.id.encode(), digest_size=8).digest()
        return (*ranks, digest, tenant.id)

    rest.sort(key=sort_key)
    return canary + [tenant.id for tenant in rest]


def _index(tenants: Iterable[Tenant]) -> dict[str, Tenant]:
    fleet: dict[str, Tenant] = {}
    for tenant in tenants:
        if tenant.id in fleet:
            raise PlanningError(f"tenant id {tenant.id!r} appears twice in the tenant list")
        fleet[tenant.id] = tenant
    return fleet


def _matches(selector: Mapping[str, str | list[str]], labels: Mapping[str, str]) -> bool:
    for key, wanted in selector.items():
        value = labels.get(key)
        if value is None:
            return False
        if isinstance(wanted, list):
            if value not in wanted:
                return False
        elif value != wanted:
            return False
    return True


def _excluded_by(selection: TenantSelection, tenant: Tenant) -> str | None:
    """`exclude[i]` naming the first exclusion that hits the tenant, or None."""
    for index, entry in enumerate(selection.exclude):
        if isinstance(entry, str):
            if entry == tenant.id:
                return f"exclude[{index}]"
        elif _matches(entry, tenant.labels):
            return f"exclude[{index}]"
    return None
