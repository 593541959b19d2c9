"""The simulated fleet: tenants, their operations, idempotency, records and faults, in memory.

Everything runs on one asyncio event loop: state changes happen between awaits, so the only
concurrency to handle is operations that overlap in time (in flight), which is what a real
platform has to handle too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from powerx_upgrade.sandbox.contract import (
    AuditRequest,
    MonitoringQuery,
    NotifyRequest,
    RollbackRequest,
    SubscribeRequest,
    UpgradeRequest,
)
from powerx_upgrade.sandbox.exposition import Exposition
from powerx_upgrade.sandbox.faults import (
    ActiveFault,
    AuditOutageFault,
    DeployFailureFault,
    ErrorRateFault,
    HttpErrorFault,
    LatencyFault,
    MetricsGapFault,
    SignalDelayFault,
    TimeoutFault,
    fires,
)
from powerx_upgrade.sandbox.metrics import (
    CORE_METRICS,
    MetricsEngine,
    QueryTooLarge,
    TenantSeries,
    WindowedFault,
)
from powerx_upgrade.sandbox.scenario import Scenario, TenantSeed, check_fault_targets
from powerx_upgrade.sandbox.seeded import key_hash, symmetric

EVENTS_RETAINED = 200_000
OPERATIONS_RETAINED_PER_TENANT = 50
_METRIC_FAULTS = (ErrorRateFault, LatencyFault, MetricsGapFault, SignalDelayFault)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def iso(moment_ms: float | None) -> str | None:
    """Epoch milliseconds as ISO 8601 UTC text with a `Z` (None and infinities stay None)."""
    if moment_ms is None or moment_ms in (float("inf"), float("-inf")):
        return None
    text = (_EPOCH + timedelta(milliseconds=int(moment_ms))).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def to_ms(moment: datetime) -> int:
    """An aware datetime as epoch milliseconds (sub-millisecond parts dropped)."""
    return (moment - _EPOCH) // _MS


def fingerprint(model: BaseModel) -> str:
    """Canonical digest of a request body, to tell a replay from a reuse of its key."""
    text = json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# -- errors the HTTP layer maps to status codes --------------------------------------------------


class SandboxError(Exception):
    """A request the platform refuses; `status` and `code` become the HTTP answer."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class UnknownPlugin(SandboxError):
    status, code = 404, "unknown_plugin"


class UnknownTenant(SandboxError):
    status, code = 404, "unknown_tenant"


class OperationInFlight(SandboxError):
    status, code = 409, "operation_in_flight"


class RollbackUnavailable(SandboxError):
    status, code = 409, "rollback_unavailable"


class IdempotencyMismatch(SandboxError):
    status, code = 422, "idempotency_mismatch"


class InvalidQuery(SandboxError):
    status, code = 422, "invalid_query"


class InvalidFault(SandboxError):
    status, code = 422, "invalid_fault"


class InjectedHttpError(SandboxError):
    code = "injected_fault"

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message, headers)
        self.status = status


class AuditUnavailable(SandboxError):
    status, code = 503, "audit_unavailable"


# -- tenants ------------------------------------------------------------------------------------


@dataclass
class TenantRecord:
    """One tenant's installation, with what the sandbox needs to simulate it."""

    id: str
    labels: dict[str, str]
    version: str
    config_version: str
    holdings: list[dict[str, Any]]
    previous_version: str | None = None
    previous_config_version: str | None = None
    state: str = "ready"
    last_error: str | None = None
    updated_at: int | None = None  # epoch ms
    in_flight: str | None = None
    config_seq: int = 1
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (since epoch ms, version)
    operations: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=OPERATIONS_RETAINED_PER_TENANT)
    )
    attempts: Counter[tuple[str, str]] = field(default_factory=Counter)
    series: TenantSeries | None = None

    def view(self) -> dict[str, Any]:
        """The contract's Tenant shape (plain JSON values)."""
        return {
            "id": self.id,
            "labels": self.labels,
            "version": self.version,
            "config_version": self.config_version,
            "previous_version": self.previous_version,
            "previous_config_version": self.previous_config_version,
            "state": self.state,
            "resources": [dict(holding) for holding in self.holdings],
            "last_error": self.last_error,
            "updated_at": iso(self.updated_at),
        }

    def sandbox_view(self) -> dict[str, Any]:
        view = self.view()
        view["in_flight"] = self.in_flight
        view["history"] = [
            {"since": iso(since), "version": version} for since, version in self.timeline
        ]
        view["operations"] = list(self.operations)
        return view

    def metric_series(self) -> TenantSeries:
        if self.series is None:
            timeline = tuple((since / 1000.0, version) for since, version in self.timeline)
            self.series = TenantSeries(self.id, dict(self.labels), timeline)
        return self.series

    def install(self, version: str, moment: int) -> None:
        self.version = version
        self.timeline.append((moment, version))
        self.series = None


