"""Pydantic models of `upgrade_policies.yaml`: policies, plans and the resolved plan a run uses."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)

from powerx_upgrade.domain.durations import Duration

Identifier = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=200),
]
"""Ids of plans, policies, batches and labels: letters, digits, `-`, `_`, `.`."""

COMPARISONS = ("<=", "<", ">=", ">")
Comparison = Literal["<=", "<", ">=", ">"]
PauseOrRollback = Literal["pause", "rollback"]
RollbackScope = Literal["failed_tenants", "batch", "all_upgraded"]
CheckScope = Literal["batch", "cumulative", "per_tenant"]
Baseline = Literal["pre_upgrade", "control"]

_PERCENT = re.compile(r"^\s*(?P<sign>[+-]?)\s*(?P<num>\d+(\.\d+)?)\s*%\s*$")
_PERCENT_SCHEMA = {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*%\s*$"}
_CHANGE_SCHEMA = {"type": "string", "pattern": r"^\s*[+-]?\s*\d+(\.\d+)?\s*%\s*$"}
_SHARE_SCHEMA = {
    "anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": 1}, _PERCENT_SCHEMA]
}
_SHARE_OR_NULL_SCHEMA = {"anyOf": [*_SHARE_SCHEMA["anyOf"], {"type": "null"}]}


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, values are frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------
# Small value types
# ---------------------------------------------------------------------------------------------


def parse_share(value: Any, field: str) -> float:
    """`0.1`, `10%` -> 0.1. Shares are fractions of a whole in (0, 1]."""
    if isinstance(value, bool):
        raise ValueError(f"{field} must be a number like 0.1 or a percentage like '10%'")
    if isinstance(value, str):
        match = _PERCENT.match(value)
        if not match or match.group("sign"):
            raise ValueError(
                f"{field} {value!r} must be a number like 0.1 or a percentage like '10%'"
            )
        return float(match.group("num")) / 100
    if isinstance(value, int | float):
        return float(value)
    raise ValueError(f"{field} must be a number like 0.1 or a percentage like '10%'")


def batch_ratio(value: Any) -> float | None:
    """A batch's cumulative ratio (`0.1`, `'10%'`) in (0, 1]; None stays None. Shared by the
    policy's batches and a run's adjustments, so both accept and refuse the same values."""
    if value is None:
        return None
    share = parse_share(value, "ratio")
    if not 0 < share <= 1:
        raise ValueError(f"ratio {share:g} must be above 0 and at most 1.0 (100%)")
    return share


class FailureBudget(Strict):
    """How many of a batch's tenants may fail to deploy: a share (`2%`) or a count (`3`)."""

    share: float | None = None
    count: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("max_failed must be a count like 3 or a percentage like '2%'")
        if isinstance(value, int):
            return {"count": value}
        if isinstance(value, str):
            match = _PERCENT.match(value)
            if match and not match.group("sign"):
                return {"share": float(match.group("num")) / 100}
            if value.strip().isdigit():
                return {"count": int(value)}
            raise ValueError(
                f"max_failed {value!r} must be a count like 3 or a percentage like '2%'"
            )
        return value

    @model_validator(mode="after")
    def _one_of(self) -> FailureBudget:
        if (self.share is None) == (self.count is None):
            raise ValueError("max_failed needs exactly one of a share ('2%') or a count (3)")
        if self.share is not None and not 0 <= self.share <= 1:
            raise ValueError(f"max_failed {self.share:.0%} must be between 0% and 100%")
        if self.count is not None and self.count < 0:
            raise ValueError("max_failed must not be negative")
        return self

    @model_serializer
    def _as_text(self) -> str | int:
        return self.count if self.count is not None else str(self)

    def allowed_failures(self, batch_size: int) -> int:
        """The number of failed deploys a batch of `batch_size` tenants tolerates."""
        if self.count is not None:
            return self.count
        return int((self.share or 0.0) * batch_size + 1e-9)  # floor: 2 % of 40 tolerates 0, not 1

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{(self.share or 0.0) * 100:g}%"


