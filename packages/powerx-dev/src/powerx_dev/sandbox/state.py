"""The simulated fleet: tenants, request faults, monitoring, records and faults, in memory.

Everything runs on one asyncio event loop: state changes happen between awaits, so the only
concurrency to handle is operations that overlap in time (in flight), which is what a real
platform has to handle too.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from powerx_dev.sandbox.contract import (
    AuditRequest,
    MonitoringQuery,
    NotifyRequest,
    SubscribeRequest,
)
from powerx_dev.sandbox.encoding import fingerprint, iso, to_ms
from powerx_dev.sandbox.errors import (
    AuditUnavailable,
    IdempotencyMismatch,
    InjectedHttpError,
    InvalidFault,
    InvalidQuery,
    UnknownPlugin,
    UnknownTenant,
)
from powerx_dev.sandbox.exposition import Exposition
from powerx_dev.sandbox.faults import (
    ActiveFault,
    AuditOutageFault,
    ErrorRateFault,
    HttpErrorFault,
    LatencyFault,
    MetricsGapFault,
    SignalDelayFault,
    TimeoutFault,
    fires,
)
from powerx_dev.sandbox.metrics import (
    CORE_METRICS,
    MetricsEngine,
    QueryTooLarge,
    TenantSeries,
    WindowedFault,
)
from powerx_dev.sandbox.operations import TenantOperations, _Idempotent
from powerx_dev.sandbox.scenario import Scenario, TenantSeed, check_fault_targets
from powerx_dev.sandbox.tenants import TenantRecord

EVENTS_RETAINED = 200_000
_METRIC_FAULTS = (ErrorRateFault, LatencyFault, MetricsGapFault, SignalDelayFault)


@dataclass
class RequestFaults:
    """What the request faults decided for one call."""

    timeout: TimeoutFault | None = None


class SandboxState(TenantOperations):
    """The whole simulated platform for one scenario (upgrade and rollback: `TenantOperations`)."""

    def __init__(
        self,
        scenario: Scenario,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock_offset_ms: int = 0,
    ):
        self.scenario = scenario
        self.plugin = scenario.plugin
        self.seed = scenario.seed
        self.clock = clock
        self.clock_offset_ms = clock_offset_ms
        """How far the platform's clock is ahead of the host's (negative: behind): every time
        it publishes or judges by, as a real platform with a skewed clock would."""
        self.sleep = sleep
        self.engine = MetricsEngine(scenario)
        self.exposition = Exposition(self.engine, scenario.plugin, started=self.now_ms() / 1000.0)
        self.tenants: dict[str, TenantRecord] = {}
        self._seeds: list[TenantSeed] = scenario.build_tenants()
        for seed in self._seeds:
            self.tenants[seed.id] = TenantRecord(
                id=seed.id,
                labels=seed.labels,
                version=seed.version,
                config_version=seed.config_version,
                holdings=[self._holding(seed.version, "active")],
                timeline=[(float("-inf"), seed.version)],
            )
        self.first_upgrade_at: int | None = None  # epoch ms
        self.faults: list[ActiveFault] = [
            ActiveFault(id=f"f-{n}", spec=spec, source="scenario")
            for n, spec in enumerate(scenario.faults, start=1)
        ]
        self._fault_seq = len(self.faults)
        self._op_seq = 0
        self._sub_seq = 0
        self._idempotent: dict[tuple[str, str, str], _Idempotent] = {}
        self._request_attempts: Counter[tuple[Any, ...]] = Counter()
        self.audit: dict[str, tuple[str, dict[str, Any]]] = {}
        self.notifications: dict[str, tuple[str, dict[str, Any]]] = {}
        self.subscriptions: dict[str, tuple[str, dict[str, Any]]] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_RETAINED)
        self._event_seq = 0

    def now_ms(self) -> int:
        """The sandbox clock in whole epoch milliseconds: every published time is exact."""
        return int(self.clock() * 1000) + self.clock_offset_ms

    # -- lookups -------------------------------------------------------------------------------

    def check_plugin(self, plugin: str) -> None:
        if plugin != self.plugin:
            raise UnknownPlugin(f"unknown plugin {plugin!r} (this platform serves {self.plugin!r})")

    def tenant(self, plugin: str, tenant_id: str) -> TenantRecord:
        self.check_plugin(plugin)
        record = self.tenants.get(tenant_id)
        if record is None:
            raise UnknownTenant(f"unknown tenant {tenant_id!r} for plugin {plugin!r}")
        return record

    def list_tenants(
        self, plugin: str, labels: dict[str, str] | None = None, version: str | None = None
    ) -> list[dict[str, Any]]:
        self.check_plugin(plugin)
        return [
            record.view()
            for record in self.tenants.values()
            if (version is None or record.version == version)
            and all(record.labels.get(k) == v for k, v in (labels or {}).items())
        ]

    def resource_totals(self) -> dict[str, dict[str, dict[str, int]]]:
        totals: dict[str, dict[str, dict[str, int]]] = {}
        for record in self.tenants.values():
            for holding in record.holdings:
                bucket = totals.setdefault(holding["version"], {}).setdefault(holding["role"], {})
                for name, amount in holding["amounts"].items():
                    bucket[name] = bucket.get(name, 0) + amount
        return totals

    # -- request faults ------------------------------------------------------------------------

    def note_upgrade_request(self) -> None:
        """Scenario fault windows count from the first upgrade request received."""
        if self.first_upgrade_at is None:
            self.first_upgrade_at = self.now_ms()

    def request_faults(self, endpoint: str, *identity: object) -> RequestFaults:
        """Roll the http_error and timeout faults for one call; raise for an injected error.

        Each (endpoint, identity) counts its attempts, so a retry gets a fresh, still seeded draw
        and concurrency does not change who is hit.
        """
        self._request_attempts[(endpoint, *identity)] += 1
        attempt = self._request_attempts[(endpoint, *identity)]
        now = self.now_ms()
        decision = RequestFaults()
        for fault in self.faults:
            spec = fault.spec
            if not isinstance(spec, HttpErrorFault | TimeoutFault) or spec.endpoint != endpoint:
                continue
            if not fault.active_at(now, self.first_upgrade_at) or fault.spent():
                continue
            if not fires(self.seed, fault.id, spec.rate, endpoint, *identity, attempt):
                continue
            fault.hits[""] += 1
            if isinstance(spec, HttpErrorFault):
                headers = {"Retry-After": "1"} if spec.status in (429, 503) else {}
                raise InjectedHttpError(
                    spec.status, f"injected http_error fault {fault.id} on {endpoint}", headers
                )
            if decision.timeout is None:
                decision.timeout = spec
        return decision

    def check_audit_outage(self) -> None:
        now = self.now_ms()
        for fault in self.faults:
            if not isinstance(fault.spec, AuditOutageFault):
                continue
            window = fault.window(self.first_upgrade_at)
            if window is not None and window[0] <= now < window[1]:
                left = window[1] - now
                retry = max(1, int(-(-left // 1000))) if left != float("inf") else 60
                raise AuditUnavailable(
                    f"audit store unavailable (fault {fault.id})", {"Retry-After": str(retry)}
                )

    # -- monitoring ----------------------------------------------------------------------------

    def metric_faults(self) -> list[WindowedFault]:
        """Faults that shape metrics, with their absolute windows (unanchored ones left out)."""
        windowed = []
        for fault in self.faults:
            if not isinstance(fault.spec, _METRIC_FAULTS):
                continue
            window = fault.window(self.first_upgrade_at)
            if window is not None:
                windowed.append(WindowedFault(fault.spec, window[0] / 1000.0, window[1] / 1000.0))
        return windowed

    def prepare_query(
        self, query: MonitoringQuery
    ) -> tuple[list[TenantSeries], float, float, float, list[WindowedFault], list[str]]:
        """Check a query and snapshot what computing it needs (so it can run off the loop)."""
        self.check_plugin(query.plugin)
        if query.tenants is None:
            ids = list(self.tenants)
        else:
            ids = list(dict.fromkeys(query.tenants))
            unknown = [tenant_id for tenant_id in ids if tenant_id not in self.tenants]
            if unknown:
                shown = ", ".join(repr(t) for t in unknown[:10])
                more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
                raise UnknownTenant(f"unknown tenants for plugin {query.plugin!r}: {shown}{more}")
        start_ms, end_ms = to_ms(query.start), to_ms(query.end)
        start, end = start_ms / 1000.0, end_ms / 1000.0
        if end <= start:
            raise InvalidQuery("`end` must be after `start`")
        try:
            self.engine.check_size(len(ids), start, end)
        except QueryTooLarge as exc:
            raise InvalidQuery(str(exc)) from exc
        series = [self.tenants[tenant_id].metric_series() for tenant_id in ids]
        metrics = list(query.metrics or CORE_METRICS)
        return series, start, end, self.now_ms() / 1000.0, self.metric_faults(), metrics

    def prepare_scrape(self) -> tuple[list[TenantSeries], float, list[WindowedFault]]:
        """Snapshot what a `/metrics` render needs (so it can run off the loop)."""
        series = [record.metric_series() for record in self.tenants.values()]
        return series, self.now_ms() / 1000.0, self.metric_faults()

    # -- notify, audit, subscriptions ----------------------------------------------------------

    def _record(
        self, store: dict[str, tuple[str, dict[str, Any]]], request: BaseModel, record_id: str
    ) -> tuple[dict[str, Any], bool]:
        digest = fingerprint(request)
        known = store.get(record_id)
        if known is not None:
            if known[0] != digest:
                raise IdempotencyMismatch(
                    f"id {record_id!r} was already recorded with other content"
                )
            return known[1], True
        record = {
            **request.model_dump(mode="json"),
            "id": record_id,
            "received_at": iso(self.now_ms()),
        }
        store[record_id] = (digest, record)
        return record, False

    def record_notification(self, request: NotifyRequest) -> tuple[dict[str, Any], bool]:
        return self._record(self.notifications, request, request.id)

    def record_audit(self, request: AuditRequest) -> tuple[dict[str, Any], bool]:
        return self._record(self.audit, request, request.id)

    def subscribe(self, request: SubscribeRequest) -> tuple[dict[str, Any], bool]:
        self.check_plugin(request.plugin)
        unknown = [t for t in request.tenants or [] if t not in self.tenants]
        if unknown:
            raise UnknownTenant(f"unknown tenants: {', '.join(repr(t) for t in unknown[:10])}")
        if request.id is None:
            self._sub_seq += 1
            record_id = f"sub-{self._sub_seq:06d}"
        else:
            record_id = request.id
        record, duplicate = self._record(self.subscriptions, request, record_id)
        if not duplicate:
            record["created_at"] = record.pop("received_at")
        return record, duplicate

    # -- faults at runtime ---------------------------------------------------------------------

    def inject(self, specs: Sequence[Any]) -> list[ActiveFault]:
        problems: list[dict[str, Any]] = []
        for index, spec in enumerate(specs):
            for loc, message in check_fault_targets(spec, self._seeds, ("faults", index)):
                problems.append({"loc": ["body", *loc], "msg": message, "type": "value_error"})
        if problems:
            error = InvalidFault("; ".join(f"{p['loc']}: {p['msg']}" for p in problems))
            error.details = problems  # type: ignore[attr-defined]
            raise error
        now = self.now_ms()
        added = []
        for spec in specs:
            self._fault_seq += 1
            fault = ActiveFault(f"f-{self._fault_seq}", spec, "runtime", injected_at=now)
            self.faults.append(fault)
            added.append(fault)
        return added

    def remove_fault(self, fault_id: str) -> bool:
        before = len(self.faults)
        self.faults = [fault for fault in self.faults if fault.id != fault_id]
        return len(self.faults) != before

    def fault_views(self) -> list[dict[str, Any]]:
        now = self.now_ms()
        views = []
        for fault in self.faults:
            window = fault.window(self.first_upgrade_at)
            shown = None
            if window is not None:
                shown = [
                    iso(window[0]),
                    iso(window[1]),
                ]
            views.append(
                {
                    "id": fault.id,
                    "source": fault.source,
                    "active_now": window is not None and window[0] <= now < window[1],
                    "window": shown,
                    "spec": fault.spec.model_dump(mode="json", exclude_none=True),
                }
            )
        return views

    # -- events --------------------------------------------------------------------------------

    def record_event(self, event: dict[str, Any]) -> None:
        self._event_seq += 1
        self.events.append({"seq": self._event_seq, **event})

    @property
    def events_dropped(self) -> int:
        return self._event_seq - len(self.events)
