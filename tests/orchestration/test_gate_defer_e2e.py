"""The gate defers at once when nothing can be judged yet (issue 16 point 2), in whole DAG runs
(`airflow dags test`, which runs the deferred trigger in line) against the sandbox: with a
signal_delay of 6 s, the gate sensor starts before its bake can be judged, so it defers
without poking, and no poke is made (nor recorded) before bake start + signal_delay; the
verdicts are the same: a healthy run promotes, the bad tier's batch fails and rolls back."""

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
from tests.airflow_harness import E2E_CONFIG, E2E_SHA256, dags_test
from tests.conftest import CONFIG_DIR
from tests.signing import signed

pytestmark = pytest.mark.e2e

DAG = "plugin_upgrade__crm-sync-e2e"
SIGNAL_DELAY = timedelta(seconds=6)
GATE_ANCHOR = "\nx-gate: &gate\n  poke_interval: 2s\n  signal_delay: 2s\n"


@pytest.fixture
def sandbox(request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    scenario = getattr(request, "param", "happy")
    with (
        running_sandbox(CONFIG_DIR / "scenarios" / f"{scenario}.yaml") as url,
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        yield client


def slow_signal(tmp_path: Path) -> Path:
    """The e2e config with the shared gate's signal_delay at 6 s (bakes stay 8 s)."""
    config = tmp_path / "config"
    shutil.copytree(E2E_CONFIG, config)
    path = config / "upgrade_policies.yaml"
    text = path.read_text(encoding="utf-8")
    assert text.count(GATE_ANCHOR) == 1
    seconds = int(SIGNAL_DELAY.total_seconds())
    slow = GATE_ANCHOR.replace("signal_delay: 2s", f"signal_delay: {seconds}s")
    path.write_text(text.replace(GATE_ANCHOR, slow), encoding="utf-8")
    return config


def utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run(airflow_home: Path, sandbox: httpx.Client, tmp_path: Path, **conf) -> tuple[Ledger, str]:
    result = dags_test(
        airflow_home,
        DAG,
        sandbox_url=str(sandbox.base_url).rstrip("/"),
        ledger_file=tmp_path / "ledger.db",
        conf=conf,
        config=slow_signal(tmp_path),
        extra_env={"POWERX_UPGRADE_REPORTS": str(tmp_path / "reports")},
    )
    book = Ledger(result.ledger_url)
    assert book.runs(), result.tail()
    run_id = book.runs()[-1].run_id
    check_no_poke_before_the_bake_can_be_judged(book, run_id, result.output)
    return book, run_id


def check_no_poke_before_the_bake_can_be_judged(book: Ledger, run_id: str, output: str) -> None:
    """Every gate deferred at once (its sensor logged it), and every poke it recorded came at
    or after its bake's start (the deploy's end) + signal_delay."""
    final = book.gate_evaluations(run_id, final_only=True)
    assert final, output[-3000:]
    for gate in final:
        batch = gate.batch_index
        deployed = book.actions(run_id, kind="upgrade", batch_index=batch)
        bake_started = max(utc(a.finished_at) for a in deployed if a.finished_at is not None)
        judgeable = bake_started + SIGNAL_DELAY
        said = rf"batch {batch} gate: nothing to judge before \S+ \(bake start \+ signal_delay\): not poked; deferring"
        assert re.search(said, output), f"batch {batch}'s gate did not defer at once"
        pokes = [g for g in book.gate_evaluations(run_id, batch, final_only=False) if not g.final]
        assert pokes, f"batch {batch}: no poke recorded"
        early = [g.evaluated_at for g in pokes if utc(g.evaluated_at) < judgeable]
        assert early == [], f"batch {batch}: poked before {judgeable.isoformat()}: {early}"


def test_a_healthy_run_defers_each_gate_at_once_and_still_promotes(airflow_home, sandbox, tmp_path):
    book, run_id = run(airflow_home, sandbox, tmp_path)
    record = book.get_run(run_id)
    assert record is not None and record.outcome == "promoted", record
    verdicts = [g.phase for g in book.gate_evaluations(run_id, final_only=True)]
    assert verdicts == ["pass", "pass"]


@pytest.mark.parametrize("sandbox", ["bad-version"], indirect=True)
def test_the_bad_tiers_batch_still_fails_its_gate_and_rolls_back(airflow_home, sandbox, tmp_path):
    book, run_id = run(
        airflow_home, sandbox, tmp_path, **signed({"target_version": "2.5.0"}, E2E_SHA256)
    )
    record = book.get_run(run_id)
    assert record is not None and record.outcome == "rolled_back", record
    final = {g.batch_index: g.phase for g in book.gate_evaluations(run_id, final_only=True)}
    failing = max(final)
    assert final[failing] == "fail"
    assert all(final[k] == "pass" for k in final if k != failing)
