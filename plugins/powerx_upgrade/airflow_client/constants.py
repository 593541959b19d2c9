"""The names Airflow's REST API callers share: DAG ids (from `domain.dag_ids`, where the DAG
factory takes them too), headers, environment variables, the HITL settle time."""

from __future__ import annotations

from powerx_upgrade.domain.dag_ids import (  # noqa: F401 - re-exported for the callers
    DAG_PREFIX,
    ROLLBACK_DAG_ID,
    dag_id_of,
    plan_id_of,
)

DEFAULT_AIRFLOW_URL = "http://localhost:8080"
CONTROL_PLANE_PREFIX = "/internal/version/upgrade"
"""Where Airflow's api-server mounts the control-plane API."""
CLIENT_HEADER = "X-PowerX-Client"
"""Sent as `cli` on every control-plane call: the ledger records such requests as via `cli`."""
APPROVAL_HEADER = "X-Approval-Token"
"""The approval token of a critical control-plane operation."""

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
