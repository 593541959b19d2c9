"""Pydantic models of a policy in `upgrade_policies.yaml`: batches, deploy, gate and checks,
rollback, alerts, pauses, controls and monitoring."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import Field, WithJsonSchema, field_validator, model_validator

from powerx_upgrade.domain.durations import Duration
from powerx_upgrade.domain.values import (
    CHANGE_SCHEMA,
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


class BatchSpec(Strict):
    """One wave of a policy: how far the rollout reaches after it, how long to bake, approval."""

    name: Identifier | None = Field(default=None, description="display name, e.g. canary")
    ratio: Annotated[
        float | None,
        WithJsonSchema(
            {"anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": 1}, PERCENT_SCHEMA]}
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
        WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0}, PERCENT_SCHEMA]}),
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
    limit: Annotated[Limit, WithJsonSchema({"anyOf": [{"type": "number"}, CHANGE_SCHEMA]})] = Field(
        description="absolute (0.05 or '5%') or relative to the baseline ('+20%', '-10%')"
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
    min_coverage: Annotated[float | None, WithJsonSchema(SHARE_OR_NULL_SCHEMA)] = Field(
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
    min_coverage: Annotated[float, WithJsonSchema(SHARE_SCHEMA)] = Field(
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


def floor_share(value: Any) -> float:
    """A success floor: a share (0.98, '98%') in [0, 1]."""
    share = parse_share(value, "success floor")
    if not 0 <= share <= 1:
        raise ValueError(f"success floor {share:g} must be between 0 and 1.0 (100%)")
    return share


class SuccessFloors(Strict):
    """The success rates a run must reach; a miss raises the `success_floor` alert and is
    marked in the report (the run's outcome does not change: the floors judge the release)."""

    upgrade: Annotated[float, WithJsonSchema(SHARE_SCHEMA)] = Field(
        default=0.98,
        description="share of attempted tenant upgrades that succeed (and of the selected "
        "tenants on the target version at the end), e.g. '98%'",
    )
    batch: Annotated[float, WithJsonSchema(SHARE_SCHEMA)] = Field(
        default=0.95, description="share of the batches run whose gate passed, e.g. '95%'"
    )

    _shares = field_validator("upgrade", "batch", mode="before")(floor_share)


class BudgetSpec(Strict):
    """A run-wide blast-radius budget (a batch's `deploy.max_failed` is per batch): exceeding
    it ends the batch's gate with a failed verdict before its first poke, so the policy's
    failure action follows (rollback.mode auto: roll back; manual: a human is asked)."""

    max_exposed: int | None = Field(
        default=None,
        ge=1,
        description="most tenants on the new version before the last batch (unset: no limit)",
    )
    max_failed_tenants: int | None = Field(
        default=None,
        ge=0,
        description="most failed tenant deploys across all batches of the run (unset: no limit)",
    )


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
    approvers: list[Annotated[str, Field(min_length=1, max_length=250)]] = Field(
        default_factory=list,
        description="Airflow user ids who may answer this policy's approvals and pauses "
        "(HITL assigned_users: Airflow refuses anyone else, in the UI, its REST API and "
        "through the control plane); empty: anyone with edit access to the DAG's runs",
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
        description="tenants per monitoring query (both providers); longer tenant lists are paged",
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
    success_floors: SuccessFloors = Field(
        default_factory=SuccessFloors,
        description="success rates the run must reach (defaults 98% upgrade, 95% batch)",
    )
    budget: BudgetSpec = Field(
        default_factory=BudgetSpec,
        description="run-wide blast radius: max_exposed, max_failed_tenants",
    )
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
