"""The platform contract as pydantic models: request and response bodies of every endpoint.

These models are the OpenAPI document a real PowerX deployment implements
(docs/platform-contract.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from powerx_dev.sandbox.faults import Fault, JsonObject, Version

IdempotencyKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="client-chosen key; a replay with the same key returns the first answer",
        examples=["run-2026-05-02T02:00:00Z:batch-1:t-0001:upgrade"],
    ),
]
RecordId = Annotated[
    str,
    Field(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$", examples=["evt-0001"]),
]
MetricName = Literal["requests", "errors", "latency_p95_ms", "samples", "error_rate"]
TenantState = Literal["ready", "upgrading", "rolling_back", "failed"]


class _Request(BaseModel):
    # Unknown fields are refused: a misspelt field must not be silently ignored by a release tool.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ErrorBody(BaseModel):
    """Every non-2xx answer."""

    error: str = Field(description="stable machine-readable code", examples=["unknown_tenant"])
    message: str = Field(description="human-readable explanation")
    details: list[dict[str, Any]] | None = Field(
        default=None, description="validation problems: [{loc, msg, type}], the first 20"
    )
    details_total: int | None = Field(
        default=None, description="how many validation problems there were in all"
    )


# -- tenants ----------------------------------------------------------------------------------


class ResourceHolding(BaseModel):
    """Resources one installed version holds on a tenant."""

    version: str
    role: Literal["active", "standby"] = Field(
        description="active: serving; standby: the previous version, kept for rollback"
    )
    amounts: dict[str, int] = Field(examples=[{"memory_mb": 256, "workers": 1}])


class Tenant(BaseModel):
    """A tenant's installation of the plugin."""

    id: str = Field(examples=["t-0001"])
    labels: dict[str, str] = Field(examples=[{"tier": "gold"}])
    version: str = Field(description="installed version", examples=["2.3.1"])
    config_version: str = Field(examples=["cfg-1"])
    previous_version: str | None = Field(
        default=None, description="version a rollback returns to (null: nothing to roll back)"
    )
    previous_config_version: str | None = None
    state: TenantState
    resources: list[ResourceHolding]
    last_error: str | None = None
    updated_at: datetime | None = None


class TenantList(BaseModel):
    """`GET /internal/plugins/{plugin}/tenants`."""

    plugin: str
    tenants: list[Tenant]


class Artifact(_Request):
    """The signed build to install."""

    uri: str = Field(min_length=1, max_length=2048, examples=["s3://releases/crm-sync-2.4.0.tgz"])
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="hex digest of the artifact")
    signature: str | None = Field(default=None, max_length=8192)


class UpgradeRequest(_Request):
    """`POST /internal/plugins/{plugin}/tenants/{tenant}/upgrade`."""

    version: Version
    artifact: Artifact
    idempotency_key: IdempotencyKey


class RollbackRequest(_Request):
    """`POST /internal/plugins/{plugin}/tenants/{tenant}/rollback`."""

    to_version: Version | None = Field(
        default=None, description="must be the tenant's previous_version (default) or its current"
    )
    restore_config: bool = Field(default=True, description="also restore the previous config")
    idempotency_key: IdempotencyKey


class Operation(BaseModel):
    """What an upgrade or rollback did."""

    id: str = Field(examples=["op-000001"])
    kind: Literal["upgrade", "rollback"]
    status: Literal["succeeded", "failed"]
    noop: bool = Field(description="true when the tenant was already on the target version")
    idempotency_key: str
    from_version: str
    to_version: str
    config_version_before: str
    config_version_after: str
    freed: list[ResourceHolding] = Field(description="resources released by this operation")
    error: str | None = None
    started_at: datetime
    finished_at: datetime


class OperationResult(Tenant):
    """Answer of upgrade and rollback: the tenant after the operation, plus the operation."""

    operation: Operation


# -- monitoring -------------------------------------------------------------------------------


class MonitoringQuery(_Request):
    """`POST /internal/monitoring/query`."""

    plugin: str
    tenants: list[str] | None = Field(
        default=None, max_length=100_000, description="tenant ids; all tenants when omitted"
    )
    metrics: list[MetricName] | None = Field(
        default=None, description="default: requests, errors, latency_p95_ms, samples"
    )
    start: AwareDatetime = Field(examples=["2026-05-02T02:00:00Z"])
    end: AwareDatetime = Field(examples=["2026-05-02T02:10:00Z"])


class TenantMetrics(BaseModel):
    """Aggregates of one tenant over the interval; absent metrics had no data."""

    model_config = ConfigDict(extra="forbid")

    requests: int | None = None
    errors: int | None = None
    latency_p95_ms: float | None = None
    samples: int | None = Field(default=None, description="monitoring buckets with data")
    error_rate: float | None = None


