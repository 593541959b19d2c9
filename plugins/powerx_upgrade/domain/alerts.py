"""The alert rules of a grey upgrade, judged on plain values (no clock, no I/O): the use case's
four, plus an artifact that preflight could not verify."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from powerx_upgrade.domain.durations import format_duration

GREY_ERROR_RATE = "grey_error_rate"
ROLLBACK_FAILURE = "rollback_failure"
MONITORING_DATA_MISSING = "monitoring_data_missing"
BATCH_RUNTIME = "batch_runtime"
ARTIFACT_UNVERIFIED = "artifact_unverified"
MONITORING_ERROR = "monitoring_error"
SUCCESS_FLOOR = "success_floor"
RULES = (
    GREY_ERROR_RATE,
    ROLLBACK_FAILURE,
    MONITORING_DATA_MISSING,
    BATCH_RUNTIME,
    ARTIFACT_UNVERIFIED,
    MONITORING_ERROR,
    SUCCESS_FLOOR,
)
EVENT = "plugin.version.gray.alert"


@dataclass(frozen=True)
class Alert:
    rule: str
    severity: str
    batch: int | None
    message: str
    context: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "batch": self.batch,
            "message": self.message,
            "context": dict(self.context),
        }


def error_rate_alert(
    batch: int,
    measurements: Iterable[Mapping[str, Any]],
    limit: float,
    *,
    summary: str | None = None,
    segment: Mapping[str, Any] | None = None,
) -> Alert | None:
    """Grey error rate above the limit in any error_rate measurement of the batch; `summary`
    (the verdict in words) and `segment` (where it concentrates) go into the message."""
    worst = None
    for m in measurements:
        value = m.get("value")
        if m.get("metric") != "error_rate" or value is None or value <= limit:
            continue
        if worst is None or value > worst["value"]:
            worst = m
    if worst is None:
        return None
    where = f" on tenant {worst['tenant']}" if worst.get("tenant") else ""
    message = f"batch {batch}: grey error rate {worst['value']:.2%}{where} is above {limit:.0%}"
    if summary:
        message += f". Verdict: {summary}"
    if segment and segment.get("text") and segment["text"] not in message:
        message += f"; {segment['text']}"
    return Alert(
        GREY_ERROR_RATE,
        "critical",
        batch,
        message,
        {
            "value": worst["value"],
            "limit": limit,
            "scope": worst.get("scope"),
            "tenant": worst.get("tenant"),
            "samples": worst.get("samples"),
            "summary": summary,
            "segment": dict(segment) if segment else None,
        },
    )


def missing_data_alert(batch: int, silent_for: timedelta, limit: timedelta) -> Alert | None:
    if silent_for <= limit:
        return None
    return Alert(
        MONITORING_DATA_MISSING,
        "warning",
        batch,
        f"batch {batch}: no monitoring data for {format_duration(silent_for)} "
        f"(alert after {format_duration(limit)})",
        {
            "silent_seconds": int(silent_for.total_seconds()),
            "limit_seconds": int(limit.total_seconds()),
        },
    )


def monitoring_error_alert(batch: int, reason: str, errors: Mapping[str, Any]) -> Alert:
    """The gate could not read its monitoring source: a refused query (auth, config) or too many
    failures in a row. Critical: the batch is not judged, and a wrong token must never look
    like a quiet night."""
    return Alert(
        MONITORING_ERROR,
        "critical",
        batch,
        f"batch {batch}: the gate could not read monitoring: {reason}",
        {
            "kind": errors.get("kind"),
            "consecutive": errors.get("consecutive"),
            "total": errors.get("total"),
            "last": errors.get("message"),
        },
    )


def batch_runtime_alert(batch: int, runtime: timedelta, limit: timedelta) -> Alert | None:
    if runtime <= limit:
        return None
    return Alert(
        BATCH_RUNTIME,
        "warning",
        batch,
        f"batch {batch} has run for {format_duration(runtime)}, longer than "
        f"max_batch_duration {format_duration(limit)} (it goes on: this is no kill)",
        {
            "runtime_seconds": int(runtime.total_seconds()),
            "limit_seconds": int(limit.total_seconds()),
        },
    )


def rollback_failure_alert(
    failed: Iterable[str],
    broken: Iterable[Mapping[str, Any]],
    *,
    duration: timedelta | None = None,
    deadline: timedelta | None = None,
) -> Alert | None:
    """Tenants not rolled back (failed or read back wrong), or a rollback that took longer than
    the policy's `rollback.deadline`: either is a failed rollback (one alert names both)."""
    failed, broken = list(failed), list(broken)
    tenants = sorted(set(failed) | {b["tenant"] for b in broken})
    overrun = duration is not None and deadline is not None and duration > deadline
    if not tenants and not overrun:
        return None
    parts = []
    if tenants:
        shown = ", ".join(tenants[:20]) + (" ..." if len(tenants) > 20 else "")
        parts.append(
            f"rollback failed for {len(tenants)} tenant(s): {shown}; they may be on an "
            "unexpected version: check rollback.verify and the platform"
        )
    if overrun and duration is not None and deadline is not None:
        parts.append(
            f"the rollback took {format_duration(duration)}, longer than rollback.deadline "
            f"{format_duration(deadline)}"
        )
    context: dict[str, Any] = {"tenants": tenants[:100], "problems": [dict(b) for b in broken[:50]]}
    if duration is not None and deadline is not None:
        context.update(
            {
                "duration_ms": int(duration.total_seconds() * 1000),
                "deadline_ms": int(deadline.total_seconds() * 1000),
                "deadline_overrun": overrun,
            }
        )
    return Alert(ROLLBACK_FAILURE, "critical", None, "; ".join(parts), context)


def artifact_unverified_alert(refusal: Mapping[str, Any]) -> Alert:
    """The run's artifact failed its signature check (`ArtifactRefused.as_dict()`): critical,
    the run stops in preflight before any tenant is touched."""
    return Alert(
        ARTIFACT_UNVERIFIED,
        "critical",
        None,
        f"artifact refused ({refusal.get('code')}): {refusal.get('message')}; "
        "the run stopped before any tenant was touched",
        {
            k: refusal.get(k)
            for k in ("code", "plugin", "version", "sha256", "keys_tried")
            if k in refusal
        },
    )


@dataclass(frozen=True)
class Rate:
    """A success rate of the run: succeeded over counted, against its floor."""

    name: str
    succeeded: int
    counted: int
    floor: float

    @property
    def value(self) -> float | None:
        return self.succeeded / self.counted if self.counted else None

    @property
    def missed(self) -> bool:
        value = self.value
        return value is not None and value < self.floor


def success_floor_alert(rates: Iterable[Rate]) -> Alert | None:
    """The run missed a policy's `success_floors`: one alert naming each rate below its floor
    (a rate with nothing counted is not judged)."""
    missed = [r for r in rates if r.missed]
    if not missed:
        return None
    said = "; ".join(
        f"{r.name} success {r.value:.1%} ({r.succeeded}/{r.counted}) is below its floor "
        f"{r.floor:.0%}"
        for r in missed
    )
    return Alert(
        SUCCESS_FLOOR,
        "critical",
        None,
        f"the run missed its success floors: {said}",
        {
            r.name: {
                "value": r.value,
                "succeeded": r.succeeded,
                "counted": r.counted,
                "floor": r.floor,
            }
            for r in missed
        },
    )
