"""Windows and dry runs in real runs: a freeze stops before anyone is touched; outside the window
the run waits (deferred) until it opens; a dry run plans and preflights only."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import datetime
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
SHORT = '    window: {schedule: "* * * * *", duration: 20s}\n'
"""Open for the first 20 s of every minute (UTC): a run that checks outside it waits until a
known moment, the next minute's start (long enough that a resumed task is still inside it)."""
ATTEMPTS = 3
"""A run whose preflight and first batch both happened to start inside the window had no
reason to wait (about one run in ten): it is run again; a run that never waits fails."""
WINDOW_TASKS = ("preflight.begin", "batch_1.start")


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


def short_window(tmp_path: Path) -> Path:
    """The e2e config with the windowed plan's window open 20 s a minute."""
    config = tmp_path / "config"
    shutil.copytree(E2E_CONFIG, config)
    path = config / "upgrade_policies.yaml"
    text = path.read_text(encoding="utf-8")
    assert WINDOW_LINE in text
    path.write_text(text.replace(WINDOW_LINE, SHORT), encoding="utf-8")
    return config


def test_outside_the_window_the_run_waits_deferred_and_deploys_after_it_opens(
    airflow_home, sandbox, tmp_path
):
    config = short_window(tmp_path)
    for attempt in range(ATTEMPTS):
        sandbox.post("/sandbox/reset").raise_for_status()
        result = dags_test(
            airflow_home,
            "plugin_upgrade__crm-sync-windowed",
            sandbox_url=str(sandbox.base_url).rstrip("/"),
            ledger_file=tmp_path / f"ledger-{attempt}.db",
            config=config,
        )
        book = Ledger(result.ledger_url)
        assert book.runs(), result.tail()
        record = book.runs()[-1]
        assert result.returncode == 0 and record.outcome == "promoted", result.tail()
        # the run said it waited, and until when: the start of a minute after it was checked
        waits = [r for r in book.audit_records(record.run_id) if r.event == "run.window_wait"]
        if waits:
            break
    else:
        pytest.fail(f"the run never waited for its window in {ATTEMPTS} runs")
    opens = [datetime.fromisoformat(w.payload["details"]["opens_at"]) for w in waits]
    assert all(o.second == 0 and o.microsecond == 0 for o in opens), opens
    assert all(o > w.created_at for o, w in zip(opens, waits, strict=True))
    # the wait was a deferral (no worker slot held), by a window task
    deferred = [t for t in deferred_tasks(result.output) if t in WINDOW_TASKS]
    assert len(deferred) >= len(waits), deferred_tasks(result.output)
    # nobody was upgraded before the last wait's window opened
    upgrades = book.actions(record.run_id, kind="upgrade")
    assert upgrades and all(a.state == "succeeded" for a in upgrades)
    first = min(a.started_at for a in upgrades)
    assert first >= max(opens), f"deployed at {first}, before the window opened at {max(opens)}"
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
