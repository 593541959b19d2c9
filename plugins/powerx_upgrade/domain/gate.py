"""Gate evaluation: per-tenant measurements of a batch's bake -> a verdict, Argo-Rollouts style.

Judging one measured value against one check is a tiny pure function (`judge`); a gate
evaluation computes every check's measurements for one poke (`measure`), and the verdict counts
results against the limits (failure limit, max breaching tenants, min samples) and the clock
(bake end, missing-data timeout) instead of reacting to a single sample (`evaluate`).

Phases, best to worst: pass < running < inconclusive < no_data < fail, plus the operator requests
pause_requested and rollback_requested, which outrank everything.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from powerx_upgrade.domain.models import CheckSpec, GateSpec


class Phase(StrEnum):
    PASS = "pass"
    RUNNING = "running"
    """No verdict yet: the bake goes on."""
    INCONCLUSIVE = "inconclusive"
    NO_DATA = "no_data"
    FAIL = "fail"
    PAUSE_REQUESTED = "pause_requested"
    ROLLBACK_REQUESTED = "rollback_requested"

    @property
    def final(self) -> bool:
        return self is not Phase.RUNNING


_RANK = {phase: rank for rank, phase in enumerate(Phase)}


def worst(phases: Iterable[Phase]) -> Phase:
    """The worst of several phases (an empty set is a pass)."""
    return max(phases, key=_RANK.__getitem__, default=Phase.PASS)


_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


@dataclass(frozen=True)
class TenantStats:
    """What monitoring says of one tenant over an interval."""

    requests: int = 0
    errors: int = 0
    latency_p95_ms: float | None = None
    samples: int = 0
    values: Mapping[str, float] = field(default_factory=dict)
    """Custom metrics of the provider's catalogue (Prometheus), already folded over time."""

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> TenantStats:
        latency = data.get("latency_p95_ms")
        return cls(
            requests=int(data.get("requests") or 0),
            errors=int(data.get("errors") or 0),
            latency_p95_ms=float(latency) if latency is not None else None,
            samples=int(data.get("samples") or 0),
            values={
                k: float(v)
                for k, v in data.items()
                if k not in _CORE and isinstance(v, int | float) and not isinstance(v, bool)
            },
        )


_CORE = frozenset({"requests", "errors", "latency_p95_ms", "samples"})
_POOLS = {
    "max": max,
    "sum": sum,
    "mean": lambda values: sum(values) / len(values),
}


def metric_value(
    metric: str, stats: Sequence[TenantStats], pool: str | None = None
) -> float | None:
    """A canonical metric over one or more tenants pooled; None when there is nothing to judge.

    error_rate: errors / requests, pooled over requests. latency_p95_ms: request-weighted mean of
    the tenants' p95 (a true pooled p95 needs the raw distribution, which monitoring does not give;
    the per_tenant scope judges each tenant's own p95). requests, errors: sums. A custom
    metric (`pool` given, from the provider's catalogue): its tenants' values pooled by max, mean
    or sum.
    """
    with_data = [s for s in stats if s.samples > 0]
    if not with_data:
        return None
    requests = sum(s.requests for s in with_data)
    if metric == "error_rate":
        return sum(s.errors for s in with_data) / requests if requests else None
    if metric == "latency_p95_ms":
        weighted = [
            (s.latency_p95_ms, s.requests or 1) for s in with_data if s.latency_p95_ms is not None
        ]
        if not weighted:
            return None
        return sum(v * w for v, w in weighted) / sum(w for _, w in weighted)
    if metric == "requests":
        return float(requests)
    if metric == "errors":
        return float(sum(s.errors for s in with_data))
    if pool is not None:
        found = [s.values[metric] for s in with_data if metric in s.values]
        return float(_POOLS[pool](found)) if found else None
    raise ValueError(
        f"unknown metric {metric!r} (known: error_rate, latency_p95_ms, requests, errors)"
    )


KNOWN_METRICS = ("error_rate", "latency_p95_ms", "requests", "errors")


def judge(value: float, op: str, threshold: float) -> bool:
    """Does `value op threshold` hold? The smallest unit of a gate."""
    return _OPS[op](value, threshold)


@dataclass(frozen=True)
class Measurement:
    """One check measured once: value against its threshold, and whether it held."""

    check: int
    metric: str
    scope: str
    op: str
    limit: str
    threshold: float | None
    value: float | None
    samples: int
    phase: Phase
    """pass, fail, or inconclusive (not enough samples or no baseline)."""
    tenant: str | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "check": self.check,
            "metric": self.metric,
            "scope": self.scope,
            "op": self.op,
            "limit": self.limit,
            "threshold": self.threshold,
            "value": self.value,
            "samples": self.samples,
            "phase": self.phase.value,
            "tenant": self.tenant,
            "detail": self.detail,
        }


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


