"""Airflow listener of the plugin: a grey-upgrade DAG run that fails without its `finalize`
(marked failed from outside: REST `PATCH dagRuns/{id}` or the UI) is settled in the ledger.

Why a listener, not a DAG-level `on_failure_callback`: Airflow 3.3 runs DAG callbacks only for
runs the scheduler itself finishes; marking a run failed through the API kills its running
tasks, skips the pending ones and fires only the listeners' `on_dag_run_failed` (in the
api-server process). The work is `rollout.repair.settle_failed_run` (reconcile's fixes for that
one run), done in a daemon thread so that neither the API request nor the scheduler's loop
waits on the ledger or the platform. A run that went through `finalize` is finished in the
ledger already and is left alone.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from airflow.listeners import hookimpl

from powerx_upgrade.domain.dag_ids import plan_id_of
from powerx_upgrade.rollout.repair import settle_failed_run

log = logging.getLogger(__name__)


def _settle(run_id: str) -> None:
    from powerx_upgrade.orchestration import runtime
    from powerx_upgrade.orchestration.hooks.audit import PowerXAuditHook

    try:
        done = settle_failed_run(
            runtime.ledger(),
            run_id,
            runtime.platform().list_tenants,
            audit_client=PowerXAuditHook(retries=1, timeout=10),
        )
    except Exception:  # a thread of its own: log it; reconcile --fix remains the fallback
        log.exception("settling failed grey-upgrade run %s in the ledger failed", run_id)
        return
    if done:
        log.warning("grey-upgrade run %s failed before finalize; settled: %s", run_id, done)


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    if plan_id_of(str(dag_run.dag_id)) is None:
        return
    threading.Thread(
        target=_settle, args=(str(dag_run.run_id),), name="powerx-settle-failed-run", daemon=True
    ).start()
