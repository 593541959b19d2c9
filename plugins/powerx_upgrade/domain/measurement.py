"""Measuring a gate: the closed set of phases ranked best to worst, one tenant's stats, a
metric folded over tenants, and one check judged once (`judge`, `Measurement`)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    PASS = "pass"
    RUNNING = "running"
    """No verdict yet: the bake goes on."""
    INCONCLUSIVE = "inconclusive"
    NO_DATA = "no_data"
    ERROR = "error"
    """The monitoring source refused the query, or failed too many times in a row."""
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


_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
}


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
    def from_json(cls, data: Mapping[str, Any]) -> TenantStats:
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

    def as_dict(self) -> dict[str, object]:
        return {
            **self.values,
            "requests": self.requests,
            "errors": self.errors,
            "latency_p95_ms": self.latency_p95_ms,
            "samples": self.samples,
        }


_CORE = frozenset({"requests", "errors", "latency_p95_ms", "samples"})
_POOLS: dict[str, Callable[[list[float]], float]] = {
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
