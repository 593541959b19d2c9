"""Fault injection: typed fault specs (scenario files, `POST /sandbox/faults`) and when they act."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from powerx_dev.sandbox.seeded import unit
from powerx_upgrade.domain.durations import Duration as _Duration
from powerx_upgrade.domain.durations import parse_duration

VERSION_PATTERN = r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?$"
LABEL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}$"


def _require_text(value: Any) -> Any:
    # YAML reads `2.10` as the float 2.1: refuse rather than silently install the wrong version.
    if isinstance(value, bool | int | float):
        raise ValueError(
            f'expected text, got the number {value!r}: quote it (e.g. "{value}") '
            "because YAML reads unquoted numbers like 2.10 as 2.1"
        )
    return value


MAX_DURATION = timedelta(days=366)


def _bounded_duration(value: Any) -> Any:
    # parse_duration lets timedelta overflow escape as OverflowError; a client must get a 422.
    try:
        parsed = parse_duration(value)
    except OverflowError as exc:
        raise ValueError(f"duration {value!r} is too large (at most {MAX_DURATION.days}d)") from exc
    if parsed > MAX_DURATION:
        raise ValueError(f"duration {value!r} is too large (at most {MAX_DURATION.days}d)")
    return parsed


Duration = Annotated[_Duration, BeforeValidator(_bounded_duration)]
"""`90s` / `10m` / `4h` (see domain.durations), refused past a year instead of overflowing."""


def _json_safe(value: dict[str, Any]) -> dict[str, Any]:
    try:
        json.dumps(value, allow_nan=False)
    except ValueError as exc:
        raise ValueError("must be plain JSON (NaN and Infinity are not allowed)") from exc
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_json_safe)]
"""A free-form JSON object that can always be written back out."""

Version = Annotated[
    str,
    BeforeValidator(_require_text),
    Field(pattern=VERSION_PATTERN, examples=["2.4.0"], description="semantic version"),
]
"""A plugin version such as `2.4.0` (semantic version text, never a YAML number)."""

LabelValue = Annotated[str, BeforeValidator(_require_text)]
TenantId = Annotated[str, BeforeValidator(_require_text), Field(min_length=1, max_length=128)]
Rate = Annotated[float, Field(ge=0.0, le=1.0)]
Selector = dict[str, LabelValue | list[LabelValue]]
"""Label selector: every key must match; a list value matches any of its values."""


class Endpoint(StrEnum):
    """Contract endpoints that http_error and timeout faults can target."""

    tenants = "tenants"
    tenant = "tenant"
    upgrade = "upgrade"
    rollback = "rollback"
    monitoring_query = "monitoring_query"
    monitoring_subscribe = "monitoring_subscribe"
    notify = "notify"
    audit = "audit"


class _FaultBase(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    after: Duration | None = Field(
        default=None,
        description="start of the fault's window, counted from its origin (scenario faults: the "
        "first upgrade request; injected faults: the moment of injection). Without `after` and "
        "`duration` a fault is always active.",
    )
    duration: Duration | None = Field(
        default=None, description="length of the window; open-ended when omitted"
    )

    @property
    def windowed(self) -> bool:
        return self.after is not None or self.duration is not None

    def window(self, origin_ms: int | None) -> tuple[float, float] | None:
        """The absolute [start, end) of the fault in epoch milliseconds; (-inf, inf) unwindowed.

        None when the window is anchored to an origin that has not happened yet. Integer
        milliseconds keep published timestamps and window edges exactly equal.
        """
        if not self.windowed:
            return (float("-inf"), float("inf"))
        if origin_ms is None:
            return None
        start = origin_ms + _ms(self.after or timedelta(0))
        end = start + _ms(self.duration) if self.duration is not None else float("inf")
        return (start, end)


def _ms(value: timedelta) -> int:
    return value // timedelta(milliseconds=1)


class _TargetsTenants(_FaultBase):
    tenants: list[TenantId] | None = Field(
        default=None, description="only these tenant ids (combined with `where` by AND)"
    )
    where: Selector | None = Field(
        default=None, description="only tenants whose labels match, e.g. {tier: bronze}"
    )

    def matches(self, tenant_id: str, labels: dict[str, str]) -> bool:
        if self.tenants is not None and tenant_id not in self.tenants:
            return False
        return selector_matches(self.where, labels)


class ErrorRateFault(_TargetsTenants):
    """Tenants running `version` (any version when omitted) fail `value` of their requests."""

    type: Literal["error_rate"] = "error_rate"
    version: Version | None = None
    value: Rate


class LatencyFault(_TargetsTenants):
    """Tenants running `version` answer with p95 latency `value` ms, or baseline times `factor`."""

    type: Literal["latency"] = "latency"
    version: Version | None = None
    value: float | None = Field(default=None, gt=0, description="p95 latency in ms")
    factor: float | None = Field(default=None, gt=0, description="multiplier on the p95 latency")

    @model_validator(mode="after")
    def _one_of_value_or_factor(self) -> LatencyFault:
        if (self.value is None) == (self.factor is None):
            raise ValueError("give exactly one of `value` (ms) or `factor`")
        return self


class MetricsGapFault(_TargetsTenants):
    """Monitoring has no data at all for the window (for matching tenants). With `version`, only
    while a tenant runs that version: a version that crashes the plugin emits nothing."""

    type: Literal["metrics_gap"] = "metrics_gap"
    version: Version | None = Field(
        default=None, description="only while the tenant runs this version (a crashed version)"
    )

    @model_validator(mode="after")
    def _needs_window(self) -> MetricsGapFault:
        if not self.windowed and self.version is None:
            raise ValueError("a metrics_gap needs `after` and/or `duration`, or a `version`")
        return self


class SignalDelayFault(_TargetsTenants):
    """Monitoring lags: data younger than `value` is not available yet."""

    type: Literal["signal_delay"] = "signal_delay"
    value: Duration


class DeployFailureFault(_TargetsTenants):
    """A share `rate` of operations on matching tenants fail (the tenant keeps its version)."""

    type: Literal["deploy_failure"] = "deploy_failure"
    version: Version | None = Field(default=None, description="only when installing this version")
    operation: Literal["upgrade", "rollback"] = "upgrade"
    rate: Rate = 1.0
    message: str = "deployment failed: health check did not pass"


TIMES_FIELD = Field(
    default=None,
    ge=1,
    le=1_000_000,
    description="fire at most this many times, then never again: a burst of a known size, so "
    "a client's retries are sure to get through after it",
)


class HttpErrorFault(_FaultBase):
    """A share `rate` of calls to `endpoint` are refused with `status` before any work is done."""

    type: Literal["http_error"] = "http_error"
    endpoint: Endpoint
    status: int = Field(default=503, ge=400, le=599)
    rate: Rate = 1.0
    times: int | None = TIMES_FIELD


class TimeoutFault(_FaultBase):
    """A share `rate` of calls to `endpoint` are held for `hold`, then answered 504.

    With `applied: true` (default) the work is done first, as when a real platform finishes an
    operation but the answer never reaches the client: a retry with the same idempotency key
    then learns the outcome. With `applied: false` the request is dropped.
    """

    type: Literal["timeout"] = "timeout"
    endpoint: Endpoint
    rate: Rate = 1.0
    times: int | None = TIMES_FIELD
    hold: Duration = Field(
        default=timedelta(seconds=30),
        description="how long the answer is held; make it longer than the client's timeout",
    )

    @model_validator(mode="after")
    def _hold_at_most_an_hour(self) -> TimeoutFault:
        if self.hold > timedelta(hours=1):
            raise ValueError("hold must be at most 1h")
        return self

    applied: bool = True


class InFlightFault(_TargetsTenants):
    """Matching tenants have an operation of someone else in flight (another deploy tool, an
    operator): their upgrades (or rollbacks) are refused `409 operation_in_flight`, at most
    `times` times per tenant when set, as when the other operation then finishes."""

    type: Literal["in_flight"] = "in_flight"
    operation: Literal["upgrade", "rollback"] = "upgrade"
    times: int | None = Field(
        default=None, ge=1, le=1_000_000, description="refusals per tenant, then the tenant is free"
    )


class AuditOutageFault(_FaultBase):
    """The audit endpoint answers 503 (nothing is recorded) during the window."""

    type: Literal["audit_outage"] = "audit_outage"


Fault = Annotated[
    ErrorRateFault
    | LatencyFault
    | MetricsGapFault
    | SignalDelayFault
    | DeployFailureFault
    | HttpErrorFault
    | TimeoutFault
    | InFlightFault
    | AuditOutageFault,
    Field(discriminator="type"),
]
"""Any fault spec, told apart by its `type`."""

FAULT_TYPES: tuple[str, ...] = (
    "error_rate",
    "latency",
    "metrics_gap",
    "signal_delay",
    "deploy_failure",
    "http_error",
    "timeout",
    "in_flight",
    "audit_outage",
)


def selector_matches(where: Selector | None, labels: dict[str, str]) -> bool:
    """True when every key of the selector matches the labels (a list matches any of its values)."""
    if not where:
        return True
    for key, wanted in where.items():
        have = labels.get(key)
        if have is None:
            return False
        if isinstance(wanted, list):
            if have not in wanted:
                return False
        elif have != wanted:
            return False
    return True


@dataclass
class ActiveFault:
    """A fault in force in a running sandbox, with the origin its window counts from."""

    id: str
    spec: Any  # one of the Fault models
    source: Literal["scenario", "runtime"]
    injected_at: int | None = None  # epoch ms
    hits: Counter[str] = field(default_factory=Counter)
    """How often the fault fired, per tenant for `in_flight` ("" for the others): `times`."""

    def spent(self, who: str = "") -> bool:
        """True once a fault with `times` has fired that often (for `who`)."""
        times = getattr(self.spec, "times", None)
        return times is not None and self.hits[who] >= times

    def origin(self, first_upgrade_at: int | None) -> int | None:
        return first_upgrade_at if self.source == "scenario" else self.injected_at

    def window(self, first_upgrade_at: int | None) -> tuple[float, float] | None:
        return self.spec.window(self.origin(first_upgrade_at))

    def active_at(self, moment: int, first_upgrade_at: int | None) -> bool:
        window = self.window(first_upgrade_at)
        return window is not None and window[0] <= moment < window[1]


def fires(seed: int, fault_id: str, rate: float, *identity: object) -> bool:
    """Seeded Bernoulli draw for a rate fault: the same identity always gets the same answer."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    return unit(seed, "fault", fault_id, *identity) < rate
