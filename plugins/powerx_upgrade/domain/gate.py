"""Gate evaluation: per-tenant measurements of a batch's bake -> a verdict, Argo-Rollouts style.

Judging one measured value against one check is a tiny pure function (`judge`); a gate
evaluation computes every check's measurements for one poke (`measure`), and the verdict counts
results against the limits (failure limit, max breaching tenants, min samples) and the clock
(bake end, missing-data timeout) instead of reacting to a single sample (`evaluate`).

Phases, best to worst: pass < running < inconclusive < no_data < error < fail, plus the operator
requests pause_requested and rollback_requested, which outrank everything.

Silence is evidence, never health: every check needs data from a share of the tenants it judges
(`min_coverage`, default all of them). A tenant that reported before its upgrade and is silent
after it fails a per_tenant check (a crashed plugin sends nothing); any other shortfall keeps the
gate from passing and, once it has lasted `missing_data.after` or the bake has ended, is a
no_data verdict that names the silent tenants. A monitoring source that refuses the query (4xx)
ends the gate at once with `error`; one that fails transiently (5xx, timeouts) does so after
`error.consecutive` failed pokes in a row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from powerx_upgrade.domain.measurement import (
    KNOWN_METRICS,
    Measurement,
    Phase,
    TenantStats,
    judge,
    metric_value,
    worst,
)
from powerx_upgrade.domain.models import CheckSpec, GateSpec

__all__ = [
    "KNOWN_METRICS",
    "Coverage",
    "GateEvaluation",
    "GateInput",
    "Measurement",
    "MonitoringError",
    "Phase",
    "TenantStats",
    "coverage",
    "evaluate",
    "fresh_since",
    "judge",
    "measure",
    "metric_value",
    "worst",
]
"""The measurement names stay importable from here: the gate's callers (sensor, trigger, rollout
steps) use them together with the evaluation."""


@dataclass(frozen=True)
class GateInput:
    """Everything one poke knows; all plain values, so the trigger can build it from JSON."""

    now: datetime
    bake_started: datetime
    bake: timedelta
    batch: Mapping[str, TenantStats]
    """Stats of the batch's tenants over [bake_started, now - signal_delay]; absent = no data."""
    cumulative: Mapping[str, TenantStats] = field(default_factory=dict)
    """Stats of every tenant upgraded by this run so far, same interval."""
    pre_upgrade: Mapping[str, TenantStats] = field(default_factory=dict)
    """The baseline snapshot taken in preflight, per tenant."""
    control: Mapping[str, TenantStats] = field(default_factory=dict)
    """Stats of tenants not yet upgraded, same interval."""
    last_data_at: datetime | None = None
    """End of the latest interval in which the batch had samples (None: never, or not tracked:
    then any data in `batch` counts as fresh)."""
    failures_so_far: int = 0
    """Failed evaluations in earlier pokes of this gate."""
    pools: Mapping[str, str] = field(default_factory=dict)
    """Custom metric -> pool (max, mean, sum), from the provider's catalogue."""
    operator_request: Phase | None = None
    expected: Sequence[str] | None = None
    """The batch's deployed tenants: each must report (None: the tenants in `batch`)."""
    cumulative_expected: Sequence[str] | None = None
    """Every tenant this run upgraded so far (None: the tenants in `cumulative`)."""
    reporting: frozenset[str] | None = None
    """Tenants with samples in the latest poke interval (None: every tenant with data counts)."""
    has_control: bool = True
    """Whether tenants remain on the old version; at the last batch there is no control group,
    and a `baseline: control` check falls back to the pre_upgrade baseline."""
    silence_grace: timedelta = timedelta(seconds=10)
    """How long after the bake starts a silent tenant is judged silent (one monitoring bucket)."""
    monitoring_error: MonitoringError | None = None
    """This poke's query failed: nothing was measured."""


@dataclass(frozen=True)
class MonitoringError:
    """A failed monitoring query, classified: `refused` (4xx: auth, config) or `unavailable`."""

    kind: str
    message: str
    consecutive: int
    """Failed pokes in a row, this one included."""
    total: int

    @property
    def refused(self) -> bool:
        return self.kind == "refused"

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "message": self.message,
            "consecutive": self.consecutive,
            "total": self.total,
        }


