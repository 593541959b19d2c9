"""`powerx plugin report show`: a run's stored report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

from powerx_upgrade import airflow_client as http
from powerx_upgrade.airflow_client import (
    AirflowClient,
    ApiError,
    ControlPlane,
    ControlPlaneMissing,
    dag_id_of,
)
from powerx_upgrade.cli.plugin.common import EXIT_OK
from powerx_upgrade.cli.plugin.guard import connect, guarded
from powerx_upgrade.orchestration import names


@guarded
def cmd_report_show(args: argparse.Namespace) -> int:
    with connect(args) as api:
        try:
            text = ControlPlane(api).report(args.run_id, args.format)
        except ControlPlaneMissing as missing:
            text = _report_from_xcom(api, args, missing)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


def _report_from_xcom(api: AirflowClient, args: argparse.Namespace, missing: ApiError) -> str:
    """Without the control plane: the report file named in `finalize.report`'s XCom, when it
    is on a filesystem this machine can read."""
    dag_id = dag_id_of(args.plan) if args.plan else api.find_run(args.run_id)["dag_id"]
    stored = api.xcom(dag_id, args.run_id, names.REPORT) or {}
    uri = (stored.get("files") or {}).get(f"report.{args.format}")
    if not uri:
        raise http.NotFound(
            missing.method, missing.url, 404, f"run {args.run_id} has no report.{args.format} yet"
        )
    parsed = urlparse(uri)
    path = Path(unquote(parsed.path)) if parsed.scheme in ("", "file") else None
    if path is None or not path.is_file():
        raise ControlPlaneMissing(
            missing.method,
            missing.url,
            404,
            f"{missing.detail}; the report is stored at {uri}, which this machine cannot read",
        )
    return path.read_text(encoding="utf-8")
