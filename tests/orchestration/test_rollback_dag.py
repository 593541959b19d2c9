"""The one-click rollback DAG's shape (as data, then as Airflow objects) and its trigger form."""

from __future__ import annotations

import itertools

import pytest

from powerx_upgrade.orchestration.rollback_dag import (
    RunEndedSensor,
    build_rollback_dag,
    describe_rollback_dag,
)

pytestmark = pytest.mark.dags


def test_the_rollback_dag_reads_resolve_wait_scope_execute_verify_record_report():
    shape = describe_rollback_dag()
    assert shape.dag_id == "plugin_upgrade_rollback" and shape.schedule is None
    chain = ["resolve", "wait", "scope", "execute", "verify", "record", "report"]
    ids = [f"rollback.{step}" for step in chain]
    assert [n.task_id for n in shape.nodes] == ids
    for upstream, downstream in itertools.pairwise(ids):
        assert (upstream, downstream) in shape.edges
    # no tenant to roll back skips execute; verify, record and report still run
    assert ("rollback.scope", "rollback.verify") in shape.edges
    assert {shape.node(t).trigger_rule for t in ids[4:]} == {"all_done"}
    assert shape.node("rollback.execute").mapped_over == "rollback.scope"


def test_the_materialised_dag_has_the_one_click_form_and_waits_without_a_worker_slot():
    dag = build_rollback_dag({})
    assert set(dag.params.keys()) == {
        "run_id",
        "plan_id",
        "scope",
        "reason",
        "request_id",
        "approval_token",
    }
    assert dag.params.get_param("scope").schema["enum"] == [
        "all_upgraded",
        "batch",
        "failed_tenants",
    ]
    assert dag.max_active_runs == 1
    wait = dag.get_task("rollback.wait")
    assert isinstance(wait, RunEndedSensor) and wait.mode == "reschedule" and wait.timeout > 0
    assert "Trigger DAG" in dag.doc_md and "run_id" in dag.doc_md
    assert dag.get_task("rollback.report").operator_extra_links
