"""How long a plan's run takes, batch by batch, and whether it fits its window (pure).

A batch's time is its deploy (waves of `deploy.concurrency` upgrades, each as long as one
tenant's upgrade takes: the ledger's measured figure, else a stated default), then its gate
(the bake, the monitoring lag `signal_delay` the gate waits out, and one `poke_interval` to
the poke that gives the verdict). An approval waits for a person: open-ended, never counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from powerx_upgrade.domain.durations import format_duration
from powerx_upgrade.domain.models import Plan
from powerx_upgrade.domain.planner import BatchPlan
from powerx_upgrade.domain.windows import WindowState, window_state, zone

DEFAULT_LATENCY = timedelta(seconds=30)
"""One tenant's upgrade when the ledger has measured none for the plugin."""


@dataclass(frozen=True)
class Latency:
    """One tenant's upgrade time used by the estimate, and where the figure comes from."""

    seconds: float
    samples: int
    """Settled upgrades measured (0: the default)."""
    runs: int
    """Runs of the plugin the samples come from."""
    plugin: str
    missing: str = ""
    """Why there is no measured figure, when the ledger was not read at all."""

    @property
    def measured(self) -> bool:
        return self.samples > 0

    def describe(self) -> str:
        if not self.measured:
            why = self.missing or f"the ledger has no settled upgrade of {self.plugin}"
            return f"default {format_duration(timedelta(seconds=self.seconds))} per tenant: {why}"
        return (
            f"{self.seconds:.1f}s per tenant: median of {self.samples} settled upgrade(s) of "
            f"{self.plugin} in the ledger (start to end, retries included; {self.runs} run(s))"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "seconds": round(self.seconds, 3),
            "samples": self.samples,
            "runs": self.runs,
            "source": "ledger" if self.measured else "default",
            "missing": self.missing or None,
            "text": self.describe(),
        }


def deploy_latency(
    plugin: str,
    durations: Sequence[float],
    runs: int,
    default: timedelta = DEFAULT_LATENCY,
    missing: str = "",
) -> Latency:
    """The median of the measured upgrade durations (seconds), else the default (`missing`:
    why nothing was measured, when the ledger was not read)."""
    if not durations:
        return Latency(default.total_seconds(), 0, 0, plugin, missing)
    ordered = sorted(durations)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return Latency(median, len(ordered), runs, plugin)


@dataclass(frozen=True)
class BatchEstimate:
    index: int
    name: str
    tenants: int
    shards: int
    waves: int
    """Rounds of `concurrency` upgrades, shards one after another (`slots` at a time)."""
    deploy: timedelta
    gate: timedelta
    """bake + signal_delay + poke_interval."""
    bake: timedelta
    approval: bool
    approval_timeout: timedelta
    ends_after: timedelta
    """From the run's start to this batch's verdict, approvals not counted."""

    @property
    def total(self) -> timedelta:
        return self.deploy + self.gate

    def as_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "name": self.name,
            "tenants": self.tenants,
            "shards": self.shards,
            "waves": self.waves,
            "deploy_seconds": round(self.deploy.total_seconds(), 3),
            "bake_seconds": round(self.bake.total_seconds(), 3),
            "gate_seconds": round(self.gate.total_seconds(), 3),
            "total_seconds": round(self.total.total_seconds(), 3),
            "approval_wait": "open-ended" if self.approval else None,
            "ends_after_seconds": round(self.ends_after.total_seconds(), 3),
        }


@dataclass(frozen=True)
class WindowFit:
    """The run against the window it starts in."""

    start: datetime
    finish: datetime
    opens: datetime | None
    closes: datetime | None
    timezone: str
    note: str
    """Why the run starts when it does (`the window opens ...`, `the window is open now`)."""

    @property
    def overrun(self) -> timedelta:
        if self.closes is None:
            return timedelta(0)
        return max(timedelta(0), self.finish - self.closes)

    def sentence(self, approvals: int) -> str:
        tz = zone(self.timezone)
        waits = (
            f"; not counting {approvals} approval wait(s), which are open-ended"
            if approvals
            else ""
        )
        finish = _clock(self.finish, tz, self.start)
        if self.opens is None or self.closes is None:
            return f"finishes about {finish} ({self.timezone}){waits}"
        span = f"the {_clock(self.opens, tz)}-{_clock(self.closes, tz, self.opens)} window"
        if self.overrun > timedelta(0):
            return (
                f"overruns {span} ({self.timezone}) by {_minutes(self.overrun)}: finishes about "
                f"{finish}{waits}; a batch due after the window closes waits for the next opening"
            )
        return f"finishes about {finish}, inside {span} ({self.timezone}){waits}"

    def as_dict(self) -> dict[str, object]:
        return {
            "start": self.start.isoformat(),
            "finish": self.finish.isoformat(),
            "window_opens": self.opens.isoformat() if self.opens else None,
            "window_closes": self.closes.isoformat() if self.closes else None,
            "timezone": self.timezone,
            "fits": self.overrun == timedelta(0),
            "overrun_seconds": round(self.overrun.total_seconds(), 3),
            "note": self.note,
        }


