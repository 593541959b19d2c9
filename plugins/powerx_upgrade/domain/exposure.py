"""Exposure of a run: tenants and tenant-minutes on the new version before the first failing
verdict (the detection), and in total, from the ledger's actions and gate verdicts.

A tenant is exposed from the end of its successful upgrade (not a no-op) until its successful
rollback, or the run's end. Detection is the first final gate verdict that is not `pass`; a run
without one counts its whole exposure as "before detection" (nothing caught it). Pure: records
and the run's end in, an `Exposure` out (docs/reports.md, "Exposure").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


class ActionLike(Protocol):
    @property
    def tenant_id(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def state(self) -> str: ...

    @property
    def noop(self) -> bool: ...

    @property
    def batch_index(self) -> int | None: ...

    @property
    def finished_at(self) -> datetime | None: ...


class VerdictLike(Protocol):
    @property
    def batch_index(self) -> int: ...

    @property
    def phase(self) -> str: ...

    @property
    def final(self) -> bool: ...

    @property
    def evaluated_at(self) -> datetime: ...


@dataclass(frozen=True)
class Exposure:
    detected: bool
    detected_at: datetime | None
    detected_batch: int | None
    detected_phase: str | None
    tenants_before_detection: int
    tenant_minutes_before_detection: float
    tenants: int
    tenant_minutes: float
    batches_before_detection: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "detected": self.detected,
            "detected_at": self.detected_at.isoformat() if self.detected_at else None,
            "detected_batch": self.detected_batch,
            "detected_phase": self.detected_phase,
            "tenants_before_detection": self.tenants_before_detection,
            "tenant_minutes_before_detection": self.tenant_minutes_before_detection,
            "batches_before_detection": list(self.batches_before_detection),
            "tenants": self.tenants,
            "tenant_minutes": self.tenant_minutes,
        }


def exposure(
    actions: Iterable[ActionLike], verdicts: Iterable[VerdictLike], *, end: datetime
) -> Exposure:
    """The run's exposure; `end` is the run's end (or now, for a run still going)."""
    upgraded: dict[str, tuple[datetime, int | None]] = {}
    restored: dict[str, datetime] = {}
    for action in actions:
        if action.state != "succeeded" or action.finished_at is None:
            continue
        if action.kind == "rollback":
            restored[action.tenant_id] = action.finished_at
        elif not action.noop:
            upgraded[action.tenant_id] = (action.finished_at, action.batch_index)
    failing = sorted(
        (v for v in verdicts if v.final and v.phase != "pass"),
        key=lambda v: (v.evaluated_at, v.batch_index),
    )
    first = failing[0] if failing else None
    cut = first.evaluated_at if first else end
    total = before = 0.0
    batches: set[int] = set()
    exposed_before = 0
    for tenant, (since, batch) in upgraded.items():
        until = max(restored.get(tenant, end), since)  # a rollback ends the exposure
        total += (until - since).total_seconds() / 60
        if since < cut:
            exposed_before += 1
            before += (min(until, cut) - since).total_seconds() / 60
            batches.update([batch] if batch is not None else [])
    return Exposure(
        detected=first is not None,
        detected_at=first.evaluated_at if first else None,
        detected_batch=first.batch_index if first else None,
        detected_phase=first.phase if first else None,
        tenants_before_detection=exposed_before,
        tenant_minutes_before_detection=round(before, 3),
        tenants=len(upgraded),
        tenant_minutes=round(total, 3),
        batches_before_detection=tuple(sorted(batches)),
    )