class Limit(Strict):
    """A check's limit: absolute (`0.05`, `5%`) or relative to a baseline (`+20%`, `-10%`)."""

    value: float
    relative: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("limit must be a number, a percentage ('5%') or a change ('+20%')")
        if isinstance(value, int | float):
            return {"value": float(value)}
        if isinstance(value, str):
            match = _PERCENT.match(value)
            if not match:
                try:
                    return {"value": float(value)}
                except ValueError:
                    raise ValueError(
                        f"limit {value!r} must be a number (0.05), a percentage ('5%') "
                        "or a change against the baseline ('+20%', '-10%')"
                    ) from None
            number = float(match.group("num")) / 100
            if match.group("sign"):
                return {
                    "value": -number if match.group("sign") == "-" else number,
                    "relative": True,
                }
            return {"value": number}
        return value

    @model_serializer
    def _as_text(self) -> str | float:
        return str(self) if self.relative else self.value

    def threshold(self, baseline: float | None) -> float:
        """The absolute value to compare against; relative limits scale the baseline."""
        if not self.relative:
            return self.value
        if baseline is None:
            raise ValueError("a relative limit needs a baseline value")
        return baseline * (1 + self.value)

    def __str__(self) -> str:
        if self.relative:
            return f"{self.value * 100:+g}%"
        return f"{self.value:g}"


# ---------------------------------------------------------------------------------------------
# Policy
# ---------------------------------------------------------------------------------------------


class BatchSpec(Strict):
    """One wave of a policy: how far the rollout reaches after it, how long to bake, approval."""

    name: Identifier | None = Field(default=None, description="display name, e.g. canary")
    ratio: Annotated[
        float | None,
        WithJsonSchema(
            {"anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": 1}, _PERCENT_SCHEMA]}
        ),
    ] = Field(
        default=None,
        description="cumulative share of the selected tenants after this batch, (0, 1]; '10%' too",
    )
    count: int | None = Field(
        default=None, ge=1, description="cumulative number of tenants after this batch"
    )
    bake: Duration = Field(description="observation time after the batch's deploy, e.g. 15m")
    approval: Literal["required", "none"] = Field(
        default="none", description="'required': a human approves in the UI before the deploy"
    )

    @field_validator("ratio", mode="before")
    @classmethod
    def _ratio(cls, value: Any) -> Any:
        return batch_ratio(value)

    @model_validator(mode="after")
    def _ratio_or_count(self) -> BatchSpec:
        if (self.ratio is None) == (self.count is None):
            raise ValueError("a batch needs exactly one of 'ratio' (e.g. 0.1) or 'count' (e.g. 5)")
        return self


class DeploySpec(Strict):
    """How a batch's tenants are upgraded."""

    concurrency: int = Field(default=20, ge=1, le=1000, description="parallel upgrades per shard")
    retries: int = Field(default=3, ge=0, le=20, description="per-tenant retries on failure")
    max_failed: Annotated[
        FailureBudget,
        WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0}, _PERCENT_SCHEMA]}),
    ] = Field(
        default_factory=lambda: FailureBudget(share=0.02),
        description="failed deploys a batch tolerates: '2%' or a count",
    )
    shard_size: int = Field(default=50, ge=1, le=10_000, description="tenants per deploy task")


class MissingDataSpec(Strict):
    after: Duration = Field(default=timedelta(minutes=5), description="no data this long -> action")
    action: PauseOrRollback = "pause"


class InconclusiveSpec(Strict):
    action: PauseOrRollback = "pause"


class ErrorSpec(Strict):
    """What a monitoring source that keeps failing (or refuses the query) does to the gate."""

    consecutive: int = Field(
        default=4,
        ge=1,
        le=1000,
        description="failed pokes in a row (5xx, timeouts, no answer) that end the gate with an "
        "`error` verdict (Argo Rollouts' consecutiveErrorLimit); a 4xx answer (auth, config) "
        "ends it at once",
    )
    action: PauseOrRollback = Field(
        default="pause",
        description="what follows an `error` verdict: pause for a human, or roll back",
    )


def coverage_share(value: Any) -> float | None:
    """`min_coverage`: a share of the batch's deployed tenants (0.9, '90%') in (0, 1]."""
    if value is None:
        return None
    share = parse_share(value, "min_coverage")
    if not 0 < share <= 1:
        raise ValueError(f"min_coverage {share:g} must be above 0 and at most 1.0 (100%)")
    return share