@dataclass(frozen=True)
class Estimate:
    batches: tuple[BatchEstimate, ...]
    latency: Latency
    concurrency: int
    shard_size: int
    slots: int
    fit: WindowFit

    @property
    def total(self) -> timedelta:
        return sum((b.total for b in self.batches), timedelta(0))

    @property
    def approvals(self) -> int:
        return sum(1 for b in self.batches if b.approval)

    def lines(self) -> list[str]:
        """The estimate in words, one line each (what `powerx plan preview` prints)."""
        out = [
            f"deploy latency: {self.latency.describe()}",
            f"deploy: {self.concurrency} upgrade(s) at a time per shard of up to "
            f"{self.shard_size}, {self.slots} shard(s) at a time",
        ]
        for b in self.batches:
            wait = (
                f"approval wait (open-ended, up to {format_duration(b.approval_timeout)}) + "
                if b.approval
                else ""
            )
            out.append(
                f"batch {b.index} {b.name}: {wait}deploy {_short(b.deploy)} ({b.tenants} "
                f"tenant(s), {b.shards} shard(s), {b.waves} wave(s)) + gate {_short(b.gate)} "
                f"(bake {format_duration(b.bake)}) = {_short(b.total)}; verdict about "
                f"{_short(b.ends_after)} after the start"
            )
        out.append(f"total: {_short(self.total)}, {self.fit.note}")
        out.append(self.fit.sentence(self.approvals))
        return out

    def as_dict(self) -> dict[str, object]:
        return {
            "latency": self.latency.as_dict(),
            "concurrency": self.concurrency,
            "shard_size": self.shard_size,
            "slots": self.slots,
            "batches": [b.as_dict() for b in self.batches],
            "total_seconds": round(self.total.total_seconds(), 3),
            "approval_waits": self.approvals,
            "window": self.fit.as_dict(),
            "text": self.lines(),
        }


def estimate(
    plan: Plan, batch_plan: BatchPlan, latency: Latency, now: datetime, slots: int = 1
) -> Estimate:
    """Each batch's time and the run's finish against its window, started at `now` (or at the
    window's next opening when it is closed)."""
    if slots < 1:
        raise ValueError(f"slots {slots}: at least one deploy shard runs at a time")
    policy = plan.policy
    deploy, gate = policy.deploy, policy.gate
    lag = gate.signal_delay + gate.poke_interval
    elapsed = timedelta(0)
    found: list[BatchEstimate] = []
    for batch in batch_plan.batches:
        size = len(batch.tenants)
        shard_sizes = [min(deploy.shard_size, size - s) for s in range(0, size, deploy.shard_size)]
        per_shard = [math.ceil(n / deploy.concurrency) for n in shard_sizes]
        # shards in rounds of `slots`: each round lasts as long as its longest shard
        waves = sum(max(per_shard[i : i + slots]) for i in range(0, len(per_shard), slots))
        deploy_time = timedelta(seconds=waves * latency.seconds)
        gate_time = batch.bake + lag
        elapsed += deploy_time + gate_time
        found.append(
            BatchEstimate(
                index=batch.index,
                name=batch.name,
                tenants=size,
                shards=len(shard_sizes),
                waves=waves,
                deploy=deploy_time,
                gate=gate_time,
                bake=batch.bake,
                approval=batch.approval_required,
                approval_timeout=policy.approval_timeout,
                ends_after=elapsed,
            )
        )
    return Estimate(
        tuple(found),
        latency,
        deploy.concurrency,
        deploy.shard_size,
        slots,
        window_fit(plan, now, elapsed),
    )


def window_fit(plan: Plan, now: datetime, total: timedelta) -> WindowFit:
    """Start now if the window is open, else at its next opening; finish `total` later."""
    state: WindowState = window_state(plan.window, now)
    if plan.window is None:
        return WindowFit(
            now,
            now + total,
            None,
            None,
            "UTC",
            f"started now ({_stamp(now, zone('UTC'))}): the plan has no window",
        )
    tz_name = plan.window.timezone
    tz = zone(tz_name)
    if state.open:
        start, opens, closes = now, state.opened_at, state.closes_at
        note = f"started now ({_stamp(now, tz)}): the window is open"
    elif state.next_open is not None:
        start = state.next_open
        opened = window_state(plan.window, start)
        opens, closes = opened.opened_at, opened.closes_at
        note = f"started when the window opens ({_stamp(start, tz)})"
    else:
        start, opens, closes = now, None, None
        note = f"started now: the window does not open in the search horizon ({state.reason})"
    return WindowFit(start, start + total, opens, closes, tz_name, note)


def _clock(value: datetime, tz: ZoneInfo, same_day_as: datetime | None = None) -> str:
    """`03:17` (to the nearest minute), with the date when it is not `same_day_as`'s."""
    local = (value + timedelta(seconds=30)).astimezone(tz)
    if same_day_as is not None and local.date() != same_day_as.astimezone(tz).date():
        return local.strftime("%Y-%m-%d %H:%M")
    return local.strftime("%H:%M")


def _stamp(value: datetime, tz: ZoneInfo) -> str:
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


def _short(value: timedelta) -> str:
    """format_duration's text to whole seconds (under 10 s: to a tenth, `400ms`)."""
    seconds = value.total_seconds()
    return format_duration(timedelta(seconds=round(seconds, 1 if seconds < 10 else 0)))


def _minutes(value: timedelta) -> str:
    minutes = math.ceil(value.total_seconds() / 60)
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest:02d} min" if hours else f"{minutes} min"
