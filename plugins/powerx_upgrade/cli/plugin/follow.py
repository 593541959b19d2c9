"""Reading a run (control plane first, Airflow's REST API as the fallback) and following it
until it ends."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.live import Live
from rich.markup import escape

from powerx_upgrade import airflow_client as http
from powerx_upgrade.airflow_client import AirflowClient, ControlPlane, ControlPlaneMissing
from powerx_upgrade.cli.plugin.common import console, err_console
from powerx_upgrade.cli.plugin.render import render_status
from powerx_upgrade.cli.plugin.status import (
    BATCH_TASK,
    RunStatus,
    status_from_airflow,
    status_from_api,
    waiting_prompts,
)
from powerx_upgrade.orchestration import names


class RunReader:
    """Reads a run's status: `GET /runs/{id}` of the control plane when it is installed and
    knows the run, else Airflow's REST API (run state, task instances, XComs).

    :param api: the REST client.
    :param run_id: the run.
    :param dag_id: its DAG when known (else looked up once).
    """

    def __init__(self, api: AirflowClient, run_id: str, dag_id: str | None = None):
        self.api = api
        self.control = ControlPlane(api)
        self.run_id = run_id
        self.dag_id = dag_id
        self.control_plane = True
        self._plan: Mapping[str, Any] | None = None
        self._gates: dict[int, Mapping[str, Any]] = {}
        self._in_ledger_seen = False

    def read(self) -> RunStatus:
        if self.dag_id is None:
            payload = self._from_control_plane()
            self.dag_id = (payload or {}).get("dag_id") or self.api.find_run(self.run_id)["dag_id"]
        else:
            payload = self._from_control_plane() if self._in_ledger() else None
        run = self.api.run(self.dag_id, self.run_id)
        waiting = waiting_prompts(self.api.hitl_details(self.dag_id, self.run_id, pending=True))
        if payload is not None:
            return status_from_api(payload, state=run.get("state"), waiting=waiting)
        return self._from_airflow(run, waiting)

    def _in_ledger(self) -> bool:
        """Whether the run is in the ledger yet (`preflight.validate` starts it there): until
        then the control plane would only answer 404, and audit each one as a refusal."""
        if not self._in_ledger_seen and self.control_plane:
            try:
                ti = self.api.task_instance(str(self.dag_id), self.run_id, names.VALIDATE)
            except http.NotFound:  # a DAG without that task: ask the control plane directly
                ti = {"state": "success"}
            self._in_ledger_seen = ti.get("state") == "success"
        return self._in_ledger_seen

    def _from_control_plane(self) -> dict[str, Any] | None:
        if not self.control_plane:
            return None
        try:
            return self.control.run(self.run_id)
        except ControlPlaneMissing:
            self.control_plane = False
            return None
        except http.NotFound:  # not in the ledger (yet): the run may not have started
            return None

    def _from_airflow(self, run: Mapping[str, Any], waiting: Sequence[str]) -> RunStatus:
        dag_id, run_id = str(self.dag_id), self.run_id
        tis = self.api.task_instances(dag_id, run_id)
        done = {ti["task_id"] for ti in tis if ti.get("state") in ("success", "failed")}
        if self._plan is None and names.PLAN in done:
            self._plan = self.api.xcom(dag_id, run_id, names.PLAN)
        for task in sorted(done):
            match = BATCH_TASK.match(task)
            if match and match[2] == "gate" and int(match[1]) not in self._gates:
                self._gates[int(match[1])] = self.api.xcom(dag_id, run_id, task) or {}
        record = self.api.xcom(dag_id, run_id, names.RECORD) if (names.RECORD in done) else None
        return status_from_airflow(
            run, tis, plan_summary=self._plan, gates=self._gates, record=record, waiting=waiting
        )

    def outcome(self, status: RunStatus) -> str | None:
        """The run's outcome: the control plane's, else `finalize.record`'s XCom."""
        if status.outcome:
            return status.outcome
        record = self.api.xcom(str(self.dag_id), self.run_id, names.RECORD)
        return record.get("outcome") if isinstance(record, Mapping) else None


def follow(
    reader: RunReader,
    *,
    timeout: float,
    poll: float,
    sleep: Callable[[float], None] = time.sleep,
) -> RunStatus:
    """Read the run until Airflow says it ended; live table on a terminal, a line per change
    elsewhere (CI logs). Raises TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    if console.is_terminal:
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            return _poll(reader, deadline, poll, sleep, lambda s: live.update(render_status(s)))
    seen: dict[str, str] = {}
    status = _poll(reader, deadline, poll, sleep, lambda s: _print_changes(s, seen))
    console.print(render_status(status))
    return status


def _poll(
    reader: RunReader,
    deadline: float,
    poll: float,
    sleep: Callable[[float], None],
    show: Callable[[RunStatus], None],
) -> RunStatus:
    state, trouble = "unknown", None
    while True:
        try:
            status = reader.read()
        except (http.Unreachable, http.ServerError) as exc:
            # A long rollout outlives an api-server restart: keep looking until the deadline.
            if trouble is None:
                err_console.print(f"[yellow]cannot read the run, retrying:[/] {escape(str(exc))}")
            trouble = exc
        else:
            trouble, state = None, str(status.state)
            show(status)
            if status.ended:
                return status
        if time.monotonic() >= deadline:
            last = f"; last error: {trouble}" if trouble else ""
            raise TimeoutError(f"run {reader.run_id} did not end in time (state {state}){last}")
        sleep(poll)


def _print_changes(status: RunStatus, seen: dict[str, str]) -> None:
    lines = {"run": f"run {status.run_id}: {status.state}"}
    for row in status.batches:
        if row.verdict == "-" and row.decision == "-":
            continue  # nothing to say about this batch yet
        lines[f"batch {row.index}"] = (
            f"batch {row.index} {row.name}".strip()
            + f": verdict {row.verdict}, decision {row.decision}"
            + (f" ({row.reason[:400]})" if row.reason else "")
        )
    for line in status.waiting:
        lines[f"waiting {line}"] = f"waiting for a human: {line}"
    for key, line in lines.items():
        if seen.get(key) != line:
            seen[key] = line
            console.print(escape(line))
