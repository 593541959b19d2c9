"""The gate of one batch: what it watches, and one poke of it against the monitoring API."""

from __future__ import annotations

import logging
import statistics
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from powerx_upgrade.domain.alerts import monitoring_error_alert
from powerx_upgrade.domain.budget import budget_breach
from powerx_upgrade.domain.gate import (
    GateEvaluation,
    GateInput,
    MonitoringError,
    evaluate,
    fresh_since,
)
from powerx_upgrade.domain.measurement import Measurement, Phase, TenantStats
from powerx_upgrade.domain.models import GateSpec, Plan
from powerx_upgrade.domain.monitoring import pools
from powerx_upgrade.domain.replay import input_json
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.rollout.alerts import Counter, raise_alert
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.errors import PowerXError, PowerXUnavailable
from powerx_upgrade.rollout.preflight import planned_batches
from powerx_upgrade.rollout.record import Recorder

Query = Callable[[list[str], datetime, datetime], Awaitable[dict[str, Any]]]


def deploy_check(ledger: Ledger, plan: Plan, ctx: RunContext, batch: int) -> dict[str, Any]:
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


def budget_evaluation(
    ledger: Ledger, plan: Plan, ctx: RunContext, batch: int
) -> GateEvaluation | None:
    """A failed verdict when the run has gone past its blast-radius budget (`policy.budget`)
    after batch `batch`'s deploy, counted from the ledger over all its batches; else None."""
    budget = plan.policy.budget
    if budget.max_exposed is None and budget.max_failed_tenants is None:
        return None
    indexes = [b["index"] for b in planned_batches(ledger, ctx.run_id)]
    upgrades = [a for a in ledger.actions(ctx.run_id, kind="upgrade") if not a.noop]
    exposed = sum(1 for a in upgrades if a.state == "succeeded")
    failed = sum(1 for a in upgrades if a.state == "failed")
    breach = budget_breach(
        budget, exposed=exposed, failed=failed, last_batch=batch >= max(indexes, default=batch)
    )
    if breach is None:
        return None
    measurement = Measurement(
        check=-1,
        metric=breach.limit,
        scope="run",
        op="<=",
        limit=str(breach.allowed),
        threshold=float(breach.allowed),
        value=float(breach.value),
        samples=len(upgrades),
        phase=Phase.FAIL,
        detail=breach.reason,
    )
    return GateEvaluation(Phase.FAIL, breach.reason, (measurement,), 1, False)


def gate_watch(
    ledger: Ledger, plan: Plan, ctx: RunContext, batch: int, check: dict[str, Any]
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
        # the PowerX monitoring service keeps the platform's time; Prometheus keeps its own
        "platform_offset_seconds": (
            platform_offset([a for a in upgraded if a.batch_index == batch])
            if plan.monitoring.provider == "powerx"
            else 0.0
        ),
    }


JUDGEABLE_MARGIN = timedelta(milliseconds=50)
"""Poked this long after the bake becomes judgeable, so the poke's clock is surely past it."""


log = logging.getLogger(__name__)

CLOCK_TOLERANCE = 5.0
"""Seconds of clock difference to the platform that the gate ignores: smaller than a monitoring
bucket (10 s), and the answer's own travel and the ledger write fit in it."""


def platform_offset(actions: Iterable[Any]) -> float:
    """How many seconds the platform's clock is ahead of ours (negative: behind), from the
    batch's upgrade answers: the platform's `finished_at` of each operation against the ledger's
    `finished_at` of its action, written when the answer arrived. The median, so that one slow
    answer does not move it; 0 within CLOCK_TOLERANCE or when no answer carried a time.

    Why: the gate asks monitoring for the bake's window in Airflow's time; a platform whose
    clock runs 2 minutes ahead would answer for its own past (the old version, which passes).
    """
    offsets = []
    unreadable: list[str] = []
    for action in actions:
        at = (action.detail or {}).get("platform_at")
        if not at or action.finished_at is None:
            continue
        try:
            platform = datetime.fromisoformat(str(at).replace("Z", "+00:00"))
        except ValueError:
            unreadable.append(f"{action.tenant_id}: {str(at)[:40]!r}")
            continue
        ours = action.finished_at
        if ours.tzinfo is None:
            ours = ours.replace(tzinfo=UTC)
        if platform.tzinfo is None:
            platform = platform.replace(tzinfo=UTC)
        offsets.append((platform - ours).total_seconds())
    if unreadable:  # not a time: said, not silently taken as "no skew"
        log.warning(
            "%d platform answer time(s) are not ISO times and do not count toward the "
            "platform's clock offset (%d do): %s",
            len(unreadable),
            len(offsets),
            "; ".join(unreadable[:5]),
        )
    if not offsets:
        return 0.0
    offset = statistics.median(offsets)
    return offset if abs(offset) >= CLOCK_TOLERANCE else 0.0


