"""One simulated tenant's installation: version, config, resources held, history."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from powerx_dev.sandbox.encoding import iso
from powerx_dev.sandbox.metrics import TenantSeries

OPERATIONS_RETAINED_PER_TENANT = 50


@dataclass
class TenantRecord:
    """One tenant's installation, with what the sandbox needs to simulate it."""

    id: str
    labels: dict[str, str]
    version: str
    config_version: str
    holdings: list[dict[str, Any]]
    previous_version: str | None = None
    previous_config_version: str | None = None
    state: str = "ready"
    last_error: str | None = None
    updated_at: int | None = None  # epoch ms
    in_flight: str | None = None
    config_seq: int = 1
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (since epoch ms, version)
    operations: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=OPERATIONS_RETAINED_PER_TENANT)
    )
    attempts: Counter[tuple[str, str]] = field(default_factory=Counter)
    series: TenantSeries | None = None

    def view(self) -> dict[str, Any]:
        """The contract's Tenant shape (plain JSON values)."""
        return {
            "id": self.id,
            "labels": self.labels,
            "version": self.version,
            "config_version": self.config_version,
            "previous_version": self.previous_version,
            "previous_config_version": self.previous_config_version,
            "state": self.state,
            "resources": [dict(holding) for holding in self.holdings],
            "last_error": self.last_error,
            "updated_at": iso(self.updated_at),
        }

    def sandbox_view(self) -> dict[str, Any]:
        view = self.view()
        view["in_flight"] = self.in_flight
        view["history"] = [
            {"since": iso(since), "version": version} for since, version in self.timeline
        ]
        view["operations"] = list(self.operations)
        return view

    def metric_series(self) -> TenantSeries:
        if self.series is None:
            timeline = tuple((since / 1000.0, version) for since, version in self.timeline)
            self.series = TenantSeries(self.id, dict(self.labels), timeline)
        return self.series

    def install(self, version: str, moment: int) -> None:
        self.version = version
        self.timeline.append((moment, version))
        self.series = None