@dataclass(frozen=True)
class Coverage:
    """How many of the tenants a check judges reported data in the latest poke interval."""

    check: int
    metric: str
    expected: int
    reporting: int
    required: int
    silent: tuple[str, ...]

    @property
    def short(self) -> bool:
        return self.reporting < self.required

    def as_dict(self) -> dict[str, object]:
        return {
            "check": self.check,
            "metric": self.metric,
            "expected": self.expected,
            "reporting": self.reporting,
            "required": self.required,
            "silent": list(self.silent),
        }

    def as_measurement(self, scope: str, share: float) -> Measurement:
        """The shortfall as a row of the verdict's measurements (check -2: not a metric check)."""
        shown = ", ".join(self.silent[:20]) + (" ..." if len(self.silent) > 20 else "")
        return Measurement(
            check=-2,
            metric="coverage",
            scope=scope,
            op=">=",
            limit=f"{share:.0%}",
            threshold=float(self.required),
            value=float(self.reporting),
            samples=self.expected,
            phase=Phase.NO_DATA if self.short else Phase.PASS,
            detail=f"check {self.check} ({self.metric}): silent {shown}" if self.silent else "",
        )


@dataclass(frozen=True)
class GateEvaluation:
    phase: Phase
    reason: str
    measurements: tuple[Measurement, ...]
    failures: int
    has_data: bool
    coverage: tuple[Coverage, ...] = ()
    covered: bool = False
    """Every check had the data it needs in the latest poke interval (the data is fresh)."""
    per_tenant: Mapping[str, TenantStats] = field(default_factory=dict)
    error: MonitoringError | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "phase": self.phase.value,
            "reason": self.reason,
            "failures": self.failures,
            "has_data": self.has_data,
            "measurements": [m.as_dict() for m in self.measurements],
            "coverage": [c.as_dict() for c in self.coverage],
            "per_tenant": {t: s.as_dict() for t, s in sorted(self.per_tenant.items())},
            "errors": self.error.as_dict() if self.error else None,
        }


def _scope(check: CheckSpec, data: GateInput) -> tuple[Mapping[str, TenantStats], list[str]]:
    """The stats a check judges and the tenants that must report for it."""
    if check.scope == "cumulative":
        stats = data.cumulative
        expected = data.cumulative_expected
    else:
        stats = data.batch
        expected = data.expected
    if expected is None:
        expected = [t for t, s in stats.items() if s.samples > 0]
    return stats, sorted(set(expected))


def _reporting(data: GateInput) -> frozenset[str]:
    if data.reporting is not None:
        return data.reporting
    seen = {**data.cumulative, **data.batch}
    return frozenset(t for t, s in seen.items() if s.samples > 0)


def coverage(check_index: int, check: CheckSpec, gate: GateSpec, data: GateInput) -> Coverage:
    """Which of the check's tenants reported in the latest poke interval, against min_coverage."""
    _, expected = _scope(check, data)
    reporting = _reporting(data)
    silent = tuple(t for t in expected if t not in reporting)
    # a share of 0.9 of 10 tenants needs 9; float noise must not make it 10
    required = math.ceil(gate.coverage_of(check) * len(expected) - 1e-9)
    return Coverage(
        check=check_index,
        metric=check.metric,
        expected=len(expected),
        reporting=len(expected) - len(silent),
        required=required,
        silent=silent,
    )


def measure(
    check_index: int,
    check: CheckSpec,
    data: GateInput,
    signal_delay: timedelta = timedelta(0),
) -> list[Measurement]:
    """Measure one check for one poke; per_tenant gives one measurement per tenant.

    A per_tenant check judges every tenant that must report: one that reported before its
    upgrade and is silent now (past the silence grace) fails, because a crashed plugin sends
    nothing; one with no history either is inconclusive.
    """
    scope_stats, expected = _scope(check, data)
    if check.scope != "per_tenant":
        return [_measure_one(check_index, check, scope_stats, data, None)]
    reporting = _reporting(data)
    judged = sorted(set(expected) | {t for t, s in scope_stats.items() if s.samples > 0})
    found = []
    for tenant in judged:
        if tenant not in reporting and _silence_counts(data, signal_delay):
            found.append(_silent_one(check_index, check, data, tenant))
            continue
        stats = {tenant: scope_stats[tenant]} if tenant in scope_stats else {}
        found.append(_measure_one(check_index, check, stats, data, tenant))
    return found


def _silence_counts(data: GateInput, signal_delay: timedelta) -> bool:
    """Silence means something only once a healthy tenant would have reported: the judged
    interval (up to the signal horizon) must be at least one monitoring bucket long."""
    horizon = data.now - signal_delay
    return horizon - data.bake_started >= data.silence_grace


