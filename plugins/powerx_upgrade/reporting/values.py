"""Small value helpers of the report: timestamps as ISO text, durations, ratios."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def iso(value: datetime | None) -> str | None:
    if not value:
        return None
    # the ledger's timestamps are UTC already: one call each, not two (a row per tenant)
    return value.isoformat() if value.tzinfo is UTC else value.astimezone(UTC).isoformat()


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def minutes_between(start: datetime | None, end: datetime | None) -> float | None:
    seconds = seconds_between(start, end)
    return None if seconds is None else round(seconds / 60, 2)


def ratio(value: Any, base: Any, *, minus_one: bool = False) -> float | None:
    if value is None or base in (None, 0):
        return None
    return round(float(value) / float(base) - (1 if minus_one else 0), 6)
