"""The small value types of the config models: ids, comparisons, shares, failure budgets,
limits, and `Strict`, the base of every config model."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, model_serializer, model_validator

Identifier = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=200),
]
"""Ids of plans, policies, batches and labels: letters, digits, `-`, `_`, `.`."""

COMPARISONS = ("<=", "<", ">=", ">")
Comparison = Literal["<=", "<", ">=", ">"]
PauseOrRollback = Literal["pause", "rollback"]
RollbackScope = Literal["failed_tenants", "batch", "all_upgraded"]
CheckScope = Literal["batch", "cumulative", "per_tenant"]
Baseline = Literal["pre_upgrade", "control"]

_PERCENT = re.compile(r"^\s*(?P<sign>[+-]?)\s*(?P<num>\d+(\.\d+)?)\s*%\s*$")
PERCENT_SCHEMA = {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*%\s*$"}
CHANGE_SCHEMA = {"type": "string", "pattern": r"^\s*[+-]?\s*\d+(\.\d+)?\s*%\s*$"}
SHARE_SCHEMA = {"anyOf": [{"type": "number", "exclusiveMinimum": 0, "maximum": 1}, PERCENT_SCHEMA]}
SHARE_OR_NULL_SCHEMA = {"anyOf": [*SHARE_SCHEMA["anyOf"], {"type": "null"}]}


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, values are frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------
# Small value types
# ---------------------------------------------------------------------------------------------


def parse_share(value: Any, field: str) -> float:
    """`0.1`, `10%` -> 0.1. Shares are fractions of a whole in (0, 1]."""
    if isinstance(value, bool):
        raise ValueError(f"{field} must be a number like 0.1 or a percentage like '10%'")
    if isinstance(value, str):
        match = _PERCENT.match(value)
        if not match or match.group("sign"):
            raise ValueError(
                f"{field} {value!r} must be a number like 0.1 or a percentage like '10%'"
            )
        return float(match.group("num")) / 100
    if isinstance(value, int | float):
        return float(value)
    raise ValueError(f"{field} must be a number like 0.1 or a percentage like '10%'")


def batch_ratio(value: Any) -> float | None:
    """A batch's cumulative ratio (`0.1`, `'10%'`) in (0, 1]; None stays None. Shared by the
    policy's batches and a run's adjustments, so both accept and refuse the same values."""
    if value is None:
        return None
    share = parse_share(value, "ratio")
    if not 0 < share <= 1:
        raise ValueError(f"ratio {share:g} must be above 0 and at most 1.0 (100%)")
    return share


class FailureBudget(Strict):
    """How many of a batch's tenants may fail to deploy: a share (`2%`) or a count (`3`)."""

    share: float | None = None
    count: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("max_failed must be a count like 3 or a percentage like '2%'")
        if isinstance(value, int):
            return {"count": value}
        if isinstance(value, str):
            match = _PERCENT.match(value)
            if match and not match.group("sign"):
                return {"share": float(match.group("num")) / 100}
            if value.strip().isdigit():
                return {"count": int(value)}
            raise ValueError(
                f"max_failed {value!r} must be a count like 3 or a percentage like '2%'"
            )
        return value

    @model_validator(mode="after")
    def _one_of(self) -> FailureBudget:
        if (self.share is None) == (self.count is None):
            raise ValueError("max_failed needs exactly one of a share ('2%') or a count (3)")
        if self.share is not None and not 0 <= self.share <= 1:
            raise ValueError(f"max_failed {self.share:.0%} must be between 0% and 100%")
        if self.count is not None and self.count < 0:
            raise ValueError("max_failed must not be negative")
        return self

    @model_serializer
    def _as_text(self) -> str | int:
        return self.count if self.count is not None else str(self)

    def allowed_failures(self, batch_size: int) -> int:
        """The number of failed deploys a batch of `batch_size` tenants tolerates."""
        if self.count is not None:
            return self.count
        return int((self.share or 0.0) * batch_size + 1e-9)  # floor: 2 % of 40 tolerates 0, not 1

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{(self.share or 0.0) * 100:g}%"


class Limit(Strict):
    """A check's limit: absolute (`0.05`, `5%`) or relative to a baseline (`+20%`, `-10%`)."""

    value: float
    relative: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("limit must be a number, a percentage ('5%') or a change ('+20%')")
        if isinstance(value, int | float):
            return {"value": float(value)}
        if isinstance(value, str):
            match = _PERCENT.match(value)
            if not match:
                try:
                    return {"value": float(value)}
                except ValueError:
                    raise ValueError(
                        f"limit {value!r} must be a number (0.05), a percentage ('5%') "
                        "or a change against the baseline ('+20%', '-10%')"
                    ) from None
            number = float(match.group("num")) / 100
            if match.group("sign"):
                return {
                    "value": -number if match.group("sign") == "-" else number,
                    "relative": True,
                }
            return {"value": number}
        return value

    @model_serializer
    def _as_text(self) -> str | float:
        return str(self) if self.relative else self.value

    def threshold(self, baseline: float | None) -> float:
        """The absolute value to compare against; relative limits scale the baseline."""
        if not self.relative:
            return self.value
        if baseline is None:
            raise ValueError("a relative limit needs a baseline value")
        return baseline * (1 + self.value)

    def __str__(self) -> str:
        if self.relative:
            return f"{self.value * 100:+g}%"
        return f"{self.value:g}"
