"""Builds the run-time clients of a task from Airflow connections: ledger, hooks, recorder.

The hooks are imported when a task first asks for one, not with this module: the DAG file
imports it (through the task functions and operators), every task process parses the DAG file,
and the HTTP stack under the hooks (the http provider, aiohttp, requests) is about 60 % of that
parse; a task that needs no hook (validate, window, a batch's start) never loads it
(docs/performance.md, "Fewer scheduler hops").
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from powerx_upgrade.config import airflow_setting, monitoring_names
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.orchestration.ledger_connection import resolve_ledger_url
from powerx_upgrade.orchestration.names import VALIDATE
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.record import Recorder
from powerx_upgrade.rollout.services import Services

if TYPE_CHECKING:
    from powerx_upgrade.orchestration.hooks.monitoring import PowerXMonitoringHook
    from powerx_upgrade.orchestration.hooks.platform import PowerXPlatformHook


def ledger_url() -> str:
    """The ledger's SQLAlchemy URL (`ledger_connection.resolve_ledger_url`: the `powerx_ledger`
    connection; the SQLite file only when it is not defined; any other problem raises)."""
    return resolve_ledger_url()


@functools.cache
def _ledger(url: str) -> Ledger:
    return Ledger(url)


def ledger() -> Ledger:
    return _ledger(ledger_url())


def platform() -> PowerXPlatformHook:
    from powerx_upgrade.orchestration.hooks.platform import PowerXPlatformHook

    # The rollout steps retry per tenant themselves (deploy.retries); no second layer here.
    return PowerXPlatformHook(retries=0)


def monitoring() -> PowerXMonitoringHook:
    from powerx_upgrade.orchestration.hooks.monitoring import PowerXMonitoringHook

    return PowerXMonitoringHook(retries=2, names=monitoring_names())


class OnFirstUse:
    """A client built when a step first uses it: a step that never calls the platform or the
    audit service (a window that is open, a batch's shards) never loads the HTTP stack."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._built: Any = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # copy/pickle probes, or before __init__: never build for them
            raise AttributeError(name)
        if self._built is None:
            self._built = self._build()
        return getattr(self._built, name)


def _audit_hook() -> Any:
    from powerx_upgrade.orchestration.hooks.audit import PowerXAuditHook

    return PowerXAuditHook(retries=1, timeout=10)


def _notify_hook() -> Any:
    from powerx_upgrade.orchestration.hooks.notify import PowerXNotifyHook

    return PowerXNotifyHook(retries=1, timeout=10)


def recorder(ledger_: Ledger | None = None) -> Recorder:
    return Recorder(ledger_ or ledger(), OnFirstUse(_audit_hook), OnFirstUse(_notify_hook))


def services() -> Services:
    """A rollout step's clients: the ledger, its recorder, the platform, StatsD metrics."""
    from powerx_upgrade.orchestration import metrics

    shared = ledger()
    return Services(shared, recorder(shared), OnFirstUse(platform), metrics)


def rollback_shards() -> int | None:
    """At most how many mapped rollback shards a rollback is cut into: `[powerx_upgrade]
    rollback_shards`, else the executor's slots (`[core] parallelism`). More shards than slots
    never run at once; each extra one costs a task process and a scheduler hop and adds no
    concurrency, so the shards grow instead (docs/deployment.md). None: no limit."""
    from airflow.sdk import conf

    chosen = airflow_setting("rollback_shards")
    try:
        most = int(chosen) if chosen else conf.getint("core", "parallelism", fallback=0)
    except ValueError:
        raise ValueError(
            f"[powerx_upgrade] rollback_shards: {chosen!r} is not a whole number"
        ) from None
    return most if most > 0 else None


def run_context(ti: Any) -> RunContext:
    """The run's context, as `preflight.validate` resolved it (its XCom)."""
    data = ti.xcom_pull(task_ids=VALIDATE)
    if not data:
        raise RuntimeError(f"{VALIDATE} left no run context: the run cannot go on")
    if isinstance(data, str):
        data = json.loads(data)
    return RunContext.from_dict(data)
