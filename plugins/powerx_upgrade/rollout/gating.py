"""The gate of one batch: what it watches, and one poke of it against the monitoring API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from powerx_upgrade.domain.gate import (
    GateEvaluation,
    GateInput,
    Measurement,
    Phase,
    TenantStats,
    evaluate,
)
from powerx_upgrade.domain.models import GateSpec, Plan
from powerx_upgrade.domain.monitoring import pools
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.preflight import planned_batches

Query = Callable[[list[str], datetime, datetime], Awaitable[dict[str, Any]]]


def deploy_check(ledger: Any, plan: Plan, ctx: RunContext, batch: int) -> dict[str, Any]:
    """How the batch's deploy went, against `max_failed`."""
    planned = next((b for b in planned_batches(ledger, ctx.run_id) if b["index"] == batch), None)
    tenants = planned["tenants"] if planned else []
    actions = {
        a.tenant_id: a for a in ledger.actions(ctx.run_id, kind="upgrade", batch_index=batch)
    }
    succeeded = [
        t for t in tenants if t in actions and actions[t].state in ("succeeded", "skipped")
    ]
    refused = [t for t in tenants if t in actions and actions[t].state == "refused"]
    failed = [t for t in tenants if t not in succeeded and t not in refused]
    allowed = plan.policy.deploy.max_failed.allowed_failures(len(tenants))
    finished = [a.finished_at for a in actions.values() if a.finished_at is not None]
    begun = [a.started_at for a in actions.values() if a.started_at is not None]
    return {
        "batch": batch,
        "planned": len(tenants),
        "succeeded": succeeded,
        "failed": failed,
        "refused": refused,
        "allowed_failures": allowed,
        "too_many_failures": len(failed) > allowed,
        "deploy_ended_at": max(finished).isoformat() if finished else datetime.now(UTC).isoformat(),
        "deploy_started_at": min(begun).isoformat() if begun else None,
    }


def deploy_failure_evaluation(check: dict[str, Any], plan: Plan) -> GateEvaluation:
    budget = plan.policy.deploy.max_failed
    reason = (
        f"{len(check['failed'])} of {check['planned']} deploys failed, more than "
        f"max_failed {budget} allows ({check['allowed_failures']})"
    )
    measurement = Measurement(
        check=-1,
        metric="failed_deploys",
        scope="batch",
        op="<=",
        limit=str(budget),
        threshold=float(check["allowed_failures"]),
        value=float(len(check["failed"])),
        samples=check["planned"],
        phase=Phase.FAIL,
        detail=", ".join(check["failed"][:20]),
    )
    return GateEvaluation(Phase.FAIL, reason, (measurement,), 1, False)


def gate_watch(
    ledger: Any, plan: Plan, ctx: RunContext, batch: int, check: dict[str, Any]
) -> dict[str, Any]:
    """Everything the gate trigger needs, as plain JSON (it runs in the triggerer)."""
    batches = planned_batches(ledger, ctx.run_id)
    upgraded = [
        a
        for a in ledger.actions(ctx.run_id, kind="upgrade")
        if a.state == "succeeded" and (a.batch_index or 0) <= batch
    ]
    cumulative = sorted({a.tenant_id for a in upgraded})
    control = [t for b in batches if b["index"] > batch for t in b["tenants"]]
    run = ledger.get_run(ctx.run_id)
    baseline = dict(run.baseline or {}) if run else {}
    planned = next((b for b in batches if b["index"] == batch), {"bake_seconds": 0})
    return {
        "plugin": ctx.plugin,
        "batch": batch,
        "batch_tenants": check["succeeded"],
        "cumulative_tenants": cumulative,
        "control_tenants": control[:2000],
        "pre_upgrade": {t: baseline[t] for t in cumulative if t in baseline},
        "bake_started": check["deploy_ended_at"],
        "batch_started": check["deploy_started_at"],
        "bake_seconds": planned["bake_seconds"],
        "pools": pools(plan.monitoring),
    }


