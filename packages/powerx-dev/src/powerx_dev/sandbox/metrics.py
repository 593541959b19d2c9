"""Deterministic monitoring series: per-tenant requests, errors and p95 latency for any interval.

Every number is a function of the seed, the tenant, the time bucket and the version installed at
that moment; noise comes from a hash of those, never from a global RNG, and is bounded so a
version's error rate can never be mistaken for another across a gate's threshold.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from powerx_dev.sandbox.faults import (
    ErrorRateFault,
    LatencyFault,
    MetricsGapFault,
    SignalDelayFault,
)
from powerx_dev.sandbox.scenario import Scenario
from powerx_dev.sandbox.seeded import bucket_noise, key_hash, unit

CORE_METRICS: tuple[str, ...] = ("requests", "errors", "latency_p95_ms", "samples")
METRICS: tuple[str, ...] = (*CORE_METRICS, "error_rate")
"""Metric names a query may ask for; `error_rate` is errors / requests, derived."""


class QueryTooLarge(ValueError):
    """A query that would touch more tenant-buckets than the scenario allows."""


@dataclass(frozen=True)
class TenantSeries:
    """What the metric engine needs to know about one tenant: who it is and its version history.

    `timeline` is ((since_epoch_seconds, version), ...) sorted by time; the first entry's time is
    -inf (the version it had before the sandbox started).
    """

    id: str
    labels: dict[str, str]
    timeline: tuple[tuple[float, str], ...]

    def version_at(self, moment: float) -> str:
        for since, version in reversed(self.timeline):
            if since <= moment:
                return version
        return self.timeline[0][1]


@dataclass(frozen=True)
class WindowedFault:
    """A metric-affecting fault with its absolute window (start, end) in epoch seconds."""

    spec: Any
    start: float
    end: float

    def covers(self, moment: float) -> bool:
        return self.start <= moment < self.end


class MetricsEngine:
    """Computes interval aggregates for tenants of one scenario."""

    def __init__(self, scenario: Scenario):
        self.seed = scenario.seed
        self.bucket = scenario.monitoring.bucket.total_seconds()
        self.base_delay = scenario.monitoring.delay.total_seconds()
        self.max_points = scenario.monitoring.max_points
        self.noise = scenario.monitoring.noise
        self.traffic = scenario.traffic
        self.versions = scenario.versions
        self._bases: dict[str, int] = {}
        self._scales: dict[str, float] = {}

    # -- per tenant constants ------------------------------------------------------------------

    def _base(self, tenant_id: str) -> int:
        base = self._bases.get(tenant_id)
        if base is None:
            base = key_hash(self.seed, "metrics", tenant_id)
            self._bases[tenant_id] = base
        return base

    def tenant_scale(self, tenant_id: str) -> float:
        """A tenant's size relative to the baseline rps, in [1 - spread, 1 + spread]."""
        scale = self._scales.get(tenant_id)
        if scale is None:
            spread = self.traffic.rps_spread
            scale = 1.0 + spread * (2.0 * unit(self.seed, "scale", tenant_id) - 1.0)
            self._scales[tenant_id] = scale
        return scale

    def behaviour(
        self, version: str, tenant: TenantSeries, moment: float, faults: Sequence[WindowedFault]
    ) -> tuple[float, float, float]:
        """(error_rate, latency_p95_ms, rps_factor) of a tenant at a moment; last fault wins."""
        spec = self.versions.get(version)
        error_rate = self.traffic.error_rate
        latency = self.traffic.latency_p95_ms
        rps_factor = 1.0
        if spec is not None:
            error_rate = spec.error_rate if spec.error_rate is not None else error_rate
            latency = spec.latency_p95_ms if spec.latency_p95_ms is not None else latency
            rps_factor = spec.rps_factor
        for fault in faults:
            item = fault.spec
            if not fault.covers(moment) or (item.version and item.version != version):
                continue
            if isinstance(item, ErrorRateFault):
                error_rate = item.value
            elif isinstance(item, LatencyFault):
                latency = item.value if item.value is not None else latency * item.factor
        return error_rate, latency, rps_factor

    # -- queries -------------------------------------------------------------------------------

    def check_size(self, tenant_count: int, start: float, end: float) -> None:
        buckets = max(1, math.ceil((end - start) / self.bucket) + 1)
        if tenant_count * buckets > self.max_points:
            raise QueryTooLarge(
                f"query spans {tenant_count} tenants x {buckets} buckets of {self.bucket:g}s = "
                f"{tenant_count * buckets} points (limit {self.max_points}): "
                "ask for fewer tenants or a shorter interval"
            )

    def query(
        self,
        tenants: Iterable[TenantSeries],
        start: float,
        end: float,
        now: float,
        faults: Sequence[WindowedFault],
        metrics: Sequence[str] = CORE_METRICS,
    ) -> dict[str, dict[str, float | int]]:
        """Per tenant aggregates for [start, end); tenants without any data are left out."""
        result: dict[str, dict[str, float | int]] = {}
        for tenant in tenants:
            values = self.tenant_values(tenant, start, end, now, faults)
            if values is None:
                continue
            result[tenant.id] = {name: values[name] for name in metrics if name in values}
        return result

    def data_until(
        self, tenant: TenantSeries, now: float, faults: Sequence[WindowedFault]
    ) -> float:
        """The latest moment with data for the tenant, given signal delays in force now."""
        delay = self.base_delay
        for fault in faults:
            item = fault.spec
            if (
                isinstance(item, SignalDelayFault)
                and fault.covers(now)
                and item.matches(tenant.id, tenant.labels)
            ):
                delay = max(delay, item.value.total_seconds())
        return now - delay

    def is_silent(
        self, tenant: TenantSeries, moment: float, faults: Sequence[WindowedFault]
    ) -> bool:
        """True when a `metrics_gap` silences the tenant at that moment (a gap with a `version`
        silences only while the tenant runs that version: a crashed version emits nothing)."""
        version = tenant.version_at(moment)
        return any(
            _silences(fault, version, moment)
            for fault in faults
            if isinstance(fault.spec, MetricsGapFault)
            and fault.spec.matches(tenant.id, tenant.labels)
        )

    def flow(
        self,
        tenant: TenantSeries,
        start: float,
        stop: float,
        faults: Sequence[WindowedFault],
    ) -> Iterator[tuple[int, str, float, float, float]]:
        """The traffic of one tenant in [start, stop), in pieces that share a monitoring bucket,
        a version and the faults in force: (bucket index, version, requests, errors, p95 ms).

        Amounts are unrounded, so pieces of adjacent intervals add up to the whole interval's;
        silent stretches (metrics gaps) yield nothing. The monitoring query and the Prometheus
        exposition both sum these pieces, which is why they agree.
        """
        mine = [
            fault
            for fault in faults
            if isinstance(fault.spec, ErrorRateFault | LatencyFault | MetricsGapFault)
            and fault.spec.matches(tenant.id, tenant.labels)
        ]
        edges = {start, stop}
        edges.update(since for since, _ in tenant.timeline if start < since < stop)
        for fault in mine:
            edges.update(edge for edge in (fault.start, fault.end) if start < edge < stop)
        gaps = [fault for fault in mine if isinstance(fault.spec, MetricsGapFault)]
        shaping = [fault for fault in mine if not isinstance(fault.spec, MetricsGapFault)]

        base = self._base(tenant.id)
        per_second = self.traffic.rps * self.tenant_scale(tenant.id)
        noise_requests = self.noise.requests
        noise_errors = self.noise.error_rate
        noise_latency = self.noise.latency
        size = self.bucket
        for low, high in itertools.pairwise(sorted(edges)):
            middle = (low + high) / 2.0
            version = tenant.version_at(middle)
            if any(_silences(gap, version, middle) for gap in gaps):
                continue
            rate, latency, factor = self.behaviour(version, tenant, middle, shaping)
            flow = per_second * factor
            for index in range(math.floor(low / size), math.ceil(high / size)):
                lo = max(low, index * size)
                hi = min(high, (index + 1) * size)
                if hi <= lo:
                    continue
                n_requests, n_errors, n_latency = bucket_noise(base, index)
                amount = flow * (1.0 + noise_requests * n_requests) * (hi - lo)
                yield (
                    index,
                    version,
                    amount,
                    amount * min(1.0, rate * (1.0 + noise_errors * n_errors)),
                    latency * (1.0 + noise_latency * n_latency),
                )

    def tenant_values(
        self,
        tenant: TenantSeries,
        start: float,
        end: float,
        now: float,
        faults: Sequence[WindowedFault],
    ) -> dict[str, float | int] | None:
        """Aggregates of one tenant, or None when the interval holds no data for it."""
        stop = min(end, self.data_until(tenant, now, faults))
        if stop <= start:
            return None
        requests = errors = latency_sum = 0.0
        buckets: set[int] = set()
        for index, _, amount, failed, latency in self.flow(tenant, start, stop, faults):
            errors += failed
            latency_sum += amount * latency
            requests += amount
            buckets.add(index)
        if not buckets:
            return None
        count = round(requests)
        values: dict[str, float | int] = {
            "requests": count,
            "errors": min(count, round(errors)),
            "samples": len(buckets),
        }
        if requests > 0:
            values["latency_p95_ms"] = round(latency_sum / requests, 1)
        if count > 0:
            values["error_rate"] = round(values["errors"] / count, 6)
        return values


def _silences(gap: WindowedFault, version: str, moment: float) -> bool:
    """A metrics gap hides the tenant at this moment (a version-bound gap: while it runs it)."""
    return gap.covers(moment) and (gap.spec.version is None or gap.spec.version == version)
