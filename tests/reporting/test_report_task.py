"""The report task in the DAG: where it sits, its operator, and the UI link to the report."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization

from powerx_upgrade.orchestration.operators.report import ReportLink
from powerx_upgrade.reporting.store import REPORTS_ENV, REPORTS_URL_ENV
from tests.conftest import CONFIG_DIR, ROOT

pytestmark = pytest.mark.dags

RUN_ID = "manual__2026-03-07T02:00:00+00:00"


@pytest.fixture(scope="module")
def dag():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POWERX_UPGRADE_CONFIG", str(CONFIG_DIR))
        bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags["plugin_upgrade__crm-sync-standard"]


def test_report_runs_after_record_on_every_outcome_and_before_result(dag):
    task = dag.get_task("finalize.report")
    assert type(task).__name__ == "ReportOperator"
    assert task.trigger_rule == "all_done"
    assert task.upstream_task_ids == {"finalize.record"}
    assert task.downstream_task_ids == {"finalize.result"}
    assert task.plan_id == "crm-sync-standard"
    assert [link.name for link in task.operator_extra_links] == ["Run report"]


def test_the_link_survives_serialization_without_a_plugin(dag):
    # Airflow 3 keeps {name: xcom key}; the UI reads the link the worker pushed as an XCom.
    serialized = DagSerialization.to_dict(dag)
    tasks = serialized["dag"]["tasks"]
    report = next(t["__var"] for t in tasks if t["__var"]["task_id"] == "finalize.report")
    assert report["_operator_extra_links"] == {"Run report": "_link_ReportLink"}
    restored = DagSerialization.from_dict(serialized).get_task("finalize.report")
    assert [link.name for link in restored.operator_extra_links] == ["Run report"]


def _ti(result):
    def pull(task_ids):
        if isinstance(result, Exception):
            raise result
        return result

    return SimpleNamespace(task_id="finalize.report", run_id=RUN_ID, xcom_pull=pull)


def test_the_link_is_the_html_the_task_wrote(dag):
    task = dag.get_task("finalize.report")
    written = {"link": "https://reports.example/crm-sync-standard/r/report.html"}
    assert ReportLink().get_link(task, ti_key=_ti(written)) == written["link"]


def test_without_a_result_the_link_points_where_the_report_would_be(dag, monkeypatch, tmp_path):
    task = dag.get_task("finalize.report")
    monkeypatch.delenv(REPORTS_URL_ENV, raising=False)
    monkeypatch.setenv(REPORTS_ENV, str(tmp_path))
    link = ReportLink().get_link(task, ti_key=_ti(RuntimeError("no xcom")))
    assert link == (
        f"file://{tmp_path}/crm-sync-standard/manual__2026-03-07T02_00_00_00_00-d949fc73a6/report.html"
    )
    monkeypatch.setenv(REPORTS_URL_ENV, "https://reports.example/grey/")
    assert ReportLink().get_link(task, ti_key=_ti(None)) == (
        "https://reports.example/grey/crm-sync-standard/"
        "manual__2026-03-07T02_00_00_00_00-d949fc73a6/report.html"
    )


def test_the_report_step_still_writes_when_the_ledger_cannot_be_read(monkeypatch, tmp_path):
    from powerx_upgrade.config import load_config
    from powerx_upgrade.orchestration import runtime, tasks

    plan = load_config([CONFIG_DIR]).plans["crm-sync-standard"]
    pulled = {"preflight.validate": {"run_id": RUN_ID}, "finalize.record": None}
    ti = SimpleNamespace(xcom_pull=lambda task_ids: pulled[task_ids])
    run = SimpleNamespace(run_id=RUN_ID, dag_id="plugin_upgrade__crm-sync-standard")
    context = {"ti": ti, "dag_run": run, "params": {"target_version": "2.4.0", "reason": "x"}}
    monkeypatch.setattr(tasks, "get_current_context", lambda: context)
    monkeypatch.setattr(tasks, "_ti", lambda: ti)

    def broken():
        raise OSError("database is unreachable")

    monkeypatch.setattr(runtime, "ledger", broken)
    monkeypatch.setenv(REPORTS_ENV, str(tmp_path))
    monkeypatch.delenv(REPORTS_URL_ENV, raising=False)
    result = tasks.report(plan)
    assert result["outcome"] == "failed"
    folder = tmp_path / "crm-sync-standard" / "manual__2026-03-07T02_00_00_00_00-d949fc73a6"
    assert sorted(p.name for p in folder.iterdir()) == [
        "postmortem.md",
        "report.html",
        "report.json",
        "report.md",
    ]
    assert "database is unreachable" in (folder / "report.md").read_text(encoding="utf-8")
    assert result["link"] == f"file://{folder}/report.html"
