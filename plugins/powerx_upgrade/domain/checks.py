"""Cross-field checks of a policy and of a plan: what one model's validation cannot see
(batches that shrink, gates without checks, windows, monitoring, representation), as findings
`(path relative to the policy or plan, message, severity)`."""

from __future__ import annotations

from datetime import timedelta

from powerx_upgrade.domain.durations import format_duration
from powerx_upgrade.domain.models import PlanSpec, Policy
from powerx_upgrade.domain.monitoring import check_checks, check_monitoring, resolve_monitoring
from powerx_upgrade.domain.problems import Path, Severity
from powerx_upgrade.domain.windows import check_window

Finding = tuple[Path, str, Severity]


def check_policy(policy: Policy, default_provider: str | None = None) -> list[Finding]:
    findings: list[Finding] = []
    findings += _check_batches(policy)
    monitoring = resolve_monitoring(policy.monitoring, None, default_provider)
    if policy.monitoring is not None:
        findings += [(("monitoring", *rel), m, sev) for rel, m, sev in check_monitoring(monitoring)]
    findings += check_checks(policy, monitoring)
    gate = policy.gate
    findings += _zero_durations(policy)
    minimum_bake = gate.signal_delay + 2 * gate.poke_interval
    for index, batch in enumerate(policy.batches):
        if batch.bake <= timedelta(0):
            continue  # refused by _zero_durations
        if batch.bake < minimum_bake:
            findings.append(
                (
                    ("batches", index, "bake"),
                    f"bake {_show(batch.bake)} is shorter than signal_delay + 2 x poke_interval "
                    f"= {_show(minimum_bake)}: the gate sees at most one fresh sample",
                    "warning",
                )
            )
    for index, check in enumerate(gate.checks):
        path: Path = ("gate", "checks", index)
        if check.limit.relative and check.baseline is None:
            findings.append(
                (
                    (*path, "baseline"),
                    f"limit {check.limit} is relative: say what it is relative to "
                    "(baseline: pre_upgrade or control)",
                    "error",
                )
            )
        if not check.limit.relative and check.baseline is not None:
            findings.append(
                (
                    (*path, "baseline"),
                    f"baseline {check.baseline} is ignored: limit {check.limit} is absolute "
                    "(write it as '+20%' to compare against the baseline)",
                    "warning",
                )
            )
        if check.max_breaching_tenants and check.scope != "per_tenant":
            findings.append(
                (
                    (*path, "max_breaching_tenants"),
                    "max_breaching_tenants only applies to scope per_tenant "
                    f"(scope is {check.scope})",
                    "error",
                )
            )
    if gate.missing_data.after < gate.poke_interval:
        findings.append(
            (
                ("gate", "missing_data", "after"),
                f"missing_data.after {_show(gate.missing_data.after)} is shorter than "
                f"poke_interval {_show(gate.poke_interval)}: one late sample trips it",
                "warning",
            )
        )
    return findings


def _zero_durations(policy: Policy) -> list[Finding]:
    """`0s` where it would make the gate a busy loop or judge nothing is refused; a signal delay
    of 0s is meaningful (a source without lag) and only warned about."""
    findings: list[Finding] = []
    gate = policy.gate
    if gate.poke_interval <= timedelta(0):
        findings.append(
            (
                ("gate", "poke_interval"),
                "poke_interval 0s would poll monitoring in a busy loop: give at least 1s "
                "(default 30s)",
                "error",
            )
        )
    for index, batch in enumerate(policy.batches):
        if batch.bake <= timedelta(0):
            findings.append(
                (
                    ("batches", index, "bake"),
                    "bake 0s leaves the gate no time to observe the batch: give at least "
                    "signal_delay + 2 x poke_interval",
                    "error",
                )
            )
    if gate.signal_delay <= timedelta(0):
        findings.append(
            (
                ("gate", "signal_delay"),
                "signal_delay 0s trusts data the moment it is written: right only for a "
                "monitoring source without lag (Prometheus scrapes lag by an interval)",
                "warning",
            )
        )
    return findings


def _check_batches(policy: Policy) -> list[Finding]:
    findings: list[Finding] = []
    names: dict[str, int] = {}
    last_ratio: tuple[int, float] | None = None
    last_count: tuple[int, int] | None = None
    for index, batch in enumerate(policy.batches):
        path: Path = ("batches", index)
        if batch.name:
            if batch.name in names:
                findings.append(
                    (
                        (*path, "name"),
                        f"duplicate batch name '{batch.name}' (also batches[{names[batch.name]}])",
                        "error",
                    )
                )
            names.setdefault(batch.name, index)
        if batch.ratio is not None:
            if last_ratio and batch.ratio <= last_ratio[1]:
                findings.append(
                    (
                        (*path, "ratio"),
                        f"ratio {batch.ratio:g} must be above batches[{last_ratio[0]}]'s "
                        f"{last_ratio[1]:g}: ratios are cumulative shares and strictly increase",
                        "error",
                    )
                )
            if last_ratio and last_ratio[1] >= 1.0:
                findings.append(
                    (
                        path,
                        f"batches[{last_ratio[0]}] already reaches ratio 1.0; "
                        "nothing is left for this batch",
                        "error",
                    )
                )
            last_ratio = (index, batch.ratio)
        if batch.count is not None:
            if last_count and batch.count <= last_count[1]:
                findings.append(
                    (
                        (*path, "count"),
                        f"count {batch.count} must be above batches[{last_count[0]}]'s "
                        f"{last_count[1]}: counts are cumulative and strictly increase",
                        "error",
                    )
                )
            if last_ratio and last_ratio[1] >= 1.0:
                findings.append(
                    (
                        path,
                        f"batches[{last_ratio[0]}] already reaches ratio 1.0; "
                        "nothing is left for this batch",
                        "error",
                    )
                )
            last_count = (index, batch.count)
    final = policy.batches[-1]
    if final.ratio is not None and final.ratio < 1.0:
        findings.append(
            (
                ("batches", len(policy.batches) - 1, "ratio"),
                f"the last batch reaches ratio {final.ratio:g}, not 1.0: the rollout would never "
                "finish; end with a batch of ratio 1.0",
                "error",
            )
        )
    if final.count is not None:
        findings.append(
            (
                ("batches", len(policy.batches) - 1, "count"),
                f"the last batch is a count ({final.count}): a plan with more selected tenants "
                "fails to plan; end with ratio 1.0 to cover any number",
                "warning",
            )
        )
    return findings


def check_plan(spec: PlanSpec) -> list[Finding]:
    findings: list[Finding] = []
    if spec.window is not None:
        for rel, message in check_window(spec.window):
            findings.append((("window", *rel), message, "error"))
    excluded_ids = {entry for entry in spec.tenants.exclude if isinstance(entry, str)}
    for index, tenant_id in enumerate(spec.tenants.canary):
        if tenant_id in excluded_ids:
            findings.append(
                (
                    ("tenants", "canary", index),
                    f"canary tenant '{tenant_id}' is also in tenants.exclude; it cannot be both",
                    "error",
                )
            )
        if tenant_id in spec.tenants.canary[:index]:
            findings.append(
                (
                    ("tenants", "canary", index),
                    f"canary tenant '{tenant_id}' is listed twice",
                    "warning",
                )
            )
    return findings


def _show(value: timedelta) -> str:
    return format_duration(value)