def _silent_one(index: int, check: CheckSpec, data: GateInput, tenant: str) -> Measurement:
    before = data.pre_upgrade.get(tenant)
    measured = partial(
        Measurement,
        check=index,
        metric=check.metric,
        scope=check.scope,
        op=check.op,
        limit=str(check.limit),
        threshold=check.limit.value if not check.limit.relative else None,
        value=None,
        samples=0,
        tenant=tenant,
    )
    if before is not None and before.samples > 0:
        return measured(
            phase=Phase.FAIL,
            detail=f"silent since its upgrade ({before.samples} samples before it)",
        )
    return measured(phase=Phase.INCONCLUSIVE, detail="no data (none before either)")


def _measure_one(
    index: int,
    check: CheckSpec,
    stats: Mapping[str, TenantStats],
    data: GateInput,
    tenant: str | None,
) -> Measurement:
    samples = sum(s.samples for s in stats.values())
    value = metric_value(check.metric, list(stats.values()), data.pools.get(check.metric))
    threshold, detail = _threshold(check, stats, data, tenant)
    measured = partial(
        Measurement,
        check=index,
        metric=check.metric,
        scope=check.scope,
        op=check.op,
        limit=str(check.limit),
        threshold=threshold,
        value=value,
        samples=samples,
        tenant=tenant,
    )
    if value is None or samples < check.min_samples:
        why = "no data" if value is None else f"{samples} of {check.min_samples} samples"
        return measured(phase=Phase.INCONCLUSIVE, detail=_join(detail, why))
    if threshold is None:
        return measured(phase=Phase.INCONCLUSIVE, detail=detail)
    ok = judge(value, check.op, threshold)
    return measured(phase=Phase.PASS if ok else Phase.FAIL, detail=detail)


def _threshold(
    check: CheckSpec, stats: Mapping[str, TenantStats], data: GateInput, tenant: str | None
) -> tuple[float | None, str]:
    """The absolute threshold of a check, and how a relative one was derived.

    `baseline: control` without a control group (the last batch upgrades every remaining tenant)
    falls back to the pre_upgrade baseline of the same tenants, and says so.
    """
    if not check.limit.relative:
        return check.limit.value, ""
    baseline = check.baseline
    note = ""
    if baseline == "control" and not data.has_control:
        baseline = "pre_upgrade"
        note = "no control group left (every tenant is upgraded): pre_upgrade baseline instead"
    if baseline == "pre_upgrade":
        keys = [tenant] if tenant else list(stats)
        base_stats = [data.pre_upgrade[k] for k in keys if k in data.pre_upgrade]
    else:
        base_stats = list(data.control.values())
    base = metric_value(check.metric, base_stats, data.pools.get(check.metric))
    if base is None:
        return None, _join(note, f"no {baseline} baseline for {check.metric}")
    return check.limit.threshold(base), _join(note, f"baseline {base:.6g} {check.limit}")


def evaluate(gate: GateSpec, data: GateInput) -> GateEvaluation:
    """One poke's verdict: never a pass without data from the tenants that must report; a fail
    as soon as failure_limit is passed; an error when the monitoring source refuses or keeps
    failing."""
    if data.operator_request in (Phase.ROLLBACK_REQUESTED, Phase.PAUSE_REQUESTED):
        reason = f"an operator asked for {data.operator_request.value}"
        return GateEvaluation(data.operator_request, reason, (), data.failures_so_far, False)
    if data.monitoring_error is not None:
        return _errored(gate, data, data.monitoring_error)
    measurements: list[Measurement] = []
    check_phases: list[Phase] = []
    coverages: list[Coverage] = []
    for index, check in enumerate(gate.checks):
        found = measure(index, check, data, gate.signal_delay)
        covered = coverage(index, check, gate, data)
        measurements += found
        coverages.append(covered)
        check_phases.append(_check_phase(check, found, covered))
    has_data = any(s.samples > 0 for s in data.batch.values())
    failures = data.failures_so_far + (1 if Phase.FAIL in check_phases else 0)
    shortfalls = [c for c in coverages if c.short]
    phase, reason = _verdict(gate, data, check_phases, has_data, failures, shortfalls)
    shown = [
        *measurements,
        *(
            c.as_measurement(gate.checks[c.check].scope, gate.coverage_of(gate.checks[c.check]))
            for c in shortfalls
        ),
    ]
    return GateEvaluation(
        phase,
        reason,
        tuple(shown),
        failures,
        has_data,
        coverage=tuple(coverages),
        covered=not shortfalls and has_data,
        per_tenant={**data.cumulative, **data.batch},
    )