ERROR_LOG_SIZE = 50
"""Monitoring errors kept in a gate's state (the count is kept in full)."""


def classify(error: BaseException) -> str:
    """`refused` for an answer that retrying cannot fix (4xx: auth, a wrong endpoint, a bad
    query); `unavailable` for no answer, 5xx, 408, 429 or an answer we could not read."""
    if isinstance(error, PowerXError) and not isinstance(error, PowerXUnavailable):
        return "refused"
    return "unavailable"


class GatePoller:
    """One gate's polling state across pokes: failures, freshness and monitoring errors so far."""

    def __init__(
        self,
        gate: GateSpec,
        watch: dict[str, Any],
        query: Query,
        failures: int = 0,
        last_data_at: str | None = None,
        alerted: list[str] | None = None,
        history: list[dict[str, Any]] | None = None,
        errors_in_row: int = 0,
        errors_total: int = 0,
        error_log: list[dict[str, Any]] | None = None,
        deadline: str | None = None,
    ) -> None:
        self.gate = gate
        self.watch = watch
        self.query = query
        self.failures = failures
        self.last_data_at = datetime.fromisoformat(last_data_at) if last_data_at else None
        self.alerted = list(alerted or [])
        self.history = list(history or [])
        self.errors_in_row = errors_in_row
        self.errors_total = errors_total
        self.error_log = list(error_log or [])
        self.deadline = datetime.fromisoformat(deadline) if deadline else None
        self.pokes = 0

    async def poke(self, now: datetime) -> GateEvaluation:
        """Query monitoring for the bake so far and evaluate. A failed query is never "no
        data": it is classified, counted and logged, and the gate judges it (`error`)."""
        self.pokes += 1
        watch, gate = self.watch, self.gate
        bake_started = datetime.fromisoformat(watch["bake_started"])
        horizon = now - gate.signal_delay
        measured = Measured()
        failure: MonitoringError | None = None
        if horizon > bake_started:
            # the monitoring's timeline is the platform's: ask for the bake in its time
            skew = timedelta(seconds=float(watch.get("platform_offset_seconds") or 0.0))
            try:
                measured = await self._measure(bake_started + skew, horizon + skew)
            except Exception as exc:
                failure = self._failed(now, exc)
        if failure is None:
            self.errors_in_row = 0
        data = self._input(now, bake_started, measured, failure)
        result = evaluate(gate, data)
        self.failures = result.failures
        self.last_data_at = fresh_since(gate, now, result, self.last_data_at)
        used = sum(int(h.get("input", {}).get("n") or 0) for h in self.history)
        # the input too, so a backtest can evaluate this poke again (domain.replay)
        self.history.append({**summarise(now, result), "input": input_json(data, used)})
        return result

    def _input(
        self,
        now: datetime,
        bake_started: datetime,
        measured: Measured,
        failure: MonitoringError | None,
    ) -> GateInput:
        watch = self.watch
        return GateInput(
            now=now,
            bake_started=bake_started,
            bake=timedelta(seconds=watch["bake_seconds"]),
            batch=measured.batch,
            cumulative=measured.cumulative or measured.batch,
            pre_upgrade={t: TenantStats.from_json(s) for t, s in watch["pre_upgrade"].items()},
            control=measured.control,
            last_data_at=self.last_data_at,
            failures_so_far=self.failures,
            expected=list(watch["batch_tenants"]),
            cumulative_expected=list(watch["cumulative_tenants"]) or list(watch["batch_tenants"]),
            reporting=measured.reporting,
            has_control=bool(watch["control_tenants"]),
            silence_grace=self.fresh_window,
            monitoring_error=failure,
            pools=watch.get("pools") or {},
        )

    @property
    def fresh_window(self) -> timedelta:
        """Fresh means samples within the last poke (at least one monitoring bucket, 10 s): a
        wider window would hide data that has just stopped arriving."""
        return max(self.gate.poke_interval, timedelta(seconds=10))

    def _failed(self, now: datetime, exc: BaseException) -> MonitoringError:
        self.errors_in_row += 1
        self.errors_total += 1
        kind = classify(exc)
        message = f"{type(exc).__name__}: {exc}"[:500]
        self.error_log.append({"at": now.isoformat(), "kind": kind, "message": message})
        del self.error_log[:-ERROR_LOG_SIZE]
        return MonitoringError(kind, message, self.errors_in_row, self.errors_total)

    def silent_for(self, now: datetime) -> timedelta:
        """How long the batch has had no fresh monitoring data (up to the signal horizon)."""
        horizon = now - self.gate.signal_delay
        since = self.last_data_at or datetime.fromisoformat(self.watch["bake_started"])
        return max(timedelta(0), horizon - since)

    def runtime(self, now: datetime) -> timedelta:
        """How long the batch has run, from its first deploy."""
        started = self.watch.get("batch_started") or self.watch["bake_started"]
        return now - datetime.fromisoformat(started)

    def judgeable_from(self) -> datetime:
        """The first moment a poke can judge anything: bake start + `signal_delay`. Before it
        a poke's window [bake start, now - signal_delay] is empty: no query, no failure, no
        silence, always `running` (docs/performance.md, "The gate"). Inclusive: a 0 s bake or
        `missing_data.after` 0 can end the gate right at it."""
        return datetime.fromisoformat(self.watch["bake_started"]) + self.gate.signal_delay

    def can_judge(self, now: datetime) -> bool:
        """Whether a poke at `now` can judge anything (`judgeable_from`): before it the sensor
        defers at once and the trigger only reads the run's controls and due alerts."""
        return now >= self.judgeable_from()

    def next_poke_in(self, now: datetime) -> timedelta:
        """How long to wait before the next poke: the poke interval, or less when the gate
        becomes judgeable sooner (the bake's start plus the monitoring lag: the first poke that
        can judge; its end plus the lag: the verdict). Without this the first judged poke and
        the verdict of a bake each wait up to one more poke interval for nothing."""
        interval = self.gate.poke_interval
        bake_started = datetime.fromisoformat(self.watch["bake_started"])
        judged_end = (
            bake_started + timedelta(seconds=self.watch["bake_seconds"]) + self.gate.signal_delay
        )
        for moment in (self.judgeable_from(), judged_end):
            left = moment - now
            if timedelta(0) < left < interval:
                return left + JUDGEABLE_MARGIN
        return interval

    def deadline_from(self, now: datetime) -> datetime:
        """When the gate gives up waiting for a verdict (the deferral's timeout): the bake, the
        monitoring lag, the longer of the missing-data wait and an error streak, and 10 minutes
        of slack. Fixed at the first deferral, so re-deferring never moves it later."""
        if self.deadline is None:
            gate = self.gate
            bake_started = datetime.fromisoformat(self.watch["bake_started"])
            patience = max(gate.missing_data.after, gate.poke_interval * gate.error.consecutive)
            self.deadline = max(now, bake_started) + (
                timedelta(seconds=self.watch["bake_seconds"])
                + gate.signal_delay
                + patience
                + timedelta(minutes=10)
            )
        return self.deadline

    async def _measure(self, start: datetime, end: datetime) -> Measured:
        """Two queries: the whole bake so far (what is judged) and the latest poke interval
        (who is reporting now). Either failing fails the poke."""
        watch = self.watch
        wanted = sorted(
            set(watch["batch_tenants"])
            | set(watch["cumulative_tenants"])
            | set(watch["control_tenants"])
        )
        answer = await self.query(wanted, start, end)
        stats = _stats(answer)
        watched = sorted(set(watch["batch_tenants"]) | set(watch["cumulative_tenants"]))
        recent = max(start, end - self.fresh_window)
        now_reporting = frozenset(_stats(await self.query(watched, recent, end)))

        def pick(ids: list[str]) -> dict[str, TenantStats]:
            return {t: stats[t] for t in ids if t in stats}

        return Measured(
            pick(watch["batch_tenants"]),
            pick(watch["cumulative_tenants"]),
            pick(watch["control_tenants"]),
            now_reporting,
        )

    def state(self) -> dict[str, Any]:
        return {
            "failures": self.failures,
            "last_data_at": self.last_data_at.isoformat() if self.last_data_at else None,
            "alerted": self.alerted,
            "history": self.history[-500:],
            "errors_in_row": self.errors_in_row,
            "errors_total": self.errors_total,
            "error_log": self.error_log,
            "deadline": self.deadline.isoformat() if self.deadline else None,
        }


