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
import os
import threading
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
    audit service (a window that is open, a batch's shards) never loads the HTTP stack.

    Built once however many threads ask at the same time: a rollback shard's first 50 calls
    start together, and without the lock each built its own hook (its own connection lookup
    through the Execution API, its own session and TCP connections) while the first one was
    still importing the HTTP stack."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._built: Any = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # copy/pickle probes, or before __init__: never build for them
            raise AttributeError(name)
        built = self._built
        if built is None:
            with self._lock:
                if self._built is None:
                    self._built = self._build()
                built = self._built
        return getattr(built, name)


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
    rollback_shards`, else the executor's slots (`[core] parallelism`), and on the
    LocalExecutor no more than this machine's CPUs. More shards than slots never run at once;
    each extra one costs a task process and a scheduler hop and adds no concurrency, so the
    shards grow instead (docs/deployment.md). On the LocalExecutor every shard runs on this
    machine, and a shard's HTTP client alone keeps most of a CPU busy (0.7 ms of CPU per call:
    50 calls in flight at 50 ms is 1,000 calls a second): shards beyond the CPUs wait for one.
    None: no limit."""
    from airflow.sdk import conf

    chosen = airflow_setting("rollback_shards")
    try:
        most = int(chosen) if chosen else conf.getint("core", "parallelism", fallback=0)
    except ValueError:
        raise ValueError(
            f"[powerx_upgrade] rollback_shards: {chosen!r} is not a whole number"
        ) from None
    if not chosen and on_this_machine(conf.get("core", "executor", fallback="")):
        most = min(most, cpus()) if most > 0 else cpus()
    return most if most > 0 else None


def on_this_machine(executor: str) -> bool:
    """Whether every configured executor runs its tasks on the scheduler's machine (the
    LocalExecutor, by name or class path; `[core] executor` may list several)."""
    names = [e.strip().split(".")[-1].split(":")[-1] for e in executor.split(",") if e.strip()]
    return bool(names) and all(n == "LocalExecutor" for n in names)


def cpus() -> int:
    """The CPUs this process may run on (a container's or taskset's limit, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def run_context(ti: Any) -> RunContext:
    """The run's context, as `preflight.validate` resolved it (its XCom)."""
    data = ti.xcom_pull(task_ids=VALIDATE)
    if not data:
        raise RuntimeError(f"{VALIDATE} left no run context: the run cannot go on")
    if isinstance(data, str):
        data = json.loads(data)
    return RunContext.from_dict(data)
