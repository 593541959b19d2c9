"""`powerx plugin upgrade` and `powerx plugin status`: trigger a plan run, look at runs."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.markup import escape

from powerx_upgrade import airflow_client as http
from powerx_upgrade.airflow_client import dag_id_of
from powerx_upgrade.cli.plugin.common import EXIT_OK, UsageError, console
from powerx_upgrade.cli.plugin.follow import RunReader, follow
from powerx_upgrade.cli.plugin.guard import connect, guarded
from powerx_upgrade.cli.plugin.inputs import exit_code_for_outcome, timeout_seconds, upgrade_conf
from powerx_upgrade.cli.plugin.render import render_status, runs_table
from powerx_upgrade.cli.plugin.status import RunStatus


@guarded
def cmd_upgrade(args: argparse.Namespace) -> int:
    conf = upgrade_conf(args)
    timeout = timeout_seconds(args.timeout) if args.wait else 0.0
    dag_id = dag_id_of(args.plan)
    with connect(args) as api:
        run_id = api.trigger(dag_id, conf, run_id=args.run_id, note="powerx plugin upgrade")
        console.print(
            f"triggered [bold]{escape(dag_id)}[/] run [bold]{escape(run_id)}[/] -> "
            f"{escape(args.target_version)}" + (" (dry run)" if args.dry_run else "")
        )
        console.print(f"run in the UI: {api.base_url}/dags/{dag_id}/runs/{run_id}")
        if not args.wait:
            return EXIT_OK
        reader = RunReader(api, run_id, dag_id)
        status = follow(reader, timeout=timeout, poll=args.poll)
        outcome = reader.outcome(status)
    code = exit_code_for_outcome(outcome, dry_run=args.dry_run)
    style = "green" if code == EXIT_OK else "red"
    console.print(
        f"outcome [bold {style}]{escape(str(outcome))}[/] (Airflow run {status.state}); exit {code}"
    )
    return code


@guarded
def cmd_status(args: argparse.Namespace) -> int:
    if args.watch and args.format == "json":
        raise UsageError("--watch shows a live table; --format json gives one look without it")
    with connect(args) as api:
        run_id, dag_id = args.run_id, dag_id_of(args.plan) if args.plan else None
        if run_id is None:
            runs = api.runs(dag_id or "~", dag_id_prefix=None if dag_id else http.DAG_PREFIX)
            if not runs:
                console.print(f"no runs of {escape(dag_id or 'any plan')} yet")
                return EXIT_OK
            if dag_id is None:
                console.print(runs_table(runs[:10]))
                return EXIT_OK
            run_id = runs[0]["dag_run_id"]
        reader = RunReader(api, run_id, dag_id)
        if args.watch:
            status = follow(reader, timeout=float("inf"), poll=args.poll)
        else:
            status = reader.read()
            if args.format == "table":
                console.print(render_status(status))
    if args.format == "json":
        print(json.dumps(_status_json(status), indent=2, default=str))
    return EXIT_OK


def _status_json(status: RunStatus) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(status)
