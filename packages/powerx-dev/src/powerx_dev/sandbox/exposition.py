"""The sandbox's `GET /metrics`: its simulated traffic as Prometheus counters and a latency
histogram per (tenant, plugin, version), cumulative since the sandbox started.

The numbers are the metric engine's own (`MetricsEngine.flow`), accumulated unrounded as time
passes, so `increase(...)` over an interval in Prometheus matches what
`POST /internal/monitoring/query` answers for that interval. Each scrape only adds the traffic
since the previous one; a tenant that a `metrics_gap` silences at the moment of the scrape is
left out of it, so its series go stale in Prometheus as a crashed exporter's would.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

from powerx_dev.sandbox.metrics import MetricsEngine, TenantSeries, WindowedFault

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

REQUESTS = "powerx_plugin_requests_total"
ERRORS = "powerx_plugin_errors_total"
DURATION = "powerx_plugin_request_duration_seconds"

BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3,
    0.4, 0.5, 0.6, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Upper bounds (seconds) of the latency histogram; `+Inf` is added. Dense from 100 ms to 2 s,
where `histogram_quantile(0.95, ...)` then lands within 5 % of the p95 the sandbox simulates
(within 10 % from 50 ms to 2.5 s): its linear interpolation inside a bucket is the error."""

LATENCY_SIGMA = 0.5
"""Request latencies of one piece of traffic are log-normal with this shape, scaled so that
their 95th percentile is the simulated p95."""

_Z95 = 1.6448536269514722  # the standard normal's 95th percentile
_SCALED_BOUNDS = tuple(math.log(bound) / (LATENCY_SIGMA * math.sqrt(2.0)) for bound in BUCKETS)
_MEAN_OVER_P95 = math.exp(-_Z95 * LATENCY_SIGMA + LATENCY_SIGMA**2 / 2.0)

_SHIFT = math.log(math.exp(-_Z95 * LATENCY_SIGMA) / 1000.0) / (LATENCY_SIGMA * math.sqrt(2.0))
_SCALE = 1.0 / (LATENCY_SIGMA * math.sqrt(2.0))


def latency_shares(p95_ms: float) -> list[float]:
    """Share of requests answered within each bound of BUCKETS when the p95 is `p95_ms`."""
    shift = _SHIFT + math.log(p95_ms) * _SCALE  # log(median in seconds), scaled
    return [0.5 + 0.5 * math.erf(scaled - shift) for scaled in _SCALED_BOUNDS]


class _Totals:
    """What one (tenant, version) series has counted since the sandbox started, unrounded."""

    __slots__ = ("errors", "requests", "seconds", "within")

    def __init__(self) -> None:
        self.requests = 0.0
        self.errors = 0.0
        self.seconds = 0.0  # latency sum
        self.within = [0.0] * len(BUCKETS)  # requests answered within each bound

    def add(self, amount: float, failed: float, p95_ms: float) -> None:
        self.requests += amount
        self.errors += failed
        self.seconds += amount * p95_ms / 1000.0 * _MEAN_OVER_P95
        shift = _SHIFT + math.log(p95_ms) * _SCALE
        half = 0.5 * amount
        self.within = [
            count + half + half * math.erf(scaled - shift)
            for count, scaled in zip(self.within, _SCALED_BOUNDS, strict=True)
        ]


# One str.format per series and family: 25 values per histogram, labels given once as {0}.
_REQUESTS_LINE = REQUESTS + "{{{0}}} {1}\n"
_ERRORS_LINE = ERRORS + "{{{0}}} {1}\n"
_HISTOGRAM_LINES = (
    "".join(
        f'{DURATION}_bucket{{{{{{0}},le="{bound:g}"}}}} {{{position}}}\n'
        for position, bound in enumerate(BUCKETS, start=1)
    )
    + f'{DURATION}_bucket{{{{{{0}},le="+Inf"}}}} {{{len(BUCKETS) + 1}}}\n'
    + f"{DURATION}_sum{{{{{{0}}}}}} {{{len(BUCKETS) + 2}:.3f}}\n"
    + f"{DURATION}_count{{{{{{0}}}}}} {{{len(BUCKETS) + 1}}}\n"
)


def escape(value: str) -> str:
    """A label value as the text format wants it (backslash, quote and newline escaped)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Exposition:
    """Cumulative per-series totals of one sandbox state, advanced at each scrape.

    Totals only ever grow (pieces of traffic are added, never recomputed), so the counters are
    monotonic even when a fault is removed later; a `POST /sandbox/reset` builds a new state and
    with it a new Exposition, which Prometheus sees as a counter reset.

    :param engine: the state's metric engine.
    :param plugin: the `plugin` label of every series.
    :param started: epoch seconds the counters count from.
    """

    def __init__(self, engine: MetricsEngine, plugin: str, started: float):
        self.engine = engine
        self.plugin = plugin
        self.started = started
        self._lock = threading.Lock()  # renders run in worker threads; one at a time
        self._counted_to: dict[str, float] = {}
        self._totals: dict[str, dict[str, _Totals]] = {}
        self._labels: dict[tuple[str, str], str] = {}

    def render(
        self, tenants: Sequence[TenantSeries], now: float, faults: Sequence[WindowedFault]
    ) -> str:
        """The text exposition at `now` for these tenants (a snapshot taken on the event loop)."""
        requests: list[str] = []
        errors: list[str] = []
        histogram: list[str] = []
        with self._lock:
            for tenant in tenants:
                self._advance(tenant, now, faults)
                if self.engine.is_silent(tenant, now, faults):
                    continue
                for version, totals in self._totals.get(tenant.id, {}).items():
                    labels = self._label_text(tenant.id, version)
                    count = int(totals.requests)
                    requests.append(_REQUESTS_LINE.format(labels, count))
                    errors.append(_ERRORS_LINE.format(labels, int(totals.errors)))
                    histogram.append(
                        _HISTOGRAM_LINES.format(
                            labels, *map(int, totals.within), count, totals.seconds
                        )
                    )
        return "".join(
            [
                f"# HELP {REQUESTS} Requests the plugin served since the sandbox started.\n",
                f"# TYPE {REQUESTS} counter\n",
                *requests,
                f"# HELP {ERRORS} Requests the plugin failed since the sandbox started.\n",
                f"# TYPE {ERRORS} counter\n",
                *errors,
                f"# HELP {DURATION} Time the plugin took to answer a request.\n",
                f"# TYPE {DURATION} histogram\n",
                *histogram,
            ]
        )

    def _advance(self, tenant: TenantSeries, now: float, faults: Sequence[WindowedFault]) -> None:
        since = self._counted_to.get(tenant.id, self.started)
        if now <= since:  # a render that was overtaken by a later one: nothing new
            return
        series = self._totals.setdefault(tenant.id, {})
        for _, version, amount, failed, p95_ms in self.engine.flow(tenant, since, now, faults):
            totals = series.get(version)
            if totals is None:
                totals = series[version] = _Totals()
            totals.add(amount, failed, p95_ms)
        self._counted_to[tenant.id] = now

    def _label_text(self, tenant_id: str, version: str) -> str:
        text = self._labels.get((tenant_id, version))
        if text is None:
            text = (
                f'tenant="{escape(tenant_id)}",plugin="{escape(self.plugin)}",'
                f'version="{escape(version)}"'
            )
            self._labels[(tenant_id, version)] = text
        return text
