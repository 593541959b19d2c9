"""What earlier runs in the ledger tell a planner: measured upgrade times, recorded gate series."""

from __future__ import annotations

from powerx_upgrade.domain.backtest import RecordedBatch, RecordedPoke, RecordedRun
from powerx_upgrade.domain.estimate import DEFAULT_LATENCY, Latency, deploy_latency
from powerx_upgrade.domain.measurement import TenantStats
from powerx_upgrade.domain.replay import MARKER
from powerx_upgrade.ledger import GateRecord, Ledger

RECENT_RUNS = 20
"""Runs of the plugin whose upgrades measure the deploy latency (newest first)."""


def measured_latency(ledger: Ledger, plugin: str, runs: int = RECENT_RUNS) -> Latency:
    """The median start-to-end time of the plugin's settled upgrades (succeeded, not a no-op:
    a tenant already on the version costs nothing) in its last `runs` runs; the default when
    there are none. Dry runs are left out: they call nothing."""
    durations: list[float] = []
    used = 0
    for run in ledger.runs(plugin=plugin, limit=runs):
        if run.dry_run:
            continue
        found = [
            (a.finished_at - a.started_at).total_seconds()
            for a in ledger.actions(run.run_id, kind="upgrade", state="succeeded")
            if a.finished_at is not None and not a.noop
        ]
        used += 1 if found else 0
        durations += found
    latency = deploy_latency(plugin, durations, used, DEFAULT_LATENCY)
    return latency


class RunNotFound(ValueError):
    """A run id the ledger does not know."""


def recorded_run(ledger: Ledger, run_id: str) -> RecordedRun:
    """A run's gate series as the ledger keeps it: per batch each poke's time and input (when
    it was recorded), and the live verdict."""
    run = ledger.get_run(run_id)
    if run is None:
        known = ", ".join(r.run_id for r in ledger.runs(limit=5)) or "none"
        raise RunNotFound(f"--run {run_id!r}: no such run in the ledger (latest: {known})")
    by_batch: dict[int, list[GateRecord]] = {}
    for record in ledger.gate_evaluations(run_id):
        by_batch.setdefault(record.batch_index, []).append(record)
    batches = tuple(_batch(index, records) for index, records in sorted(by_batch.items()))
    baseline = run.baseline if isinstance(run.baseline, dict) else {}
    return RecordedRun(
        run_id=run.run_id,
        plan_id=run.plan_id,
        outcome=run.outcome,
        planned=tuple(int(b["index"]) for b in (run.batches or [])),
        batches=batches,
        pre_upgrade={t: TenantStats.from_json(s) for t, s in baseline.items()},
    )


def _batch(index: int, records: list[GateRecord]) -> RecordedBatch:
    finals = [r for r in records if r.final]
    last_final = finals[-1] if finals else None
    pokes = []
    for record in records:
        if record.final:
            continue
        found = next((m for m in record.measurements if m.get("metric") == MARKER), None)
        pokes.append(RecordedPoke(record.evaluated_at, found.get("input") if found else None))
    # the live verdict came at the last poke, whose row holds its input (the verdict's own row
    # is written after the gate ends); without poke rows, at the verdict's record
    live_at = pokes[-1].at if pokes and pokes[-1].input else None
    if last_final is not None and live_at is None:
        live_at = last_final.evaluated_at
    return RecordedBatch(
        index=index,
        pokes=tuple(pokes),
        live_phase=last_final.phase if last_final else None,
        live_reason=(last_final.reason if last_final else "no verdict recorded"),
        live_at=live_at,
    )
