"""A platform whose clock runs ahead of (or behind) Airflow's: the gate asks monitoring for the
bake's window in the platform's time, measured from the batch's own upgrade answers. Found by the
fault matrix (tests/stack/faults/test_platform_faults.py): with the platform 2 minutes ahead, the
gate judged the platform's two-minute-old past, the old version, and promoted a bad version."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.config import load_config
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.orchestration.hooks.platform import PowerXPlatformHook
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.gating import CLOCK_TOLERANCE, GatePoller, platform_offset
from powerx_upgrade.rollout.operations import RetryPolicy, deploy_shard
from powerx_upgrade.rollout.record import Recorder
from tests.conftest import CONFIG_DIR, ROOT

NOW = datetime(2026, 12, 1, 4, 0, tzinfo=UTC)


def action(ahead: float | None, *, naive: bool = False) -> SimpleNamespace:
    finished = NOW.replace(tzinfo=None) if naive else NOW
    detail = {} if ahead is None else {"platform_at": (NOW + timedelta(seconds=ahead)).isoformat()}
    return SimpleNamespace(detail=detail, finished_at=finished)


@pytest.mark.unit
def test_the_offset_is_the_median_of_the_answers_and_small_ones_are_ignored():
    assert platform_offset([action(120.0), action(119.5), action(400.0)]) == 120.0
    assert platform_offset([action(-90.0, naive=True), action(-91.0), action(-90.5)]) == -90.5
    assert platform_offset([action(-0.2), action(CLOCK_TOLERANCE - 1)]) == 0.0
    assert platform_offset([action(None), SimpleNamespace(detail={}, finished_at=None)]) == 0.0
    assert platform_offset([]) == 0.0


@pytest.mark.unit
def test_an_answer_time_that_is_not_a_time_is_logged_and_left_out(caplog):
    garbled = SimpleNamespace(detail={"platform_at": "soon"}, finished_at=NOW, tenant_id="t-9")
    with caplog.at_level("WARNING", logger="powerx_upgrade.rollout.gating"):
        assert platform_offset([action(120.0), garbled, action(121.0)]) == 120.5
    assert "1 platform answer time(s) are not ISO times" in caplog.text
    assert "t-9: 'soon'" in caplog.text


@pytest.mark.unit
def test_the_gate_asks_monitoring_for_the_bake_in_the_platform_time():
    plan = load_config([ROOT / "tests" / "fixtures" / "stack_config"]).plans[
        "crm-sync-faults-platform"
    ]
    asked: list[tuple[datetime, datetime]] = []

    async def query(tenants: list[str], start: datetime, end: datetime) -> dict[str, Any]:
        asked.append((start, end))
        return {"tenants": {}}

    bake_started = NOW - timedelta(seconds=10)
    watch = {
        "bake_started": bake_started.isoformat(),
        "bake_seconds": 6,
        "batch_tenants": ["t-1"],
        "cumulative_tenants": ["t-1"],
        "control_tenants": [],
        "pre_upgrade": {},
        "platform_offset_seconds": 120.0,
    }
    asyncio.run(GatePoller(plan.policy.gate, watch, query).poke(NOW))
    horizon = NOW - plan.policy.gate.signal_delay
    ahead = timedelta(minutes=2)
    assert asked[0] == (bake_started + ahead, horizon + ahead)
    assert asked[1][1] == horizon + ahead  # who reports now: also in the platform's time

    asked.clear()
    asyncio.run(
        GatePoller(plan.policy.gate, {**watch, "platform_offset_seconds": 0}, query).poke(NOW)
    )
    assert asked[0] == (bake_started, horizon)


@pytest.fixture
def skewed_platform(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with running_sandbox(CONFIG_DIR / "scenarios" / "happy.yaml", clock_offset="2m") as url:
        monkeypatch.setenv("AIRFLOW_CONN_POWERX_PLATFORM", url)
        yield url


@pytest.mark.e2e
def test_a_deploy_records_the_platform_time_and_the_offset_is_measured_from_it(
    skewed_platform: str, tmp_path: Path
):
    book = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ctx = RunContext(
        "run-1", "d", "p", "crm-sync", "2.4.0", artifact={"uri": "s3://x", "sha256": "a" * 64}
    )
    book.start_run(ctx.run_id, dag_id="d", plan_id="p", plugin="crm-sync", target_version="2.4.0")
    deploy_shard(
        PowerXPlatformHook(retries=0),
        book,
        Recorder(book),
        ctx,
        batch=1,
        tenants=["t-0001", "t-0002", "t-0003"],
        concurrency=3,
        retry=RetryPolicy(retries=1, backoff=0.01),
    )
    actions = book.actions(ctx.run_id, kind="upgrade")
    assert [a.state for a in actions] == ["succeeded"] * 3
    assert all(a.detail.get("platform_at") for a in actions)
    assert 115.0 < platform_offset(actions) < 121.0
