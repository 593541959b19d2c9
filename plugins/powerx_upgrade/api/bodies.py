"""The request bodies of the control-plane API (unknown fields refused)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from powerx_upgrade.api.sane import problems_in

RollbackScope = Literal["all_upgraded", "batch", "failed_tenants"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        """Depth, Unicode and finite numbers first (`api.sane`): nothing unstorable gets in."""
        problems = problems_in(data)
        if problems:
            raise ValueError("; ".join(f"{p['path']}: {p['message']}" for p in problems))
        return data


class PlanBody(_Body):
    plan_id: str = Field(description="the plan id: 1-63 of a-z, 0-9, '-'")
    plan: dict[str, Any] = Field(description="the plan, as under plans.<plan_id> in the YAML")


class RollbackBody(_Body):
    run_id: str | None = Field(default=None, min_length=1, max_length=250)
    plan_id: str | None = None
    scope: RollbackScope | None = None
    reason: str = Field(min_length=1, max_length=2000)


class DecisionBody(_Body):
    decision: Literal[
        "approve", "reject", "resume", "rollback", "stop", "pause", "takeover", "release"
    ]
    batch: int | None = Field(default=None, ge=1)
    reason: str = Field(min_length=1, max_length=2000)


class AdjustBody(_Body):
    adjust: dict[str, Any]
    reason: str = Field(min_length=1, max_length=2000)


class PreviewTenant(_Body):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1, max_length=250)
    labels: dict[str, str | int | float | bool] = Field(default_factory=dict)


class PreviewBody(_Body):
    tenants: list[PreviewTenant] = Field(
        min_length=1, description="the plugin's tenants, as the platform lists them"
    )
    now: datetime | None = Field(
        default=None, description="evaluate the window at this time (default: now)"
    )
    deploy_slots: int = Field(default=1, ge=1, le=1000, description="deploy shards at once")
