"""The platform's clock offset: a real platform's clock may run ahead of (or behind) the
orchestrator's; the sandbox shifts every time it publishes and judges by the offset."""

from __future__ import annotations

from datetime import timedelta

from powerx_upgrade.domain.durations import parse_duration

MAX_OFFSET = timedelta(days=1)


def parse_offset(text: str) -> int:
    """`2m` -> 120000, `-30s` -> -30000 (milliseconds); at most a day either way."""
    value = text.strip()
    sign = -1 if value.startswith("-") else 1
    try:
        length = parse_duration(value.lstrip("+-"))
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{text!r} is not an offset such as 2m or -30s ({exc})") from exc
    if length > MAX_OFFSET:
        raise ValueError(f"offset {text!r} is larger than a day")
    return sign * (length // timedelta(milliseconds=1))
