"""Windows and dry runs in real runs: a freeze stops before anyone is touched; outside the window
the run waits (deferred) until it opens; a dry run plans and preflights only."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.ledger import Ledger
from tests.airflow_harness import E2E_CONFIG, dags_test
from tests.conftest import CONFIG_DIR

pytestmark = pytest.mark.e2e


@pytest.fixture
def sandbox() -> Iterator[httpx.Client]:
    with (
        running_sandbox(CONFIG_DIR / "scenarios" / "happy.yaml") as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        yield client


def run(home: Path, client: httpx.Client, tmp_path: Path, dag_id: str, **conf):
    result = dags_test(
        home,
        dag_id,
        sandbox_url=str(client.base_url).rstrip("/"),
        ledger_file=tmp_path / "ledger.db",
        conf=conf,
    )
    book = Ledger(result.ledger_url)
    assert book.runs(), result.tail()
    return result.returncode, book, book.runs()[-1].run_id


def untouched(client: httpx.Client) -> bool:
    tenants = client.get("/sandbox/tenants", params={"plugin": "crm-sync"}).json()["tenants"]
    return all(t["version"] == "2.3.1" and not t["operations"] for t in tenants)


def test_a_frozen_window_stops_the_run_before_anyone_is_touched(airflow_home, sandbox, tmp_path):
    code, book, run_id = run(airflow_home, sandbox, tmp_path, "plugin_upgrade__crm-sync-frozen")
    assert book.get_run(run_id).outcome == "stopped" and code != 0
    stop = [d for d in book.decisions(run_id) if d.decision == "stop"]
    assert stop and "frozen by 2026-01-01/2030-12-31" in stop[0].detail["reason"]
    assert untouched(sandbox)


WINDOW_LINE = '    window: {schedule: "* * * * *", duration: 15s, timezone: Asia/Shanghai}\n'
WINDOW_TASKS = ("preflight.window", "batch_1.start")
LEAD = timedelta(seconds=150)
"""How far ahead the window opens: longer than `airflow dags test` takes to reach the window
check (20-40 s on an idle machine, over 2 min seen on a crowded one), so the run must be seen
waiting; a run that starts later fails the test with that reason rather than proving nothing."""


def deferred_tasks(output: str) -> list[str]:
    """The tasks `airflow dags test` deferred (it runs their trigger in line), in order."""
    current, deferred = None, []
    for line in output.splitlines():
        started = re.search(r"\[DAG TEST\] starting task_id=(\S+)", line)
        if started:
            current = started.group(1)
        elif "[DAG TEST] running trigger in line" in line and current:
            deferred.append(current)
    return deferred


def config_opening_at(tmp_path: Path, opens: datetime) -> Path:
    """The e2e config with the windowed plan's window opening once a day at `opens` (UTC)."""
    config = tmp_path / "config"
    shutil.copytree(E2E_CONFIG, config)
    path = config / "upgrade_policies.yaml"
    text = path.read_text(encoding="utf-8")
    assert WINDOW_LINE in text
    window = f'    window: {{schedule: "{opens.minute} {opens.hour} * * *", duration: 10m}}\n'
    path.write_text(text.replace(WINDOW_LINE, window), encoding="utf-8")
    return config


def test_outside_the_window_the_run_waits_deferred_and_deploys_after_it_opens(
    airflow_home, sandbox, tmp_path
):
    now = datetime.now(UTC)
    opens = (now + LEAD).replace(second=0, microsecond=0) + timedelta(minutes=1)
    result = dags_test(
        airflow_home,
        "plugin_upgrade__crm-sync-windowed",
        sandbox_url=str(sandbox.base_url).rstrip("/"),
        ledger_file=tmp_path / "ledger.db",
        config=config_opening_at(tmp_path, opens),
    )
    book = Ledger(result.ledger_url)
    assert book.runs(), result.tail()
    record = book.runs()[-1]
    assert result.returncode == 0 and record.outcome == "promoted", result.tail()
    if record.started_at >= opens:
        pytest.fail(f"the run started at {record.started_at}, after the window opened ({opens})")
    # the wait was a deferral (no worker slot held), by the window's own task
    deferred = [t for t in deferred_tasks(result.output) if t in WINDOW_TASKS]
    assert deferred, f"no window task was deferred: {deferred_tasks(result.output)}"
    # and nobody was upgraded before the window opened: the first deploy follows it
    upgrades = book.actions(record.run_id, kind="upgrade")
    assert upgrades and all(a.state == "succeeded" for a in upgrades)
    first = min(a.started_at for a in upgrades)
    assert first >= opens, f"deployed at {first}, before the window opened at {opens}"
    tenants = sandbox.get("/sandbox/tenants", params={"plugin": "crm-sync"}).json()["tenants"]
    on_target = {t["id"] for t in tenants if t["version"] == "2.4.0"}
    assert on_target == {a.tenant_id for a in upgrades}


def test_a_dry_run_plans_and_preflights_but_touches_nobody(airflow_home, sandbox, tmp_path):
    code, book, run_id = run(
        airflow_home, sandbox, tmp_path, "plugin_upgrade__crm-sync-e2e", dry_run=True
    )
    record = book.get_run(run_id)
    assert code == 0 and record.outcome == "dry_run" and record.dry_run
    assert sum(len(b["tenants"]) for b in record.batches) == 60
    assert record.baseline and not book.actions(run_id)
    assert untouched(sandbox)