@dataclass(frozen=True)
class Measured:
    """One poke's monitoring answer, split by role; `reporting`: tenants with fresh samples."""

    batch: dict[str, TenantStats] = field(default_factory=dict)
    cumulative: dict[str, TenantStats] = field(default_factory=dict)
    control: dict[str, TenantStats] = field(default_factory=dict)
    reporting: frozenset[str] = frozenset()


def _stats(answer: dict[str, Any]) -> dict[str, TenantStats]:
    """The answer's tenants with samples; an answer that is not the documented shape raises."""
    tenants = answer.get("tenants")
    if not isinstance(tenants, dict):
        raise ValueError(f"monitoring answer has no 'tenants' object: {str(answer)[:200]}")
    found = {t: TenantStats.from_json(m) for t, m in tenants.items()}
    return {t: s for t, s in found.items() if s.samples > 0}


def summarise(now: datetime, result: GateEvaluation) -> dict[str, Any]:
    """One poke for the charts: per check, the pooled value (per_tenant: the worst tenant)."""
    checks: dict[int, dict[str, Any]] = {}
    for m in result.measurements:
        if m.check < 0:  # coverage and deploy rows are not metric checks
            continue
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


MONITORING_ERROR_TOTAL = "version.upgrade.monitoring_error_total"
"""Counted once per failed monitoring query of a gate, tagged with its kind."""