@dataclass
class _Idempotent:
    fingerprint: str
    task: asyncio.Task[dict[str, Any]]


@dataclass
class RequestFaults:
    """What the request faults decided for one call."""

    timeout: TimeoutFault | None = None


class SandboxState:
    """The whole simulated platform for one scenario."""

    def __init__(
        self,
        scenario: Scenario,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ):
        self.scenario = scenario
        self.plugin = scenario.plugin
        self.seed = scenario.seed
        self.clock = clock
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
        return int(self.clock() * 1000)

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

    def _holding(self, version: str, role: str) -> dict[str, Any]:
        return {"version": version, "role": role, "amounts": self.scenario.resources_for(version)}

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
            if not fault.active_at(now, self.first_upgrade_at):
                continue
            if not fires(self.seed, fault.id, spec.rate, endpoint, *identity, attempt):
                continue
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

    # -- upgrade and rollback ------------------------------------------------------------------

    async def upgrade(self, record: TenantRecord, request: UpgradeRequest) -> tuple[dict, bool]:
        """Install a version on a tenant: (answer, replayed)."""
        return await self._operate(
            record,
            "upgrade",
            request.idempotency_key,
            fingerprint(request),
            lambda op_id: self._run_upgrade(record, request, op_id),
        )

    async def rollback(self, record: TenantRecord, request: RollbackRequest) -> tuple[dict, bool]:
        """Return a tenant to its previous version (and config): (answer, replayed)."""
        return await self._operate(
            record,
            "rollback",
            request.idempotency_key,
            fingerprint(request),
            lambda op_id: self._run_rollback(record, request, op_id),
        )

    async def _operate(
        self,
        record: TenantRecord,
        kind: str,
        key: str,
        digest: str,
        runner: Callable[[str], Awaitable[dict[str, Any]]],
    ) -> tuple[dict[str, Any], bool]:
        store_key = (record.id, kind, key)
        known = self._idempotent.get(store_key)
        if known is not None:
            if known.fingerprint != digest:
                raise IdempotencyMismatch(
                    f"idempotency key {key!r} was already used for a different {kind} "
                    f"of tenant {record.id!r}"
                )
            return dict(await asyncio.shield(known.task)), True
        if record.in_flight is not None:
            raise OperationInFlight(
                f"tenant {record.id!r} has operation {record.in_flight} in flight; retry later",
                {"Retry-After": "1"},
            )
        self._op_seq += 1
        op_id = f"op-{self._op_seq:06d}"
        record.in_flight = op_id  # before any await: closes the window for a second operation
        # A task, so a client that disconnects cannot leave the tenant half-changed.
        task = asyncio.ensure_future(runner(op_id))
        self._idempotent[store_key] = _Idempotent(digest, task)
        try:
            return dict(await asyncio.shield(task)), False
        except BaseException:
            if task.done() and (task.cancelled() or task.exception() is not None):
                self._idempotent.pop(store_key, None)
            raise

    def _latency(self, kind: str, tenant_id: str, key: str) -> float:
        spec = self.scenario.latency
        base = spec.upgrade_ms if kind == "upgrade" else spec.rollback_ms
        jitter = spec.jitter * symmetric(key_hash(self.seed, "latency", kind, tenant_id, key))
        return max(0.0, base * (1.0 + jitter)) / 1000.0

    def _deploy_failure(self, kind: str, record: TenantRecord, version: str) -> str | None:
        record.attempts[(kind, version)] += 1
        attempt = record.attempts[(kind, version)]
        now = self.now_ms()
        for fault in self.faults:
            spec = fault.spec
            if not isinstance(spec, DeployFailureFault) or spec.operation != kind:
                continue
            if spec.version is not None and spec.version != version:
                continue
            if not spec.matches(record.id, record.labels):
                continue
            if not fault.active_at(now, self.first_upgrade_at):
                continue
            if fires(self.seed, fault.id, spec.rate, record.id, kind, version, attempt):
                return spec.message
        return None

    def _operation(
        self,
        op_id: str,
        kind: str,
        key: str,
        record: TenantRecord,
        before: tuple[str, str],
        started: float,
        *,
        status: str = "succeeded",
        noop: bool = False,
        freed: Sequence[dict[str, Any]] = (),
        error: str | None = None,
        target: str | None = None,
    ) -> dict[str, Any]:
        finished = self.now_ms()
        record.updated_at = finished
        operation = {
            "id": op_id,
            "kind": kind,
            "status": status,
            "noop": noop,
            "idempotency_key": key,
            "from_version": before[0],
            "to_version": target or record.version,
            "config_version_before": before[1],
            "config_version_after": record.config_version,
            "freed": [dict(holding) for holding in freed],
            "error": error,
            "started_at": iso(started),
            "finished_at": iso(finished),
        }
        record.operations.append(operation)
        return {**record.view(), "operation": operation}

    async def _run_upgrade(
        self, record: TenantRecord, request: UpgradeRequest, op_id: str
    ) -> dict[str, Any]:
        started = self.now_ms()
        before = (record.version, record.config_version)
        key, target = request.idempotency_key, request.version
        try:
            if target == record.version:
                return self._operation(op_id, "upgrade", key, record, before, started, noop=True)
            record.state = "upgrading"
            await self.sleep(self._latency("upgrade", record.id, key))
            failure = self._deploy_failure("upgrade", record, target)
            if failure is not None:
                record.state, record.last_error = "failed", failure
                return self._operation(
                    op_id, "upgrade", key, record, before, started,
                    status="failed", error=failure, target=target,
                )  # fmt: skip
            freed = [h for h in record.holdings if h["role"] == "standby"]
            record.holdings = [
                {**h, "role": "standby"} for h in record.holdings if h["role"] == "active"
            ] + [self._holding(target, "active")]
            record.previous_version, record.previous_config_version = before
            record.config_seq += 1
            record.config_version = f"cfg-{record.config_seq}"
            record.install(target, self.now_ms())
            record.state, record.last_error = "ready", None
            return self._operation(op_id, "upgrade", key, record, before, started, freed=freed)
        finally:
            record.in_flight = None
            if record.state == "upgrading":  # cancelled mid-way: nothing was changed
                record.state = "ready"

    async def _run_rollback(
        self, record: TenantRecord, request: RollbackRequest, op_id: str
    ) -> dict[str, Any]:
        started = self.now_ms()
        before = (record.version, record.config_version)
        key = request.idempotency_key
        target = request.to_version or record.previous_version
        try:
            if target is None:
                raise RollbackUnavailable(
                    f"tenant {record.id!r} has no previous version to roll back to"
                )
            if target == record.version:
                if record.state == "failed":
                    record.state, record.last_error = "ready", None
                return self._operation(op_id, "rollback", key, record, before, started, noop=True)
            if target != record.previous_version:
                raise RollbackUnavailable(
                    f"cannot roll tenant {record.id!r} back to {target}: it runs "
                    f"{record.version} and its previous version is {record.previous_version}"
                )
            record.state = "rolling_back"
            await self.sleep(self._latency("rollback", record.id, key))
            failure = self._deploy_failure("rollback", record, target)
            if failure is not None:
                record.state, record.last_error = "failed", failure
                return self._operation(
                    op_id, "rollback", key, record, before, started,
                    status="failed", error=failure, target=target,
                )  # fmt: skip
            freed = [h for h in record.holdings if h["role"] == "active"]
            record.holdings = [
                {**h, "role": "active"} for h in record.holdings if h["role"] == "standby"
            ] or [self._holding(target, "active")]
            if request.restore_config and record.previous_config_version is not None:
                record.config_version = record.previous_config_version
            record.previous_version = record.previous_config_version = None
            record.install(target, self.now_ms())
            record.state, record.last_error = "ready", None
            return self._operation(op_id, "rollback", key, record, before, started, freed=freed)
        finally:
            record.in_flight = None
            if record.state == "rolling_back":
                record.state = "ready"

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
