"""Human durations (`90s`, `10m`, `4h`, `1h30m`) as a pydantic type that round-trips to text."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
DURATION_PATTERN = r"^\s*(\d+(\.\d+)?(ms|s|m|h|d))+\s*$"
DURATION_HINT = "a duration like 90s, 10m, 4h or 1h30m"


class DurationError(ValueError):
    """A text that is not a duration; the message names the text and the accepted forms."""


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """Read `90s`, `10m`, `4h`, `1d`, `250ms` or combinations (`1h30m`); numbers are seconds."""
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, bool):
        raise DurationError(f"invalid duration {value!r}: expected {DURATION_HINT}")
    elif isinstance(value, int | float):
        try:
            result = timedelta(seconds=value)
        except (OverflowError, ValueError):
            raise DurationError(f"invalid duration {value!r}: too long") from None
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        if not text or not re.fullmatch(DURATION_PATTERN, text):
            raise DurationError(f"invalid duration {value!r}: expected {DURATION_HINT}")
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))
        try:
            result = timedelta(seconds=seconds)
        except OverflowError:
            raise DurationError(f"invalid duration {value!r}: too long") from None
    else:
        raise DurationError(f"invalid duration {value!r}: expected {DURATION_HINT}")
    if result < timedelta(0):
        raise DurationError(f"invalid duration {value!r}: must not be negative")
    return result


def format_duration(value: timedelta) -> str:
    """The shortest text that parse_duration reads back to the same value (`90s` -> `1m30s`)."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    parts = []
    for unit, size_ms in (
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ):
        count, total_ms = divmod(total_ms, size_ms)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": DURATION_PATTERN, "examples": ["90s", "10m", "4h"]},
                {"type": "number", "minimum": 0, "description": "seconds"},
            ]
        }
    ),
]
"""A timedelta field that accepts `90s` / `10m` / `4h` (or seconds) and writes back as text."""