def record_monitoring_errors(
    recorder: Recorder,
    ctx: RunContext,
    batch: int,
    evaluation: dict[str, Any],
    state: dict[str, Any],
    *,
    channels: list[str],
    count: Counter | None = None,
    notify: bool = True,
) -> int:
    """Audit and count every monitoring error the gate met, and raise `monitoring_error` when
    they ended it. Audit ids are per error (run, batch, number), so a replay adds nothing.
    Returns how many errors were recorded."""
    log = list(state.get("error_log") or [])
    total = int(state.get("errors_total") or len(log))
    first = total - len(log) + 1  # numbers of the kept errors (older ones are only counted)
    for number, entry in enumerate(log, start=first):
        recorder.audit(
            ctx,
            "batch.gate.monitoring_error",
            audit_id=f"{ctx.run_id}:gate:{batch}:monitoring_error:{number}",
            details={"batch": batch, "number": number, "of": total, **entry},
        )
        if count is not None:
            count(
                MONITORING_ERROR_TOTAL,
                {"plan": ctx.plan_id, "plugin": ctx.plugin, "kind": str(entry.get("kind"))},
            )
    if evaluation.get("phase") == Phase.ERROR.value:
        last = log[-1] if log else {}
        errors = {**last, "consecutive": state.get("errors_in_row"), "total": total}
        alert = monitoring_error_alert(batch, str(evaluation.get("reason")), errors)
        alert = replace(alert, context={**alert.context, "summary": evaluation.get("summary")})
        raise_alert(recorder, ctx, alert, channels=channels, count=count, notify=notify)
    return len(log)
