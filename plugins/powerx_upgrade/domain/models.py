"""Pydantic models of `upgrade_policies.yaml`: plans and the resolved plan a run uses. The
value types (`domain.values`) and the policy models (`domain.policy`) are importable from here
too, since most callers read a plan and its policy together."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from powerx_upgrade.domain.durations import Duration
from powerx_upgrade.domain.policy import (
    AlertSpec,
    ApprovalAction,
    BatchSpec,
    BudgetSpec,
    CanonicalQuery,
    CheckSpec,
    ControlSpec,
    CustomMetric,
    DeploySpec,
    ErrorSpec,
    GateSpec,
    InconclusiveSpec,
    MissingDataSpec,
    MonitoringProvider,
    MonitoringSpec,
    PauseSpec,
    Policy,
    Pool,
    RollbackSpec,
    SuccessFloors,
    coverage_share,
)
from powerx_upgrade.domain.values import (
    CHANGE_SCHEMA,
    COMPARISONS,
    PERCENT_SCHEMA,
    SHARE_OR_NULL_SCHEMA,
    SHARE_SCHEMA,
    Baseline,
    CheckScope,
    Comparison,
    FailureBudget,
    Identifier,
    Limit,
    PauseOrRollback,
    RollbackScope,
    Strict,
    batch_ratio,
    parse_share,
)

__all__ = [
    "CHANGE_SCHEMA",
    "COMPARISONS",
    "PERCENT_SCHEMA",
    "SHARE_OR_NULL_SCHEMA",
    "SHARE_SCHEMA",
    "AlertSpec",
    "ApprovalAction",
    "ArtifactSpec",
    "Baseline",
    "BatchSpec",
    "BudgetSpec",
    "CanonicalQuery",
    "CheckScope",
    "CheckSpec",
    "Comparison",
    "ConfigFile",
    "ControlSpec",
    "CustomMetric",
    "DeploySpec",
    "ErrorSpec",
    "FailureBudget",
    "GateSpec",
    "Identifier",
    "InconclusiveSpec",
    "LabelSelector",
    "Limit",
    "MissingDataSpec",
    "MonitoringProvider",
    "MonitoringSpec",
    "NotifyEvent",
    "NotifySpec",
    "OrderKey",
    "PauseOrRollback",
    "PauseSpec",
    "Plan",
    "PlanSpec",
    "Policy",
    "Pool",
    "RepresentSpec",
    "RollbackScope",
    "RollbackSpec",
    "SourceRef",
    "Strict",
    "SuccessFloors",
    "TenantSelection",
    "WindowSpec",
    "batch_ratio",
    "coverage_share",
    "parse_share",
]

LabelSelector = dict[Identifier, str | list[str]]
"""`{tier: [gold, silver], region: eu}`: every key must match; a list matches any of its values."""


class OrderKey(Strict):
    """Order tenants by a label, optionally by an explicit ranking of its values."""

    label: Identifier
    values: list[str] | None = Field(
        default=None, description="rank by this list (unlisted values last); else alphabetical"
    )


class RepresentSpec(Strict):
    """Early batches that represent the selection's segments (docs/plans.md, "represent")."""

    by: list[Identifier] = Field(
        min_length=1, description="labels whose value combinations are the segments, e.g. [tier]"
    )
    per_segment: int = Field(
        default=1, ge=1, le=1000, description="tenants of each segment in each listed batch"
    )
    through_batch: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="batches 1..through_batch are stratified; 0 declares the segments only",
    )
    intended_gaps: bool = Field(
        default=False,
        description="a first batch that leaves a segment out is intended: no warning",
    )


class TenantSelection(Strict):
    select: LabelSelector = Field(
        default_factory=dict, description="labels a tenant must have; empty selects all"
    )
    exclude: list[str | LabelSelector] = Field(
        default_factory=list, description="tenant ids or label selectors never touched"
    )
    canary: list[str] = Field(default_factory=list, description="tenant ids upgraded first")
    order: list[Identifier | OrderKey] = Field(
        default_factory=list, description="label keys that order tenants after the canary cohort"
    )
    seed: str | None = Field(
        default=None, description="tie-break seed for the stable order; default the plan id"
    )
    represent: RepresentSpec | None = Field(
        default=None,
        description="early batches hold tenants of every segment of the selection "
        "(label combinations, else each label alone)",
    )


