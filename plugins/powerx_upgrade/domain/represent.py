"""Representative batches: early batches that hold tenants of every segment of the selection.

A segment is one combination of the values of `tenants.represent.by` labels among the selected
tenants (`tier=bronze,region=eu`). Each stratified batch first takes `per_segment` tenants of
every segment, in the plan's seeded order; when the combinations do not fit in the batch, it
takes `per_segment` tenants of each label value alone (`tier=bronze`, `region=eu`); then it is
filled in the plan's order as usual. Batch sizes never change, so batches still partition the
selection exactly. What could not be represented is returned as `SegmentGap`s with the reason.

Pure: tenants and the plan in, tuples out (docs/plans.md, "represent").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Protocol

from powerx_upgrade.domain.models import OrderKey, Plan, RepresentSpec, TenantSelection
from powerx_upgrade.domain.problems import Severity

NO_VALUE = "(none)"
"""The value a segment shows for a tenant without the label."""


class Labelled(Protocol):
    @property
    def labels(self) -> Mapping[str, str]: ...


@dataclass(frozen=True)
class SegmentGap:
    """A segment a batch does not hold (enough of), and why."""

    batch: int
    segment: str
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"batch": self.batch, "segment": self.segment, "reason": self.reason}

    def __str__(self) -> str:
        return f"batch {self.batch} leaves out {self.segment}: {self.reason}"


def segment_of(labels: Mapping[str, str], by: Sequence[str]) -> str:
    """`tier=bronze,region=eu`: the segment of a tenant with these labels."""
    return ",".join(f"{label}={labels.get(label, NO_VALUE)}" for label in by)


def segment_labels(selection: TenantSelection) -> tuple[str, ...]:
    """The labels a plan's batches are described by: `represent.by`; without it, the labels the
    plan orders by and those it selects several values of (where a batch can miss a segment)."""
    if selection.represent is not None:
        return tuple(selection.represent.by)
    labels = [key.label if isinstance(key, OrderKey) else key for key in selection.order]
    labels += [key for key, wanted in selection.select.items() if isinstance(wanted, list)]
    return tuple(dict.fromkeys(labels))


def segment_counts(
    tenants: Sequence[str], fleet: Mapping[str, Labelled], by: Sequence[str]
) -> tuple[tuple[str, int], ...]:
    """How many of `tenants` each segment holds, segments sorted by name."""
    if not by:
        return ()
    # count label tuples and name only the distinct ones: 100,000 tenants, a handful of names
    counts = Counter(tuple(fleet[t].labels.get(label, NO_VALUE) for label in by) for t in tenants)
    named = {_named(key, by): n for key, n in counts.items()}
    return tuple(sorted(named.items()))


def _named(key: Sequence[str], by: Sequence[str]) -> str:
    return ",".join(f"{label}={value}" for label, value in zip(by, key, strict=True))


def _segments(tenants: Iterable[str], fleet: Mapping[str, Labelled], by: Sequence[str]) -> set[str]:
    keys = {tuple(fleet[t].labels.get(label, NO_VALUE) for label in by) for t in tenants}
    return {_named(key, by) for key in keys}


# ---------------------------------------------------------------------------------------------
# Assigning tenants to batches
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    batches: tuple[tuple[str, ...], ...]
    gaps: tuple[SegmentGap, ...]
    notes: tuple[str, ...]


def assign(
    ordered: Sequence[str],
    sizes: Sequence[tuple[int, int]],
    fleet: Mapping[str, Labelled],
    selection: TenantSelection,
) -> Assignment:
    """Cut `ordered` (canary cohort first) into batches of the given `(index, size)`s; batches
    up to `represent.through_batch` are stratified. Each batch lists its tenants in plan order."""
    spec = selection.represent
    position = {tenant: i for i, tenant in enumerate(ordered)}
    remaining = list(ordered)
    batches: list[tuple[str, ...]] = []
    gaps: list[SegmentGap] = []
    notes: list[str] = []
    for index, size in sizes:
        if spec is None or index > spec.through_batch:
            taken = remaining[:size]
        else:
            forced = len(selection.canary) if index == 1 else 0
            taken, missing, note = _representative(
                remaining, size, forced, index, fleet, spec, ordered
            )
            gaps += missing
            notes += [note] if note else []
        chosen = set(taken)
        remaining = [t for t in remaining if t not in chosen]
        batches.append(tuple(sorted(taken, key=position.__getitem__)))
    if spec is None or spec.through_batch == 0:
        gaps += _unasked_gaps(batches, ordered, fleet, segment_labels(selection), spec)
    return Assignment(tuple(batches), tuple(gaps), tuple(notes))


def _representative(
    pool: list[str],
    size: int,
    forced: int,
    index: int,
    fleet: Mapping[str, Labelled],
    spec: RepresentSpec,
    selected: Sequence[str],
) -> tuple[list[str], list[SegmentGap], str | None]:
    """`size` tenants of `pool`: its first `forced` (the canary cohort), then `per_segment` of
    each segment (else of each label value), then the next in order."""
    picked = pool[:forced]
    by, per = spec.by, spec.per_segment

    @cache
    def combo(tenant: str) -> tuple[str, ...]:
        return (segment_of(fleet[tenant].labels, by),)

    @cache
    def alone(tenant: str) -> tuple[str, ...]:
        return tuple(segment_of(fleet[tenant].labels, (label,)) for label in by)

    free = size - len(picked)
    units_of: Callable[[str], tuple[str, ...]] = combo
    wanted = _wanted(pool, picked, combo, per)
    note = None
    if sum(wanted.values()) > free and len(by) > 1:
        combos = len(_available(pool, combo))
        units_of = alone
        wanted = _wanted(pool, picked, alone, per)
        note = (
            f"batch {index} represents each of {', '.join(by)} alone: {combos} combinations x "
            f"{per} do not fit in its {size} tenant(s)"
        )
    picked = _pick(pool, picked, units_of, per, free)
    counts = Counter(unit for tenant in picked for unit in units_of(tenant))
    available = _available(pool, units_of)
    gaps = [
        SegmentGap(index, unit, _why(index, size, forced, available[unit], len(available), per))
        for unit in sorted(available)
        if counts[unit] < min(per, available[unit])
    ]
    gaps += [
        SegmentGap(index, unit, "no tenant of it is left: all are in earlier batches")
        for unit in sorted(set(_available(selected, units_of)) - set(available))
    ]
    chosen = set(picked)
    rest = [t for t in pool if t not in chosen][: size - len(picked)]
    return picked + rest, gaps, note


def _available(pool: Sequence[str], units_of: Callable[[str], tuple[str, ...]]) -> Counter[str]:
    return Counter(unit for tenant in pool for unit in units_of(tenant))


def _wanted(
    pool: Sequence[str],
    picked: Sequence[str],
    units_of: Callable[[str], tuple[str, ...]],
    per: int,
) -> dict[str, int]:
    have = _available(picked, units_of)
    return {
        unit: max(0, min(per, count) - have[unit])
        for unit, count in _available(pool, units_of).items()
    }


def _pick(
    pool: Sequence[str],
    picked: list[str],
    units_of: Callable[[str], tuple[str, ...]],
    per: int,
    free: int,
) -> list[str]:
    """Round r takes one more tenant of every unit holding fewer than r, units in the order of
    their first tenant in the pool (the plan's seeded order), each its next tenant in order."""
    members: dict[str, list[str]] = {}
    for tenant in pool:
        for unit in units_of(tenant):
            members.setdefault(unit, []).append(tenant)
    chosen = set(picked)
    counts = Counter(unit for tenant in picked for unit in units_of(tenant))
    cursor = dict.fromkeys(members, 0)
    picked = list(picked)
    for round_ in range(1, per + 1):
        for unit, tenants in members.items():
            if free == 0:
                return picked
            if counts[unit] >= round_:
                continue
            while cursor[unit] < len(tenants) and tenants[cursor[unit]] in chosen:
                cursor[unit] += 1
            if cursor[unit] == len(tenants):
                continue
            tenant = _best(tenants, cursor[unit], chosen, units_of, counts, round_)
            chosen.add(tenant)
            picked.append(tenant)
            free -= 1
            counts.update(units_of(tenant))
    return picked


def _best(
    tenants: Sequence[str],
    start: int,
    chosen: set[str],
    units_of: Callable[[str], tuple[str, ...]],
    counts: Counter[str],
    round_: int,
) -> str:
    """The unit's first tenant in order that also fills the most other units still short in
    this round (a gold tenant in region us when region us is missing too)."""
    best, score = tenants[start], -1
    for tenant in tenants[start:]:
        if tenant in chosen:
            continue
        units = units_of(tenant)
        found = sum(1 for unit in units if counts[unit] < round_)
        if found > score:
            best, score = tenant, found
            if found == len(units):
                break
    return best


def _why(index: int, size: int, forced: int, left: int, units: int, per: int) -> str:
    if forced and forced >= size:
        return f"batch {index} is all canary cohort ({forced} of {size} tenant(s))"
    held = f" ({forced} taken by the canary cohort)" if forced else ""
    return (
        f"batch {index} has {size} tenant(s){held}, too few for {units} segment(s) x "
        f"per_segment {per}" + (f" ({left} of this segment left)" if left < per else "")
    )


def _unasked_gaps(
    batches: Sequence[Sequence[str]],
    ordered: Sequence[str],
    fleet: Mapping[str, Labelled],
    by: Sequence[str],
    spec: RepresentSpec | None,
) -> list[SegmentGap]:
    """Segments of the selection batch 1 leaves out when the plan does not stratify it."""
    if not by or not batches:
        return []
    present = _segments(batches[0], fleet, by)
    selection = _segments(ordered, fleet, by)
    reason = (
        "tenants.represent.through_batch is 0"
        if spec is not None
        else "batch 1 is filled in the plan's order; tenants.represent is not set"
    )
    return [SegmentGap(1, segment, reason) for segment in sorted(selection - present)]


# ---------------------------------------------------------------------------------------------
# Validation without a tenant list
# ---------------------------------------------------------------------------------------------

Finding = tuple[tuple[str | int, ...], str, Severity]


def representation_findings(plan: Plan) -> list[Finding]:
    """Warnings about batch 1 leaving segments out, judged from the plan alone (no tenants):
    an order by a label fills batch 1 with its first-ranked values."""
    selection = plan.tenants
    spec = selection.represent
    if spec is not None:
        return _spec_findings(plan, spec)
    for position, key in enumerate(selection.order):
        order = key if isinstance(key, OrderKey) else OrderKey(label=key)
        ranked = _ranked_values(order, selection.select.get(order.label))
        if ranked is not None and len(ranked) < 2:
            continue
        label = order.label
        if ranked:
            how = f"{label}={ranked[0]} first"
            left_out = ", ".join(f"{label}={value}" for value in ranked[1:])
        else:
            how, left_out = "alphabetically", f"every {label} but the first"
        return [
            (
                ("tenants", "order", position),
                f"batch 1 takes tenants in the order of {label} ({how}): it can leave out "
                f"{left_out}, and a failure only they see is then found in a later batch; add "
                f"tenants.represent: {{by: [{label}]}} (or, if that is intended, "
                f"{{by: [{label}], through_batch: 0, intended_gaps: true}})",
                "warning",
            )
        ]
    return []


def _ranked_values(order: OrderKey, selected: str | list[str] | None) -> list[str] | None:
    """The values batch 1 meets first to last, as far as the plan alone says; None: unknown."""
    if isinstance(selected, str):
        return [selected]
    if order.values is not None:
        if selected is None:
            return list(order.values)
        return [v for v in order.values if v in selected] + sorted(
            v for v in selected if v not in order.values
        )
    return sorted(selected) if selected is not None else None


def _spec_findings(plan: Plan, spec: RepresentSpec) -> list[Finding]:
    findings: list[Finding] = []
    path = ("tenants", "represent")
    if spec.through_batch == 0 and not spec.intended_gaps:
        findings.append(
            (
                (*path, "through_batch"),
                f"through_batch 0 stratifies no batch: batch 1 may leave segments of "
                f"{', '.join(spec.by)} out; set through_batch: 1, or intended_gaps: true "
                "if that is intended",
                "warning",
            )
        )
    batches = len(plan.policy.batches)
    if spec.through_batch > batches:
        findings.append(
            (
                (*path, "through_batch"),
                f"through_batch {spec.through_batch} is beyond the policy's {batches} "
                f"batch(es): all {batches} are stratified",
                "warning",
            )
        )
    for position, label in enumerate(spec.by):
        if label in spec.by[:position]:
            findings.append(((*path, "by", position), f"label {label} is listed twice", "error"))
        selected = plan.tenants.select.get(label)
        if isinstance(selected, str):
            findings.append(
                (
                    (*path, "by", position),
                    f"tenants.select picks only {label}={selected}: {label} makes one segment "
                    "and adds nothing",
                    "warning",
                )
            )
    return findings
