"""Builds the run-time clients of a task from Airflow connections: ledger, hooks, recorder."""

from __future__ import annotations

import functools
import json
from typing import Any

from powerx_upgrade.config import monitoring_names
from powerx_upgrade.ledger import Ledger, default_ledger_url
from powerx_upgrade.orchestration.hooks.audit import PowerXAuditHook
from powerx_upgrade.orchestration.hooks.monitoring import PowerXMonitoringHook
from powerx_upgrade.orchestration.hooks.notify import PowerXNotifyHook
from powerx_upgrade.orchestration.hooks.platform import PowerXPlatformHook
from powerx_upgrade.orchestration.names import VALIDATE
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.record import Recorder
from powerx_upgrade.rollout.services import Services

LEDGER_CONN_ID = "powerx_ledger"


def ledger_url() -> str:
    """The ledger's SQLAlchemy URL: the `powerx_ledger` connection (its extra `url`, or the
    connection's own URI), else an SQLite file under $AIRFLOW_HOME."""
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(LEDGER_CONN_ID)
    except Exception:  # no such connection: the default file
        return default_ledger_url()
    extra = conn.extra_dejson or {}
    if extra.get("url"):
        return str(extra["url"])
    uri = conn.get_uri()
    return uri.replace("postgres://", "postgresql://", 1)


@functools.cache
def _ledger(url: str) -> Ledger:
    return Ledger(url)


def ledger() -> Ledger:
    return _ledger(ledger_url())


def platform() -> PowerXPlatformHook:
    # The rollout steps retry per tenant themselves (deploy.retries); no second layer here.
    return PowerXPlatformHook(retries=0)


def monitoring() -> PowerXMonitoringHook:
    return PowerXMonitoringHook(retries=2, names=monitoring_names())


def recorder(ledger_: Ledger | None = None) -> Recorder:
    return Recorder(
        ledger_ or ledger(),
        PowerXAuditHook(retries=1, timeout=10),
        PowerXNotifyHook(retries=1, timeout=10),
    )


def services() -> Services:
    """A rollout step's clients: the ledger, its recorder, the platform, StatsD metrics."""
    from powerx_upgrade.orchestration import metrics

    shared = ledger()
    return Services(shared, recorder(shared), platform(), metrics)


def run_context(ti: Any) -> RunContext:
    """The run's context, as `preflight.validate` resolved it (its XCom)."""
    data = ti.xcom_pull(task_ids=VALIDATE)
    if not data:
        raise RuntimeError(f"{VALIDATE} left no run context: the run cannot go on")
    if isinstance(data, str):
        data = json.loads(data)
    return RunContext.from_dict(data)