class WindowSpec(Strict):
    """When batches may start: a cron schedule in a time zone, a duration, and freeze ranges."""

    schedule: str = Field(description="cron expression in the window's time zone, e.g. 0 2 * * SAT")
    duration: Duration
    timezone: str = Field(default="UTC", description="IANA time zone, e.g. Asia/Shanghai")
    freeze: list[str] = Field(
        default_factory=list,
        description="no batch starts in these ranges: 2026-12-24/2026-12-26 (whole days, "
        "inclusive) or 2026-12-24T18:00/2026-12-26T06:00",
    )


NotifyEvent = Literal["run_start", "batch_promoted", "paused", "rollback", "run_end", "alert"]
_DEFAULT_NOTIFY_EVENTS: tuple[NotifyEvent, ...] = (
    "run_start",
    "paused",
    "rollback",
    "run_end",
    "alert",
)


class NotifySpec(Strict):
    channels: list[str] = Field(default_factory=list, description="e.g. slack:#releases, email")
    on: list[NotifyEvent] = Field(default_factory=lambda: list(_DEFAULT_NOTIFY_EVENTS))


class ArtifactSpec(Strict):
    """The build a run installs, unless the run's conf names another."""

    uri: str = Field(min_length=1, description="where the platform fetches the build")
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="hex digest of the build")
    signature: str | None = Field(default=None, description="detached signature (base64)")


class PlanSpec(Strict):
    """A plan as written: what to roll out to whom, under which policy (plus overrides)."""

    description: str | None = None
    plugin: Identifier
    policy: Identifier
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="policy fields deep-merged onto the policy (mappings merge, lists replace)",
    )
    target_version: str | None = Field(default=None, description="default; a run may give another")
    artifact: ArtifactSpec | None = Field(
        default=None, description="default artifact of the target version; a run may give another"
    )
    tenants: TenantSelection = Field(default_factory=TenantSelection)
    window: WindowSpec | None = None
    owners: list[str] = Field(default_factory=list)
    notify: NotifySpec = Field(default_factory=NotifySpec)
    monitoring: MonitoringSpec | None = Field(
        default=None,
        description="where the gate reads this plan's metrics (provider, connection, PromQL); "
        "merged key by key onto the policy's",
    )
    allow_downgrade: bool = Field(
        default=False,
        description="let a run move tenants to an older version than they run (else "
        "preflight refuses it, naming the tenants); a run's conf may say so too",
    )


class ConfigFile(Strict):
    """One config file: `upgrade_policies.yaml` or a file under `plans/`."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="PowerX grey upgrade policies and plans",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    version: Literal[1] = 1
    policies: dict[Identifier, Policy] = Field(default_factory=dict)
    plans: dict[Identifier, PlanSpec] = Field(default_factory=dict)


class SourceRef(Strict):
    """Where a thing was written: file and line."""

    file: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


class Plan(Strict):
    """A validated plan with its policy resolved (overrides applied): what a run executes."""

    id: Identifier
    source: SourceRef
    description: str | None = None
    plugin: Identifier
    policy_id: Identifier
    policy: Policy
    target_version: str | None = None
    artifact: ArtifactSpec | None = None
    tenants: TenantSelection
    window: WindowSpec | None = None
    owners: list[str] = Field(default_factory=list)
    notify: NotifySpec = Field(default_factory=NotifySpec)
    monitoring: MonitoringSpec = Field(default_factory=lambda: MonitoringSpec(provider="powerx"))
    """The policy's and the plan's monitoring blocks merged, the provider resolved."""
    allow_downgrade: bool = False

    @property
    def seed(self) -> str:
        return self.tenants.seed or self.id
