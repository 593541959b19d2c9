"""How the sandbox writes times and tells a replayed request from a reused key."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def iso(moment_ms: float | None) -> str | None:
    """Epoch milliseconds as ISO 8601 UTC text with a `Z` (None and infinities stay None)."""
    if moment_ms is None or moment_ms in (float("inf"), float("-inf")):
        return None
    text = (_EPOCH + timedelta(milliseconds=int(moment_ms))).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def to_ms(moment: datetime) -> int:
    """An aware datetime as epoch milliseconds (sub-millisecond parts dropped)."""
    return (moment - _EPOCH) // _MS


def fingerprint(model: BaseModel) -> str:
    """Canonical digest of a request body, to tell a replay from a reuse of its key."""
    text = json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