class MonitoringResult(BaseModel):
    """Answer of `POST /internal/monitoring/query`."""

    plugin: str
    start: datetime
    end: datetime
    bucket_seconds: float
    metrics: list[MetricName]
    tenants: dict[str, TenantMetrics] = Field(description="only tenants with data")
    no_data: list[str] = Field(description="asked-for tenants without any data in the interval")


class SubscribeRequest(_Request):
    """`POST /internal/monitoring/subscribe`: ask monitoring to watch a rollout."""

    id: RecordId | None = Field(default=None, description="makes the call idempotent")
    plugin: str
    tenants: list[str] | None = None
    metrics: list[MetricName] = Field(default_factory=lambda: ["requests", "errors"])
    run_id: str | None = None
    callback_url: str | None = Field(default=None, max_length=2048)
    context: JsonObject = Field(default_factory=dict)


class Subscription(SubscribeRequest):
    """A recorded subscription."""

    model_config = ConfigDict(extra="forbid")

    id: str
    created_at: datetime


# -- notify and audit -------------------------------------------------------------------------


class NotifyRequest(_Request):
    """`POST /internal/notify/version`."""

    id: RecordId
    event: str = Field(min_length=1, max_length=200, examples=["plugin.version.gray.alert"])
    severity: Literal["info", "warning", "critical"] = "info"
    plugin: str | None = None
    version: str | None = None
    run_id: str | None = None
    title: str = Field(default="", max_length=1000)
    message: str = Field(default="", max_length=100_000)
    channels: list[str] = Field(default_factory=list)
    context: JsonObject = Field(default_factory=dict)


class AuditRequest(_Request):
    """`POST /internal/audit/version`."""

    id: RecordId
    actor: str = Field(min_length=1, max_length=200, examples=["release-manager@example.com"])
    action: str = Field(min_length=1, max_length=200, examples=["upgrade.batch.started"])
    at: AwareDatetime | None = Field(default=None, description="when it happened (client clock)")
    plugin: str | None = None
    version: str | None = None
    run_id: str | None = None
    tenants: list[str] = Field(default_factory=list)
    reason: str | None = Field(default=None, max_length=10_000)
    details: JsonObject = Field(default_factory=dict)


class Recorded(BaseModel):
    """Answer of notify, audit and subscribe: 201 when new, 200 when the id was already recorded."""

    id: str
    received_at: datetime
    duplicate: bool


class NotificationRecord(NotifyRequest):
    model_config = ConfigDict(extra="forbid")
    received_at: datetime


class AuditRecord(AuditRequest):
    model_config = ConfigDict(extra="forbid")
    received_at: datetime


# -- sandbox inspection -----------------------------------------------------------------------


class HistoryEntry(BaseModel):
    since: datetime | None = Field(description="null: before the sandbox started")
    version: str


class SandboxTenant(Tenant):
    """A tenant with the sandbox's bookkeeping: version history, operations, what is in flight."""

    in_flight: str | None = Field(default=None, description="id of the running operation")
    history: list[HistoryEntry]
    operations: list[Operation]


class SandboxTenantList(BaseModel):
    plugin: str
    tenants: list[SandboxTenant]
    resources: dict[str, dict[str, dict[str, int]]] = Field(
        description="totals held: {version: {role: {resource: amount}}}"
    )


class Event(BaseModel):
    """One call the sandbox answered."""

    seq: int
    at: datetime
    method: str
    path: str
    status: int
    plugin: str | None = None
    tenant: str | None = None
    idempotency_key: str | None = None
    duration_ms: float


class EventList(BaseModel):
    events: list[Event]
    dropped: int = Field(description="oldest events no longer retained")


class FaultView(BaseModel):
    id: str
    source: Literal["scenario", "runtime"]
    active_now: bool
    window: tuple[datetime | None, datetime | None] | None = Field(
        description="[start, end) once anchored; null while waiting for its origin"
    )
    spec: dict[str, Any]


class FaultList(BaseModel):
    faults: list[FaultView]


class InjectFaults(_Request):
    """`POST /sandbox/faults`: faults to add; their times count from now."""

    faults: list[Fault] = Field(min_length=1)


class SandboxInfo(BaseModel):
    name: str | None
    seed: int
    plugin: str
    tenants: int
    now: datetime
    first_upgrade_at: datetime | None = Field(description="origin of scenario fault windows")


class Health(BaseModel):
    status: Literal["ok"]
    plugin: str
    tenants: int
