"""The DAG ids every layer shares (the DAG factory, the rollback steps, the control plane, the
CLI and the REST client), defined once. Imports nothing."""

from __future__ import annotations

DAG_PREFIX = "plugin_upgrade__"
"""A plan's DAG id is this prefix and the plan id (one DAG per plan)."""
ROLLBACK_DAG_ID = "plugin_upgrade_rollback"
"""The DAG that rolls a finished run back."""


def dag_id_of(plan_id: str) -> str:
    """The DAG id of a plan (one DAG per plan)."""
    return f"{DAG_PREFIX}{plan_id}"


def plan_id_of(dag_id: str) -> str | None:
    """The plan id of a plan's DAG id, None for any other DAG."""
    return dag_id.removeprefix(DAG_PREFIX) if dag_id.startswith(DAG_PREFIX) else None
