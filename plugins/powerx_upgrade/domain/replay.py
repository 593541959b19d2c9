"""A gate poke's input as JSON the ledger keeps, so a backtest can evaluate it again.

Each poke records what `gate.evaluate` was given, except what the ledger or the plan already
hold: the pre-upgrade baseline (the run's `baseline`), the custom metrics' pools (the plan's
monitoring) and the policy (the backtest brings its own). The control group is kept pooled
into one tenant, which gives every metric the same value as the tenants themselves (sums for
requests and errors, request-weighted latency, a custom metric's pooled value).

A poke's input is recorded only while it stays small (`TENANT_CAP` tenants in a poke,
`BUDGET` tenant entries in a gate's whole history): the gate's history travels in the
trigger's state. Beyond that the poke says so (`omitted`), and a backtest says what is missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from powerx_upgrade.domain.gate import GateInput, MonitoringError
from powerx_upgrade.domain.measurement import TenantStats, metric_value

VERSION = 1
MARKER = "gate_input"
"""The `metric` of the ledger row element that carries a poke's input (`check` -3)."""
TENANT_CAP = 500
BUDGET = 20_000


def size_of(data: GateInput) -> int:
    """Tenant entries a poke's input holds."""
    return (
        len(data.batch)
        + len(data.cumulative)
        + len(set(data.expected or ()))
        + len(set(data.cumulative_expected or ()))
    )


def input_json(data: GateInput, used: int = 0) -> dict[str, Any]:
    """The poke's input (`used`: tenant entries already recorded in this gate's history)."""
    size = size_of(data)
    if size > TENANT_CAP or used + size > BUDGET:
        limit = f"{TENANT_CAP} per poke" if size > TENANT_CAP else f"{BUDGET} per gate"
        return {"v": VERSION, "omitted": f"{size} tenant entries (the cap is {limit})"}
    batch = {t: s.as_dict() for t, s in sorted(data.batch.items())}
    return {
        "v": VERSION,
        "n": size,
        "now": data.now.isoformat(),
        "bake_started": data.bake_started.isoformat(),
        "batch": batch,
        # the batch's tenants are most of the cumulative set: named, not repeated
        "in_cumulative": sorted(t for t, s in data.batch.items() if data.cumulative.get(t) == s),
        "cumulative": {
            t: s.as_dict() for t, s in sorted(data.cumulative.items()) if data.batch.get(t) != s
        },
        "control": pooled(list(data.control.values()), data.pools),
        "expected": None if data.expected is None else sorted(set(data.expected)),
        "cumulative_expected": (
            None if data.cumulative_expected is None else sorted(set(data.cumulative_expected))
        ),
        "reporting": None if data.reporting is None else sorted(data.reporting),
        "has_control": data.has_control,
        "silence_grace_seconds": data.silence_grace.total_seconds(),
        "error": data.monitoring_error.as_dict() if data.monitoring_error else None,
    }


def input_from_json(
    raw: Mapping[str, Any],
    *,
    bake: timedelta,
    pre_upgrade: Mapping[str, TenantStats],
    pools: Mapping[str, str],
    failures_so_far: int,
    last_data_at: datetime | None,
) -> GateInput:
    """The GateInput a recorded poke had, with the policy's bake, the run's baseline and the
    replay's own running state (failures so far, last fresh data). Raises ValueError on a
    record that is not a version-1 input."""
    if raw.get("v") != VERSION or "now" not in raw:
        raise ValueError(f"not a recorded gate input: {str(dict(raw))[:120]}")
    batch = {t: TenantStats.from_json(s) for t, s in raw["batch"].items()}
    cumulative = {t: batch[t] for t in raw["in_cumulative"]}
    cumulative.update({t: TenantStats.from_json(s) for t, s in raw["cumulative"].items()})
    error = raw.get("error")
    reporting = raw.get("reporting")
    return GateInput(
        now=datetime.fromisoformat(raw["now"]),
        bake_started=datetime.fromisoformat(raw["bake_started"]),
        bake=bake,
        batch=batch,
        cumulative=cumulative,
        pre_upgrade=dict(pre_upgrade),
        control={"(control)": TenantStats.from_json(raw["control"])} if raw["control"] else {},
        last_data_at=last_data_at,
        failures_so_far=failures_so_far,
        pools=dict(pools),
        expected=raw.get("expected"),
        cumulative_expected=raw.get("cumulative_expected"),
        reporting=None if reporting is None else frozenset(reporting),
        has_control=bool(raw.get("has_control", True)),
        silence_grace=timedelta(seconds=float(raw.get("silence_grace_seconds", 10))),
        monitoring_error=MonitoringError(**error) if error else None,
    )


def pooled(stats: Sequence[TenantStats], pools: Mapping[str, str]) -> dict[str, object] | None:
    """Tenants folded into one whose every metric has the value `metric_value` gives the
    tenants: sums, the request-weighted p95, each custom metric folded by its pool."""
    with_data = [s for s in stats if s.samples > 0]
    if not with_data:
        return None
    weighted = [
        (s.latency_p95_ms, s.requests or 1) for s in with_data if s.latency_p95_ms is not None
    ]
    # the pseudo-tenant's own weight is its requests: keep the weighted mean exact
    latency = sum(v * w for v, w in weighted) / sum(w for _, w in weighted) if weighted else None
    custom: dict[str, list[float]] = {}
    for s in with_data:
        for name, value in s.values.items():
            custom.setdefault(name, []).append(value)
    folded = {name: metric_value(name, with_data, pools[name]) for name in custom if name in pools}
    return {
        **{k: v for k, v in folded.items() if v is not None},
        "requests": sum(s.requests for s in with_data),
        "errors": sum(s.errors for s in with_data),
        "latency_p95_ms": latency,
        "samples": sum(s.samples for s in with_data),
    }
