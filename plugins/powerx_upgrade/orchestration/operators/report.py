"""The report task's operator: a PythonOperator with an extra link to the run's HTML report."""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import BaseOperatorLink

from powerx_upgrade.domain.models import Plan
from powerx_upgrade.orchestration import names
from powerx_upgrade.reporting import RunIdentity, report_link

DEFAULT_AIRFLOW_URL = "http://localhost:8080"


class ReportLink(BaseOperatorLink):
    """The "Run report" link of the report task: the HTML report the task wrote.

    Airflow 3 evaluates the link in the worker when the task ends and keeps it as an XCom
    (`_link_ReportLink`); the UI only reads that XCom, so no plugin has to import this class.
    """

    name = "Run report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        pull = getattr(ti_key, "xcom_pull", None)
        if pull is not None:  # the task's own result names the file it wrote
            try:
                written = pull(task_ids=ti_key.task_id)
            except Exception:  # no result (the task failed): fall back to where it would be
                written = None
            if isinstance(written, dict) and written.get("link"):
                return str(written["link"])
        return report_link(
            getattr(operator, "plan_id", "unknown"), ti_key.run_id, api_base_url=api_base_url()
        )


class ReportOperator(PythonOperator):
    """Builds, renders and stores the run's report (`python_callable`), and links to it.

    :param plan_id: the plan, for the report's place (`<base>/<plan_id>/<run_id>/`).
    """

    operator_extra_links = (ReportLink(),)

    def __init__(self, *, plan_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan_id = plan_id


def api_base_url() -> str | None:
    """The api-server's configured address (`[api] base_url`), or None when it is not set: the
    report link then points at the stored file instead of the control-plane API's view."""
    from airflow.sdk import conf

    return conf.get("api", "base_url", fallback=None) or None


def airflow_base_url() -> str:
    """The Airflow UI's address (`[api] base_url`), for the report's link back to the run."""
    from airflow.sdk import conf

    return str(conf.get("api", "base_url", fallback=None) or DEFAULT_AIRFLOW_URL)


def run_identity(plan: Plan, context: Any, *, settled: dict[str, Any] | None) -> RunIdentity:
    """What the DAG knows of its run, for a report even when the ledger has no record of it."""
    run = context["dag_run"]
    params = dict(context.get("params") or {})
    validated = context["ti"].xcom_pull(task_ids=names.VALIDATE)
    return RunIdentity(
        run_id=run.run_id,
        dag_id=run.dag_id,
        plan_id=plan.id,
        plugin=plan.plugin,
        target_version=str(params.get("target_version") or plan.target_version or "") or None,
        triggered_by=getattr(run, "triggering_user_name", None) or None,
        reason=params.get("reason") or None,
        conf={k: v for k, v in params.items() if k != "artifact_signature"},
        error=None
        if validated
        else f"{names.VALIDATE} refused the run (its task log names every problem)",
        outcome=(settled or {}).get("outcome"),
    )