@dataclass(frozen=True)
class GateEvaluation:
    phase: Phase
    reason: str
    measurements: tuple[Measurement, ...]
    failures: int
    has_data: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "phase": self.phase.value,
            "reason": self.reason,
            "failures": self.failures,
            "has_data": self.has_data,
            "measurements": [m.as_dict() for m in self.measurements],
        }


def measure(check_index: int, check: CheckSpec, data: GateInput) -> list[Measurement]:
    """Measure one check for one poke; per_tenant gives one measurement per tenant."""
    scope_stats = data.cumulative if check.scope == "cumulative" else data.batch
    if check.scope == "per_tenant":
        return [
            _measure_one(check_index, check, {tenant: stats}, data, tenant)
            for tenant, stats in sorted(data.batch.items())
        ]
    return [_measure_one(check_index, check, scope_stats, data, None)]


def _measure_one(
    index: int,
    check: CheckSpec,
    stats: Mapping[str, TenantStats],
    data: GateInput,
    tenant: str | None,
) -> Measurement:
    samples = sum(s.samples for s in stats.values())
    value = metric_value(check.metric, list(stats.values()), data.pools.get(check.metric))
    threshold: float | None = check.limit.value
    detail = ""
    if check.limit.relative:
        reference = data.pre_upgrade if check.baseline == "pre_upgrade" else data.control
        if check.baseline == "pre_upgrade":
            keys = [tenant] if tenant else list(stats)
            base_stats = [reference[k] for k in keys if k in reference]
        else:
            base_stats = list(reference.values())
        base = metric_value(check.metric, base_stats, data.pools.get(check.metric))
        if base is None:
            threshold = None
            detail = f"no {check.baseline} baseline for {check.metric}"
        else:
            threshold = check.limit.threshold(base)
            detail = f"baseline {base:.6g} {check.limit}"
    common = dict(
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
        return Measurement(**common, phase=Phase.INCONCLUSIVE, detail=_join(detail, why))
    if threshold is None:
        return Measurement(**common, phase=Phase.INCONCLUSIVE, detail=detail)
    ok = judge(value, check.op, threshold)
    return Measurement(**common, phase=Phase.PASS if ok else Phase.FAIL, detail=detail)


def evaluate(gate: GateSpec, data: GateInput) -> GateEvaluation:
    """One poke's verdict: never a pass without data; a fail as soon as failure_limit is passed."""
    measurements: list[Measurement] = []
    check_phases: list[Phase] = []
    for index, check in enumerate(gate.checks):
        found = measure(index, check, data)
        measurements += found
        check_phases.append(_check_phase(check, found))
    has_data = any(s.samples > 0 for s in data.batch.values())
    failures = data.failures_so_far + (1 if Phase.FAIL in check_phases else 0)
    result = _verdict(gate, data, check_phases, has_data, failures)
    return GateEvaluation(result[0], result[1], tuple(measurements), failures, has_data)


def _check_phase(check: CheckSpec, found: Sequence[Measurement]) -> Phase:
    if check.scope != "per_tenant":
        return found[0].phase if found else Phase.INCONCLUSIVE
    breaching = sum(1 for m in found if m.phase is Phase.FAIL)
    if breaching > check.max_breaching_tenants:
        return Phase.FAIL
    if not found or any(m.phase is Phase.INCONCLUSIVE for m in found):
        return Phase.INCONCLUSIVE
    return Phase.PASS


def _verdict(
    gate: GateSpec,
    data: GateInput,
    check_phases: Sequence[Phase],
    has_data: bool,
    failures: int,
) -> tuple[Phase, str]:
    if data.operator_request in (Phase.ROLLBACK_REQUESTED, Phase.PAUSE_REQUESTED):
        return data.operator_request, f"an operator asked for {data.operator_request.value}"
    if failures > gate.failure_limit:
        failed = [str(i) for i, p in enumerate(check_phases) if p is Phase.FAIL]
        return Phase.FAIL, (
            f"check(s) {', '.join(failed) or 'earlier'} failed; {failures} failed evaluation(s) "
            f"> failure_limit {gate.failure_limit}"
        )
    # Data younger than signal_delay is not there yet: judge up to the horizon only.
    horizon = data.now - gate.signal_delay
    fresh = data.last_data_at or (horizon if has_data else data.bake_started)
    if horizon - fresh >= gate.missing_data.after:
        return Phase.NO_DATA, (
            f"no monitoring data for {_minutes(horizon - fresh)} "
            f"(missing_data.after {_minutes(gate.missing_data.after)})"
        )
    if horizon < data.bake_started + data.bake:
        return Phase.RUNNING, "baking"
    if not has_data:
        return Phase.NO_DATA, "the bake ended without monitoring data"
    if all(p is Phase.PASS for p in check_phases):
        return Phase.PASS, "every check held over the bake"
    pending = [str(i) for i, p in enumerate(check_phases) if p is not Phase.PASS]
    return Phase.INCONCLUSIVE, f"the bake ended with check(s) {', '.join(pending)} undecided"


def _minutes(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)