class CheckSpec(Strict):
    """One typed gate check: metric, comparison, limit; where relative, against which baseline."""

    metric: Identifier = Field(
        description="a metric of the provider's catalogue: error_rate, latency_p95_ms, requests, "
        "errors, or (prometheus) a custom metric of monitoring.metrics"
    )
    op: Comparison = Field(description="the measured value must satisfy `value <op> limit`")
    limit: Annotated[Limit, WithJsonSchema({"anyOf": [{"type": "number"}, _CHANGE_SCHEMA]})] = (
        Field(description="absolute (0.05 or '5%') or relative to the baseline ('+20%', '-10%')")
    )
    baseline: Baseline | None = Field(
        default=None,
        description="for relative limits: pre_upgrade (the tenants before) or control "
        "(tenants not yet upgraded)",
    )
    scope: CheckScope = Field(
        default="batch",
        description="batch: the batch's tenants pooled; cumulative: all upgraded so far; "
        "per_tenant: each tenant alone",
    )
    max_breaching_tenants: int = Field(
        default=0, ge=0, description="per_tenant scope: tenants allowed to breach"
    )
    min_samples: int = Field(default=1, ge=1, description="samples needed before judging")
    min_coverage: Annotated[float | None, WithJsonSchema(_SHARE_OR_NULL_SCHEMA)] = Field(
        default=None,
        description="share of the scope's deployed tenants that must report data for this "
        "check (default: the gate's min_coverage)",
    )

    _coverage = field_validator("min_coverage", mode="before")(coverage_share)


class GateSpec(Strict):
    """The metric gate that judges each batch during its bake."""

    poke_interval: Duration = Field(default=timedelta(seconds=30))
    signal_delay: Duration = Field(
        default=timedelta(minutes=1), description="monitoring lag: data younger is ignored"
    )
    missing_data: MissingDataSpec = Field(default_factory=MissingDataSpec)
    inconclusive: InconclusiveSpec = Field(default_factory=InconclusiveSpec)
    failure_limit: int = Field(
        default=0, ge=0, description="failed evaluations tolerated before the verdict is fail"
    )
    min_coverage: Annotated[float, WithJsonSchema(_SHARE_SCHEMA)] = Field(
        default=1.0,
        description="share of a batch's deployed tenants that must report data before the gate "
        "may pass (default: all of them); silent tenants are named in a no_data verdict",
    )
    error: ErrorSpec = Field(
        default_factory=ErrorSpec,
        description="monitoring errors: how many in a row end the gate, and what follows",
    )
    baseline_window: Duration = Field(
        default=timedelta(minutes=30),
        description="how far back preflight looks for the pre_upgrade baseline",
    )
    checks: list[CheckSpec] = Field(min_length=1)

    _coverage = field_validator("min_coverage", mode="before")(coverage_share)

    def coverage_of(self, check: CheckSpec) -> float:
        """The share of tenants a check needs data from."""
        return check.min_coverage if check.min_coverage is not None else self.min_coverage


class RollbackSpec(Strict):
    mode: Literal["auto", "manual"] = "auto"
    scope: RollbackScope = "all_upgraded"
    concurrency: int = Field(default=50, ge=1, le=1000)
    deadline: Duration = Field(default=timedelta(minutes=3))


class AlertSpec(Strict):
    """Alert thresholds (the use case's defaults); batch runtime uses `max_batch_duration`."""

    error_rate: float = Field(
        default=0.05, ge=0, le=1, description="grey error rate above this raises an alert"
    )
    missing_data: Duration = Field(
        default=timedelta(minutes=5), description="monitoring silent this long raises an alert"
    )


class PauseSpec(Strict):
    """How long a pause waits for a human, and what happens when nobody answers."""

    timeout: Duration = Field(default=timedelta(hours=1), description="time to answer a pause")
    default: Literal["rollback", "stop"] = Field(
        default="rollback", description="taken when nobody answers in time (never resume)"
    )


ApprovalAction = Literal["rollback", "takeover", "approve", "resume", "adjust"]
_ALL_APPROVAL_ACTIONS: tuple[ApprovalAction, ...] = (
    "rollback",
    "takeover",
    "approve",
    "resume",
    "adjust",
)
"""The actions an approval token can allow (`security.approval.ACTIONS`)."""


