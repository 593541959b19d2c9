"""What earlier runs in the ledger tell a planner: measured upgrade times, recorded gate series."""

from __future__ import annotations

from powerx_upgrade.domain.estimate import DEFAULT_LATENCY, Latency, deploy_latency
from powerx_upgrade.ledger import Ledger

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
