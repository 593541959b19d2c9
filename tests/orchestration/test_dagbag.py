"""DAG integrity: every example plan loads as a DAG; an invalid plan shows up broken, visibly,
without taking the valid ones down."""

from __future__ import annotations

import textwrap

import pytest
from airflow.dag_processing.dagbag import DagBag

from tests.conftest import CONFIG_DIR, ROOT

pytestmark = pytest.mark.dags

DAGS = ROOT / "dags"


def bag(monkeypatch: pytest.MonkeyPatch, config) -> DagBag:
    monkeypatch.setenv("POWERX_UPGRADE_CONFIG", str(config))
    return DagBag(dag_folder=str(DAGS))


def test_example_plans_load_without_import_errors(monkeypatch):
    dagbag = bag(monkeypatch, CONFIG_DIR)
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {
        "plugin_upgrade__crm-sync-standard",
        "plugin_upgrade__crm-sync-bronze",
        "plugin_upgrade__billing-export-cautious",
        "plugin_upgrade__crm-sync-demo",
        "plugin_upgrade__crm-sync-demo-representative",
        "plugin_upgrade_rollback",
    }
    dag = dagbag.dags["plugin_upgrade__crm-sync-standard"]
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert {"grey-upgrade", "plugin:crm-sync", "policy:standard-grey"} <= set(dag.tags)
    assert "upgrade_policies.yaml:" in dag.doc_md
    assert dag.timetable.summary == "0 2 * * SAT"
    assert str(dag.timetable._timezone.name) == "Asia/Shanghai"
    assert set(dag.params.keys()) >= {
        "target_version",
        "artifact_uri",
        "artifact_sha256",
        "artifact_signature",
        "dry_run",
        "reason",
    }
    assert dag.params["target_version"] == "2.4.0"
    assert (
        type(dagbag.dags["plugin_upgrade__billing-export-cautious"].timetable).__name__
        == "NullTimetable"
    )


def test_task_ids_follow_the_description(monkeypatch):
    dag = bag(monkeypatch, CONFIG_DIR).dags["plugin_upgrade__crm-sync-standard"]
    ids = set(dag.task_ids)
    assert {
        "preflight.validate",
        "preflight.verify_artifact",
        "batch_1.deploy",
        "batch_4.gate",
        "batch_3.approve",
        "rollback.scope",
        "rollback.execute",
        "finalize.record",
        "finalize.result",
    } <= ids
    gate = dag.get_task("batch_2.gate")
    assert gate.poke_interval == 30 and type(gate).__name__ == "BatchGateSensor"
    assert dag.get_task("batch_2.pause").response_timeout.total_seconds() == 3600
    assert dag.get_task("batch_2.pause").defaults == ["Roll back"]
    assert dag.get_task("batch_3.approve").defaults == ["Reject"]
    assert dag.get_task("finalize.record").trigger_rule == "all_done"


def test_an_invalid_plan_is_a_visibly_broken_dag_beside_the_valid_ones(monkeypatch, tmp_path):
    (tmp_path / "plans").mkdir()
    (tmp_path / "upgrade_policies.yaml").write_text(
        textwrap.dedent("""\
        version: 1
        policies:
          std:
            batches: [{ratio: 1.0, bake: 10m}]
            gate: {checks: [{metric: error_rate, op: "<=", limit: 0.05}]}
        plans:
          good: {plugin: crm-sync, policy: std}
          bad: {plugin: crm-sync, policy: sdt}
        """)
    )
    (tmp_path / "plans" / "broken.yaml").write_text("plans:\n  x: {plugin: a, policy: std\n")
    dagbag = bag(monkeypatch, tmp_path)
    assert dagbag.import_errors == {}
    assert "plugin_upgrade__good" in dagbag.dag_ids
    broken = dagbag.dags["plugin_upgrade__bad"]
    assert "invalid-plan" in broken.tags
    assert "upgrade_policies.yaml:8: error: plans.bad.policy: unknown policy 'sdt'" in broken.doc_md
    task = broken.get_task("invalid_plan")
    with pytest.raises(Exception, match="unknown policy 'sdt'"):
        task.python_callable()
    config_error = dagbag.dags["plugin_upgrade__config_error__broken.yaml"]
    assert "invalid YAML" in config_error.doc_md
