"""Metric names: the gate's canonical names and each monitoring provider's own, as config.

A third-party monitoring system that calls `errors` `http_5xx_total` is a mapping entry in
`include/config/monitoring/version_upgrade_dashboards.json`, not a code change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

CANONICAL = ("requests", "errors", "latency_p95_ms", "samples")
"""What the gate reads from monitoring, per tenant and interval."""


def _powerx_only() -> dict[str, dict[str, str]]:
    return {"powerx": {}}


class MetricMapping(BaseModel):
    """Per provider: canonical name -> the provider's name. Unmapped names pass unchanged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_provider: str = "powerx"
    providers: dict[str, dict[str, str]] = Field(default_factory=_powerx_only)

    @model_validator(mode="after")
    def _check(self) -> MetricMapping:
        if self.default_provider not in self.providers:
            raise ValueError(
                f"default_provider {self.default_provider!r} is not among the providers "
                f"({', '.join(sorted(self.providers))})"
            )
        for provider, names in self.providers.items():
            unknown = sorted(set(names) - set(CANONICAL))
            if unknown:
                raise ValueError(
                    f"provider {provider!r} maps unknown canonical metric(s) {', '.join(unknown)}"
                    f" (canonical: {', '.join(CANONICAL)})"
                )
            if len(set(names.values())) != len(names):
                raise ValueError(f"provider {provider!r} maps two metrics to the same name")
        return self

    def names(self, provider: str | None = None) -> dict[str, str]:
        provider = provider or self.default_provider
        if provider not in self.providers:
            raise KeyError(
                f"unknown monitoring provider {provider!r} "
                f"(known: {', '.join(sorted(self.providers))})"
            )
        return {name: self.providers[provider].get(name, name) for name in CANONICAL}

    def to_provider(self, metrics: Iterable[str], provider: str | None = None) -> list[str]:
        names = self.names(provider)
        return [names.get(m, m) for m in metrics]

    def from_provider(
        self, tenants: Mapping[str, Mapping[str, Any]], provider: str | None = None
    ) -> dict[str, dict[str, Any]]:
        """A query answer's per-tenant metrics renamed back to canonical names."""
        back = {theirs: ours for ours, theirs in self.names(provider).items()}
        return {t: {back.get(k, k): v for k, v in m.items()} for t, m in tenants.items()}