class ControlSpec(Strict):
    """What the control plane (API, CLI) demands of approval tokens for this policy's runs."""

    require_mfa_for: list[ApprovalAction] = Field(
        default_factory=lambda: list(_ALL_APPROVAL_ACTIONS),
        description="actions whose approval token must show multi-factor authentication "
        "(claim amr contains 'mfa', or mfa: true); default all five",
    )
    token_max_lifetime: Duration = Field(
        default=timedelta(hours=1),
        description="the longest an approval token may live (exp - iat, and exp - now); "
        "longer-lived tokens are refused",
    )

    @field_validator("token_max_lifetime")
    @classmethod
    def _positive_lifetime(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("token_max_lifetime must be longer than 0s")
        return value


MonitoringProvider = Literal["powerx", "prometheus"]
CanonicalQuery = Literal["requests", "errors", "latency_p95_ms"]
Pool = Literal["max", "mean", "sum"]


class CustomMetric(Strict):
    """A gate metric of the plan's own (Prometheus only): a per-tenant PromQL query."""

    query: str = Field(
        min_length=1,
        description="PromQL giving one series per tenant (`... by (tenant)`); placeholders "
        "{tenant} {plugin} {version} {step}",
    )
    pool: Pool = Field(
        default="max",
        description="how values combine over the interval's steps and across tenants: "
        "max, mean or sum",
    )


class MonitoringSpec(Strict):
    """Where the gate reads its metrics: the PowerX monitoring service or a Prometheus server."""

    provider: MonitoringProvider | None = Field(
        default=None,
        description="powerx (the platform's monitoring service) or prometheus (PromQL range "
        "queries); default: the deployment's ($POWERX_MONITORING_PROVIDER, else the mapping "
        "file's default_provider)",
    )
    conn_id: Identifier | None = Field(
        default=None,
        description="the Airflow HTTP connection; default powerx_monitoring (powerx) or "
        "powerx_prometheus (prometheus)",
    )
    step: Duration = Field(
        default=timedelta(seconds=10),
        description="prometheus: range-query resolution; each step's increase is summed",
    )
    queries: dict[CanonicalQuery, str] = Field(
        default_factory=dict,
        description="prometheus: PromQL per gate input, replacing the default; placeholders "
        "{tenant} {plugin} {version} {step}",
    )
    metrics: dict[Identifier, CustomMetric] = Field(
        default_factory=dict,
        description="prometheus: custom gate metrics a check may use, by name",
    )
    tenants_per_query: int = Field(
        default=200,
        ge=1,
        le=5000,
        description="prometheus: tenants per query; longer tenant lists are paged",
    )

    @field_validator("step")
    @classmethod
    def _positive_step(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("step must be at least 1s")
        return value

    @property
    def connection(self) -> str:
        """The Airflow connection to read: the configured one, else the provider's default."""
        if self.conn_id:
            return self.conn_id
        return "powerx_prometheus" if self.provider == "prometheus" else "powerx_monitoring"


class Policy(Strict):
    """A reusable rollout template: batches, deploy, gate and rollback."""

    description: str | None = None
    batches: list[BatchSpec] = Field(min_length=1)
    deploy: DeploySpec = Field(default_factory=DeploySpec)
    max_batch_duration: Duration = Field(
        default=timedelta(minutes=30), description="a batch running longer raises an alert"
    )
    gate: GateSpec
    rollback: RollbackSpec = Field(default_factory=RollbackSpec)
    pause: PauseSpec = Field(default_factory=PauseSpec)
    alerts: AlertSpec = Field(default_factory=AlertSpec)
    approval_timeout: Duration = Field(
        default=timedelta(hours=24),
        description="time to approve a batch; unanswered counts as rejected (the run stops)",
    )
    control: ControlSpec = Field(
        default_factory=ControlSpec,
        description="approval tokens of the control plane: MFA per action, longest lifetime",
    )
    monitoring: MonitoringSpec | None = Field(
        default=None,
        description="where the gate reads its metrics; a plan's own monitoring block wins "
        "key by key",
    )


# ---------------------------------------------------------------------------------------------
# Plan
# ---------------------------------------------------------------------------------------------

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

    @property
    def seed(self) -> str:
        return self.tenants.seed or self.id
