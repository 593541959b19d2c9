"""What a rollout step works with: the ledger, the audit/notify recorder, the platform, metrics.

The orchestration layer builds one from Airflow connections; tests build one on a SQLite ledger
with fakes for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from powerx_upgrade.ledger import Ledger
from powerx_upgrade.rollout.metrics import Metrics
from powerx_upgrade.rollout.operations import PlatformClient
from powerx_upgrade.rollout.record import Recorder


@dataclass(frozen=True)
class Services:
    """One step's clients: `ledger`, `recorder` (on that ledger), `platform`, `metrics`."""

    ledger: Ledger
    recorder: Recorder
    platform: PlatformClient
    metrics: Metrics
