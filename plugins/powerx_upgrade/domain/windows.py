"""The upgrade window engine: for a `now`, is the window open, when does it close, when next open.

A window is a cron schedule read in the plan's IANA time zone; each firing opens the window for
`duration` of real (elapsed) time. Freeze ranges cut holes into it: no batch starts inside one.

Daylight-saving rules, the same as cron's and Airflow's:
- a firing time that does not exist locally (spring forward) fires at the first instant after
  the gap;
- a firing time that exists twice (fall back) fires once, at its first occurrence;
- the duration is elapsed time, so a 4h window across a DST change is still 4 hours long.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from powerx_upgrade.domain.models import WindowSpec

_HORIZON = timedelta(days=800)
"""How far ahead `next_open` looks; past this the window counts as never opening again."""

_MAX_FIRINGS = 100_000

_MERGE_LIMIT = timedelta(days=32)
"""Overlapping firings merge into one stretch; past this much, its end is reported as is."""


class WindowError(ValueError):
    """A window that cannot be evaluated: bad cron, time zone or freeze range."""


@dataclass(frozen=True)
class FreezeRange:
    """A half-open [start, end) range in UTC during which no batch starts."""

    start: datetime
    end: datetime
    text: str


@dataclass(frozen=True)
class WindowState:
    """Where `now` stands relative to a plan's window."""

    open: bool
    opened_at: datetime | None
    """Start of the open stretch containing now (None when closed or when there is no window)."""
    closes_at: datetime | None
    """End of the open stretch containing now (None when closed or unbounded)."""
    next_open: datetime | None
    """Now when open; else the next instant it opens; None if not within the search horizon."""
    frozen_by: str | None
    """The freeze range that holds the window closed at `now`, if any."""
    reason: str

    def as_dict(self) -> dict[str, object]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "open": self.open,
            "opened_at": iso(self.opened_at),
            "closes_at": iso(self.closes_at),
            "next_open": iso(self.next_open),
            "frozen_by": self.frozen_by,
            "reason": self.reason,
        }


# ---------------------------------------------------------------------------------------------
# Parsing and validation
# ---------------------------------------------------------------------------------------------


_MAX_ZONE_CHARS = 64
"""The longest IANA name is 32 characters; a longer name is refused before any file lookup."""


def zone(name: str) -> ZoneInfo:
    shown = repr(name) if len(name) <= _MAX_ZONE_CHARS else f"of {len(name):,} characters"
    problem = f"unknown time zone {shown}: use an IANA name like UTC, Europe/Berlin, Asia/Shanghai"
    if len(name) > _MAX_ZONE_CHARS or "\0" in name:
        raise WindowError(problem)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name the OS cannot open
        raise WindowError(problem) from None


def check_cron(expression: str) -> None:
    if not croniter.is_valid(expression):
        raise WindowError(
            f"invalid cron expression {expression!r}: use five fields "
            "'minute hour day-of-month month day-of-week', e.g. '0 2 * * SAT'"
        )


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_freeze(text: str, tz: ZoneInfo) -> FreezeRange:
    """`2026-12-24/2026-12-26` (whole days, inclusive) or `2026-12-24T18:00/2026-12-26T06:00`.

    Times without an offset are read in the window's time zone.
    """
    parts = text.split("/")
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise WindowError(
            f"invalid freeze range {text!r}: use START/END, e.g. 2026-12-24/2026-12-26 "
            "or 2026-12-24T18:00/2026-12-26T06:00"
        )
    first, last = (p.strip() for p in parts)
    whole_days = bool(_DATE.match(first) and _DATE.match(last))
    try:
        if whole_days:
            start = _local(datetime.combine(date.fromisoformat(first), time()), tz)
            end = _local(datetime.combine(date.fromisoformat(last) + timedelta(days=1), time()), tz)
        else:
            start = _instant(datetime.fromisoformat(first), tz)
            end = _instant(datetime.fromisoformat(last), tz)
    except ValueError as exc:
        raise WindowError(f"invalid freeze range {text!r}: {exc}") from None
    if end <= start:
        raise WindowError(f"invalid freeze range {text!r}: the end is not after the start")
    return FreezeRange(start, end, text)