def fresh_since(
    gate: GateSpec, now: datetime, result: GateEvaluation, last_data_at: datetime | None
) -> datetime | None:
    """The gate's freshness after a poke: the signal horizon when every check had the data it
    needs, else unchanged (the live gate and a backtest carry it from poke to poke alike)."""
    return now - gate.signal_delay if result.covered else last_data_at


def _errored(gate: GateSpec, data: GateInput, error: MonitoringError) -> GateEvaluation:
    limit = gate.error.consecutive
    if error.refused:
        phase, reason = Phase.ERROR, f"monitoring refused the query: {error.message}"
    elif error.consecutive >= limit:
        phase, reason = (
            Phase.ERROR,
            (
                f"monitoring failed {error.consecutive} poke(s) in a row (error.consecutive "
                f"{limit}): {error.message}"
            ),
        )
    else:
        phase, reason = (
            Phase.RUNNING,
            (
                f"monitoring error {error.consecutive} of {limit} in a row, retrying: "
                f"{error.message}"
            ),
        )
    return GateEvaluation(phase, reason, (), data.failures_so_far, False, error=error)


def _check_phase(check: CheckSpec, found: Sequence[Measurement], covered: Coverage) -> Phase:
    if check.scope != "per_tenant":
        phase = found[0].phase if found else Phase.INCONCLUSIVE
        return Phase.NO_DATA if covered.short and phase is not Phase.FAIL else phase
    breaching = sum(1 for m in found if m.phase is Phase.FAIL)
    if breaching > check.max_breaching_tenants:
        return Phase.FAIL
    if covered.short:
        return Phase.NO_DATA
    if not found or any(m.phase is Phase.INCONCLUSIVE for m in found):
        return Phase.INCONCLUSIVE
    return Phase.PASS


def _verdict(
    gate: GateSpec,
    data: GateInput,
    check_phases: Sequence[Phase],
    has_data: bool,
    failures: int,
    shortfalls: Sequence[Coverage],
) -> tuple[Phase, str]:
    if failures > gate.failure_limit:
        failed = [str(i) for i, p in enumerate(check_phases) if p is Phase.FAIL]
        return Phase.FAIL, (
            f"check(s) {', '.join(failed) or 'earlier'} failed; {failures} failed evaluation(s) "
            f"> failure_limit {gate.failure_limit}"
        )
    # Data younger than signal_delay is not there yet: judge up to the horizon only.
    horizon = data.now - gate.signal_delay
    covered_now = has_data and not shortfalls
    if data.reporting is None:  # the caller tracks freshness itself, in last_data_at
        fresh = data.last_data_at or (horizon if covered_now else data.bake_started)
    else:
        fresh = horizon if covered_now else (data.last_data_at or data.bake_started)
    if horizon - fresh >= gate.missing_data.after:
        return Phase.NO_DATA, (
            f"{_silence(shortfalls, has_data)} for {_minutes(horizon - fresh)} "
            f"(missing_data.after {_minutes(gate.missing_data.after)})"
        )
    if horizon < data.bake_started + data.bake:
        return Phase.RUNNING, "baking"
    if not has_data:
        return Phase.NO_DATA, "the bake ended without monitoring data"
    if shortfalls:
        return Phase.NO_DATA, f"the bake ended with {_silence(shortfalls, has_data)}"
    if all(p is Phase.PASS for p in check_phases):
        return Phase.PASS, "every check held over the bake"
    pending = [str(i) for i, p in enumerate(check_phases) if p is not Phase.PASS]
    return Phase.INCONCLUSIVE, f"the bake ended with check(s) {', '.join(pending)} undecided"


def _silence(shortfalls: Sequence[Coverage], has_data: bool) -> str:
    """`no data from 3 of 12 tenants (t-1, t-2, t-3)`, or `no monitoring data`."""
    if not shortfalls or not has_data:
        return "no monitoring data"
    worst_gap = max(shortfalls, key=lambda c: len(c.silent))
    shown = ", ".join(worst_gap.silent[:10]) + (" ..." if len(worst_gap.silent) > 10 else "")
    return (
        f"no data from {len(worst_gap.silent)} of {worst_gap.expected} tenants ({shown}; "
        f"{worst_gap.required} must report)"
    )


def _minutes(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)
