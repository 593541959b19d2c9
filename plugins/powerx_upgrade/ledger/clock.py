"""The ledger's clock: one place that says what time it is, so that tests can move it."""

from datetime import UTC, datetime


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)