def check_window(spec: WindowSpec) -> list[tuple[tuple[str | int, ...], str]]:
    """Every problem of a window as (path relative to the window, message)."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    tz = None
    try:
        tz = zone(spec.timezone)
    except WindowError as exc:
        problems.append((("timezone",), str(exc)))
    try:
        check_cron(spec.schedule)
    except WindowError as exc:
        problems.append((("schedule",), str(exc)))
    if spec.duration <= timedelta(0):
        problems.append((("duration",), "a window must last longer than 0s"))
    for index, text in enumerate(spec.freeze):
        try:
            parse_freeze(text, tz or ZoneInfo("UTC"))
        except WindowError as exc:
            problems.append((("freeze", index), str(exc)))
    return problems


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def window_state(spec: WindowSpec | None, now: datetime) -> WindowState:
    """Whether the window is open at `now` (aware), when it closes and when it next opens."""
    if now.tzinfo is None:
        raise WindowError("now must be timezone-aware")
    now = now.astimezone(UTC)
    if spec is None:
        return WindowState(True, None, None, now, None, "the plan has no window: always open")
    tz = zone(spec.timezone)
    check_cron(spec.schedule)
    freezes = sorted((parse_freeze(text, tz) for text in spec.freeze), key=lambda f: f.start)
    frozen_now = next((f for f in freezes if f.start <= now < f.end), None)

    for start, end in _open_stretches(spec, tz, freezes, now):
        if end <= now:
            continue
        if start <= now:
            return WindowState(
                True, start, end, now, None, f"open until {_show(end, tz)} ({spec.timezone})"
            )
        if frozen_now:
            reason = f"frozen by {frozen_now.text}; next opens {_show(start, tz)}"
        else:
            reason = f"closed; next opens {_show(start, tz)} ({spec.timezone})"
        return WindowState(
            False, None, None, start, frozen_now.text if frozen_now else None, reason
        )
    reason = f"closed; no opening within {_HORIZON.days} days"
    if frozen_now:
        reason = f"frozen by {frozen_now.text}; {reason}"
    return WindowState(False, None, None, None, frozen_now.text if frozen_now else None, reason)


def firings(spec: WindowSpec, start: datetime, end: datetime) -> Iterator[datetime]:
    """The window's opening instants (UTC) in [start, end), DST rules applied."""
    tz = zone(spec.timezone)
    for instant in _firings(spec.schedule, tz, start.astimezone(UTC)):
        if instant >= end:
            return
        yield instant


def _open_stretches(
    spec: WindowSpec, tz: ZoneInfo, freezes: list[FreezeRange], now: datetime
) -> Iterator[tuple[datetime, datetime]]:
    """Open stretches (UTC) that end after `now - duration`, overlaps merged, freezes cut out."""
    merged: tuple[datetime, datetime] | None = None
    for opening in _firings(spec.schedule, tz, now - spec.duration):
        if opening > now + _HORIZON:
            break
        closing = opening + spec.duration
        if merged and opening <= merged[1]:
            merged = (merged[0], max(merged[1], closing))
            if merged[1] > now + _MERGE_LIMIT:
                break  # back-to-back firings: open for the foreseeable future
            continue
        if merged:
            yield from _minus_freezes(merged, freezes)
        merged = (opening, closing)
    if merged:
        yield from _minus_freezes(merged, freezes)


def _minus_freezes(
    stretch: tuple[datetime, datetime], freezes: list[FreezeRange]
) -> Iterator[tuple[datetime, datetime]]:
    start, end = stretch
    for freeze in freezes:
        if freeze.end <= start or freeze.start >= end:
            continue
        if freeze.start > start:
            yield (start, freeze.start)
        start = max(start, freeze.end)
        if start >= end:
            return
    if start < end:
        yield (start, end)


def _firings(schedule: str, tz: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """Cron firings at or after `after`, iterated on local wall-clock time, then localised."""
    local_after = after.astimezone(tz).replace(tzinfo=None) - timedelta(hours=3)
    cron = croniter(schedule, local_after - timedelta(microseconds=1))
    last: datetime | None = None
    for _ in range(_MAX_FIRINGS):
        wall = cron.get_next(datetime)
        instant = _local(wall, tz)
        if instant < after or instant == last:
            continue
        last = instant
        yield instant


def _local(wall: datetime, tz: ZoneInfo) -> datetime:
    """A wall-clock time in `tz` as UTC: first occurrence if doubled, gap end if skipped."""
    first = wall.replace(tzinfo=tz, fold=0)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall:
        return first.astimezone(UTC)
    # The wall time falls in a DST gap: find the transition instant between the two readings.
    low = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = first.astimezone(UTC)
    low, high = min(low, high), max(low, high)
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(tz).replace(tzinfo=None) < wall:
            low = middle
        else:
            high = middle
    return high.replace(microsecond=0)


def _instant(value: datetime, tz: ZoneInfo) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else _local(value, tz)


def _show(value: datetime, tz: ZoneInfo) -> str:
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")
