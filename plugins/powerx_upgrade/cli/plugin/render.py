"""The status of a run, and a list of runs, as rich tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from powerx_upgrade.airflow_client import plan_id_of
from powerx_upgrade.cli.plugin.common import OUTCOME_STYLE, VERDICT_STYLE
from powerx_upgrade.cli.plugin.status import RunStatus


def render_status(status: RunStatus) -> RenderableType:
    """A Rich view of a run: header, one row per batch, controls and human prompts."""
    outcome = status.outcome or "-"
    header = Text.assemble(
        (f"{status.plan_id or status.dag_id}", "bold"),
        f"  run {status.run_id}  ",
        f"-> {status.target_version or '?'}  ",
        f"state {status.state or '?'}  outcome ",
        (outcome, OUTCOME_STYLE.get(outcome, "bold red" if status.outcome else "")),
    )
    table = Table(title_justify="left", expand=False)
    for column in ("batch", "tenants", "deployed", "failed", "verdict", "decision", "why"):
        table.add_column(column, overflow="fold")
    for row in status.batches:
        table.add_row(
            f"{row.index} {row.name}".strip(),
            row.tenants,
            row.deployed,
            row.failed,
            Text(row.verdict, style=VERDICT_STYLE.get(row.verdict, "")),
            row.decision,
            row.reason[:400],
        )
    parts: list[RenderableType] = [header, table]
    if status.takeover:
        parts.append(Text("manual takeover: every batch waits for a human decision", "bold"))
    parts += [Text(f"waiting for a human: {line}", style="yellow") for line in status.waiting]
    if status.controls:
        parts.append(_controls_table(status.controls))
    if status.approvals:
        parts.append(
            Text(
                "approvals: "
                + "; ".join(
                    f"{a.get('action')} by {a.get('subject')} ({a.get('via')}, "
                    f"jti {str(a.get('jti'))[:8]})"
                    for a in status.approvals
                ),
                style="dim",
            )
        )
    if status.source == "airflow":
        parts.append(
            Text("(from Airflow's REST API: the control-plane API is not available)", "dim")
        )
    return Group(*parts)


def _controls_table(controls: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="operator requests", title_justify="left")
    for column in ("kind", "batch", "by", "requested", "outcome"):
        table.add_column(column, overflow="fold")
    for control in controls:
        table.add_row(
            str(control.get("kind")),
            str(control.get("batch_index") or "-"),
            f"{control.get('actor') or '?'} via {control.get('via') or '?'}",
            str(control.get("requested_at") or "-")[:19],
            str(control.get("outcome") or ("pending" if not control.get("applied_at") else "-")),
        )
    return table


def runs_table(runs: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(title="latest plan runs", title_justify="left")
    for column in ("plan", "run", "state", "version", "started"):
        table.add_column(column, overflow="fold")
    for run in runs:
        table.add_row(
            plan_id_of(str(run["dag_id"])) or str(run["dag_id"]),
            str(run["dag_run_id"]),
            str(run.get("state")),
            str((run.get("conf") or {}).get("target_version") or "-"),
            str(run.get("start_date") or "-")[:19],
        )
    return table