class GatePoller:
    """One gate's polling state across pokes: failures so far and when data was last fresh."""

    def __init__(
        self,
        gate: GateSpec,
        watch: dict[str, Any],
        query: Query,
        failures: int = 0,
        last_data_at: str | None = None,
        alerted: list[str] | None = None,
        history: list[dict[str, Any]] | None = None,
    ) -> None:
        self.gate = gate
        self.watch = watch
        self.query = query
        self.failures = failures
        self.last_data_at = datetime.fromisoformat(last_data_at) if last_data_at else None
        self.alerted = list(alerted or [])
        self.history = list(history or [])
        self.pokes = 0

    async def poke(self, now: datetime) -> GateEvaluation:
        """Query monitoring for the bake so far and evaluate; errors count as no data."""
        self.pokes += 1
        watch, gate = self.watch, self.gate
        bake_started = datetime.fromisoformat(watch["bake_started"])
        horizon = now - gate.signal_delay
        batch_stats: dict[str, TenantStats] = {}
        cumulative: dict[str, TenantStats] = {}
        control: dict[str, TenantStats] = {}
        if horizon > bake_started:
            batch_stats, cumulative, control = await self._measure(bake_started, horizon)
            # Fresh means samples within the last poke (at least one monitoring bucket, 10 s): a
            # wider window would hide data that has just stopped arriving.
            recent = max(bake_started, horizon - max(gate.poke_interval, timedelta(seconds=10)))
            if batch_stats and await self._fresh(recent, horizon):
                self.last_data_at = horizon
        result = evaluate(
            gate,
            GateInput(
                now=now,
                bake_started=bake_started,
                bake=timedelta(seconds=watch["bake_seconds"]),
                batch=batch_stats,
                cumulative=cumulative or batch_stats,
                pre_upgrade={t: TenantStats.from_json(s) for t, s in watch["pre_upgrade"].items()},
                control=control,
                last_data_at=self.last_data_at,
                failures_so_far=self.failures,
                pools=watch.get("pools") or {},
            ),
        )
        self.failures = result.failures
        self.history.append(summarise(now, result))
        return result

    def silent_for(self, now: datetime) -> timedelta:
        """How long the batch has had no fresh monitoring data (up to the signal horizon)."""
        horizon = now - self.gate.signal_delay
        since = self.last_data_at or datetime.fromisoformat(self.watch["bake_started"])
        return max(timedelta(0), horizon - since)

    def runtime(self, now: datetime) -> timedelta:
        """How long the batch has run, from its first deploy."""
        started = self.watch.get("batch_started") or self.watch["bake_started"]
        return now - datetime.fromisoformat(started)

    async def _measure(self, start: datetime, end: datetime) -> tuple[dict[str, TenantStats], ...]:
        watch = self.watch
        wanted = sorted(
            set(watch["batch_tenants"])
            | set(watch["cumulative_tenants"])
            | set(watch["control_tenants"])
        )
        try:
            answer = await self.query(wanted, start, end)
        except Exception:
            return {}, {}, {}
        stats = {t: TenantStats.from_json(m) for t, m in (answer.get("tenants") or {}).items()}

        def pick(ids: list[str]) -> dict[str, TenantStats]:
            return {t: stats[t] for t in ids if t in stats and stats[t].samples > 0}

        return (
            pick(watch["batch_tenants"]),
            pick(watch["cumulative_tenants"]),
            pick(watch["control_tenants"]),
        )

    async def _fresh(self, start: datetime, end: datetime) -> bool:
        try:
            answer = await self.query(self.watch["batch_tenants"], start, end)
        except Exception:
            return False
        return any((m.get("samples") or 0) > 0 for m in (answer.get("tenants") or {}).values())

    def state(self) -> dict[str, Any]:
        return {
            "failures": self.failures,
            "last_data_at": self.last_data_at.isoformat() if self.last_data_at else None,
            "alerted": self.alerted,
            "history": self.history[-500:],
        }


def summarise(now: datetime, result: GateEvaluation) -> dict[str, Any]:
    """One poke for the charts: per check, the pooled value (per_tenant: the worst tenant)."""
    checks: dict[int, dict[str, Any]] = {}
    for m in result.measurements:
        current = checks.get(m.check)
        worse = current is None or (
            m.value is not None
            and (current["value"] is None or _worse(m.op, m.value, current["value"]))
        )
        if worse:
            checks[m.check] = {
                "check": m.check,
                "metric": m.metric,
                "scope": m.scope,
                "op": m.op,
                "value": m.value,
                "threshold": m.threshold,
                "phase": m.phase.value,
                "tenant": m.tenant,
            }
    return {
        "at": now.isoformat(),
        "phase": result.phase.value,
        "checks": [checks[k] for k in sorted(checks)],
    }


def _worse(op: str, value: float, than: float) -> bool:
    """For `<=`/`<` checks a higher value is worse; for `>=`/`>` a lower one."""
    return value > than if op in ("<=", "<") else value < than
