"""The names Airflow's REST API callers share: DAG ids, headers, environment variables, the
HITL settle time. Imports nothing."""

from __future__ import annotations

DEFAULT_AIRFLOW_URL = "http://localhost:8080"
CONTROL_PLANE_PREFIX = "/internal/version/upgrade"
"""Where Airflow's api-server mounts the control-plane API."""
CLIENT_HEADER = "X-PowerX-Client"
"""Sent as `cli` on every control-plane call: the ledger records such requests as via `cli`."""
APPROVAL_HEADER = "X-Approval-Token"
"""The approval token of a critical control-plane operation."""
DAG_PREFIX = "plugin_upgrade__"
"""A plan's DAG id is this prefix and the plan id (one DAG per plan)."""
ROLLBACK_DAG_ID = "plugin_upgrade_rollback"
"""The DAG that rolls a finished run back."""

ENV_URL = "POWERX_AIRFLOW_URL"
ENV_TOKEN = "POWERX_AIRFLOW_TOKEN"
ENV_USERNAME = "POWERX_AIRFLOW_USERNAME"
ENV_PASSWORD = "POWERX_AIRFLOW_PASSWORD"
ENV_APPROVAL_TOKEN = "POWERX_APPROVAL_TOKEN"

HITL_SETTLE_SECONDS = 5.0
"""An answer to a human-in-the-loop request goes out no sooner than this after the request was
written: Airflow 3.3's scheduler can fail a task whose answer arrives before it processed the
exit of the worker that parked it (the resumed try and the parked one share a key); a human
never answers that fast, a script or the API can."""


def dag_id_of(plan_id: str) -> str:
    """The DAG id of a plan (one DAG per plan)."""
    return f"{DAG_PREFIX}{plan_id}"


def plan_id_of(dag_id: str) -> str | None:
    """The plan id of a plan's DAG id, None for any other DAG."""
    return dag_id.removeprefix(DAG_PREFIX) if dag_id.startswith(DAG_PREFIX) else None
