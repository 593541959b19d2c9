"""Run controls on whole DAG runs (`airflow dags test` against the sandbox over HTTP, ledger in
SQLite): the `plugin_upgrade_rollback` DAG rolls back a run that has already promoted.

An operator's rollback request ending an active run's gate at its next poke is proven where it
lives, on the live stack with the gate deferred in the triggerer
(tests/stack/test_control_plane_stack.py); the trigger alone: tests/orchestration/test_gate_trigger.py.

A takeover turns batch 1's passing gate into a pause: the run is stopped once its pause task
waits for a human (in `dags test` nobody answers). Adjusted limits changing the verdict at the
next poke: tests/orchestration/test_gate_trigger.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.ledger import Ledger
from tests.airflow_harness import airflow_bin, base_env, dags_test
from tests.conftest import CONFIG_DIR

pytestmark = pytest.mark.e2e

E2E_DAG = "plugin_upgrade__crm-sync-e2e"
ROLLBACK_DAG = "plugin_upgrade_rollback"


@pytest.fixture
def sandbox() -> Iterator[httpx.Client]:
    with (
        running_sandbox(CONFIG_DIR / "scenarios" / "happy.yaml") as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        yield client


def versions(client: httpx.Client) -> dict[str, dict]:
    tenants = client.get("/sandbox/tenants", params={"plugin": "crm-sync"}).json()["tenants"]
    return {t["id"]: t for t in tenants}


def run_dag(airflow_home: Path, client: httpx.Client, tmp_path: Path, dag_id: str, **conf):
    return dags_test(
        airflow_home,
        dag_id,
        sandbox_url=str(client.base_url).rstrip("/"),
        ledger_file=tmp_path / "ledger.db",
        conf=conf,
        extra_env={"POWERX_UPGRADE_REPORTS": str(tmp_path / "reports")},
    )


class WhenDeployed(threading.Thread):
    """Watches the ledger from beside the DAG run; once batch `batch` has deployed and `delay`
    more seconds passed (the gate is polling by then), calls `act(ledger, run_id)` once."""

    def __init__(
        self, ledger_file: Path, batch: int, delay: float, act: Callable[[Ledger, str], object]
    ) -> None:
        super().__init__(daemon=True)
        self.ledger_file, self.batch, self.delay, self.act = ledger_file, batch, delay, act
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        deadline = time.monotonic() + 180
        try:
            while time.monotonic() < deadline:
                if self._deployed():
                    time.sleep(self.delay)
                    book = Ledger(f"sqlite:///{self.ledger_file}")
                    self.result = self.act(book, book.runs()[0].run_id)
                    return
                time.sleep(0.25)
            self.error = TimeoutError(f"batch {self.batch} never deployed")
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _deployed(self) -> bool:
        if not self.ledger_file.exists():
            return False
        book = Ledger(f"sqlite:///{self.ledger_file}")
        runs = book.runs()
        if not runs or not runs[0].batches:
            return False
        planned = next(b for b in runs[0].batches if b["index"] == self.batch)["tenants"]
        done = [
            a
            for a in book.actions(runs[0].run_id, kind="upgrade", batch_index=self.batch)
            if a.finished
        ]
        return len(done) == len(planned)


def test_the_rollback_dag_rolls_back_a_promoted_run_and_rerenders_its_report(
    airflow_home, sandbox, tmp_path
):
    before = versions(sandbox)

    def adjust(book: Ledger, run_id: str):
        return book.request_control(
            run_id,
            "adjust",
            actor="carol",
            via="api",
            payload={"batches": {"2": {"bake": "4s"}}, "deploy_concurrency": 3},
        )

    # on the way: batch 2's bake and the deploy concurrency adjusted while batch 1 bakes
    watcher = WhenDeployed(tmp_path / "ledger.db", batch=1, delay=1, act=adjust)
    watcher.start()
    promoted = run_dag(airflow_home, sandbox, tmp_path, E2E_DAG, reason="to be rolled back")
    watcher.join(timeout=5)
    assert watcher.error is None, watcher.error
    book = Ledger(promoted.ledger_url)
    run = book.runs()[0]
    assert run.outcome == "promoted", promoted.tail()
    adjusted = book.get_control(watcher.result.id)
    assert adjusted.outcome == "applied" and "batch 2: bake 4s" in adjusted.note
    assert run.batches[1]["bake_seconds"] == 4  # re-cut at batch 2's start, audited
    replanned = [r for r in book.audit_records(run.run_id) if r.event == "run.replanned"]
    assert [r.payload["details"]["after"][0]["bake_seconds"] for r in replanned] == [4]
    selected = [t for b in run.batches for t in b["tenants"]]
    assert all(versions(sandbox)[t]["version"] == "2.4.0" for t in selected)
    report_json = tmp_path / "reports" / run.plan_id
    # the control-plane API records the request it hands to the rollback DAG
    asked = book.request_control(
        run.run_id,
        "rollback",
        actor="release-manager@example.com",
        via="cli",
        approval_jti="jti-late-1",
        payload={"reason": "customer reports"},
    )

    result = run_dag(
        airflow_home,
        sandbox,
        tmp_path,
        ROLLBACK_DAG,
        run_id=run.run_id,
        scope="all_upgraded",
        reason="customer reports",
        request_id=asked.id,
    )
    assert result.returncode == 0, result.tail()
    after = versions(sandbox)
    for tenant in selected:  # every tenant back on its version and config before the run
        assert after[tenant]["version"] == before[tenant]["version"] == "2.3.1"
        assert after[tenant]["config_version"] == before[tenant]["config_version"]

    run = book.get_run(run.run_id)
    assert run.outcome == "rolled_back"
    assert run.detail["outcome_before_rollback"] == "promoted"
    assert run.detail["rollback_verification"]["broken"] == []
    assert len(run.detail["rollback_verification"]["verified"]) == len(selected)
    [decided] = [d for d in book.decisions(run.run_id) if d.kind == "rollback"]
    assert (decided.actor, decided.via) == ("release-manager@example.com", "cli")
    assert decided.detail["approval"] == "jti-late-1"
    assert book.get_control(asked.id).outcome == "applied"
    # the rollback's keys never collide with a rollback of the run itself
    keys = [a.idempotency_key for a in book.actions(run.run_id, kind="rollback")]
    assert len(keys) == len(selected) and all(":rollback@" in k for k in keys)
    assert "run.rolled_back.late" in {r.event for r in book.audit_records(run.run_id)}

    # the run's own report, re-rendered: outcome and the rollback with its trigger
    [folder] = list(report_json.iterdir())
    document = json.loads((folder / "report.json").read_text())
    assert document["outcome"] == "rolled_back"
    rollback = document["rollback"]
    assert rollback["counts"]["succeeded"] == rollback["counts"]["verified"] == len(selected)
    assert rollback["trigger"]["actor"] == "release-manager@example.com"
    assert "rolled_back" in (folder / "report.md").read_text()


def stop(process: subprocess.Popen) -> None:
    """Stop a `dags test` we started, with its process group (a waiting HITL task ignores
    SIGTERM for a while: SIGKILL after a short grace)."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def test_under_a_takeover_a_passing_gate_pauses_the_run_for_a_human(
    airflow_home, sandbox, tmp_path
):
    ledger_file = tmp_path / "ledger.db"
    env = base_env(airflow_home)
    for name in ("PLATFORM", "MONITORING", "NOTIFY", "AUDIT"):
        env[f"AIRFLOW_CONN_POWERX_{name}"] = str(sandbox.base_url).rstrip("/")
    env["AIRFLOW_CONN_POWERX_LEDGER"] = json.dumps(
        {"conn_type": "generic", "extra": {"url": f"sqlite:///{ledger_file}"}}
    )
    env["POWERX_UPGRADE_REPORTS"] = str(tmp_path / "reports")

    def take_over(book: Ledger, run_id: str):
        return book.request_control(
            run_id, "takeover", actor="dave", via="api", approval_jti="jti-takeover"
        )

    watcher = WhenDeployed(ledger_file, batch=1, delay=0, act=take_over)
    watcher.start()
    log = (tmp_path / "dags-test-takeover.log").open("w")
    # its own session: the whole `dags test` process group is stopped once the pause waits
    running = subprocess.Popen(
        [airflow_bin(), "dags", "test", E2E_DAG, "-c", json.dumps({"reason": "takeover"})],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        watcher.join(timeout=180)
        assert watcher.error is None, watcher.error
        taken = watcher.result
        book = Ledger(f"sqlite:///{ledger_file}")
        deadline = time.monotonic() + 120
        while book.get_run(taken.run_id).status != "paused":  # the pause task has started
            assert running.poll() is None, "the run ended instead of pausing"
            assert time.monotonic() < deadline, "the run never paused"
            time.sleep(0.5)
    finally:
        stop(running)
        log.close()

    [gate] = book.gate_evaluations(taken.run_id, final_only=True)
    assert (gate.batch_index, gate.phase) == (1, "pass")
    [decided] = [d for d in book.decisions(taken.run_id) if d.kind == "decide"]
    assert (decided.decision, decided.actor, decided.via) == ("pause", "dave", "api")
    assert decided.detail["reason"] == "manual takeover by dave"
    assert decided.detail["approval"] == "jti-takeover"
    assert book.get_control(taken.id).outcome == "applied"
    assert book.actions(taken.run_id, kind="upgrade", batch_index=2) == []
