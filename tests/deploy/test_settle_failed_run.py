"""`rollout.repair.settle_failed_run`: what the plugin's `on_dag_run_failed` listener does for a
run Airflow reports failed before its `finalize` (marked failed from outside), against a real
sandbox over HTTP and a real SQLite ledger. The live proof on the distributed stack:
tests/stack/distributed/test_ledger_faults.py."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from powerx_upgrade.ledger import Ledger
from powerx_upgrade.rollout.repair import settle_failed_run
from tests.deploy.test_reconcile_fix import (
    PLUGIN,
    _load_script,
    apply_at_platform,
    begin_upgrade,
    crashed_run,
    fleet,
    platform,  # noqa: F401 - fixture
    sandbox_url,  # noqa: F401 - fixture
    start,
)

pytestmark = pytest.mark.e2e


def listing(platform: httpx.Client):  # noqa: F811
    return lambda plugin: fleet(platform).values()


def test_a_failed_run_is_finished_its_claims_freed_its_actions_settled_and_audited(
    platform: httpx.Client,  # noqa: F811
    sandbox_url: str,  # noqa: F811
    tmp_path: Path,
):
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    crashed_run(ledger, platform)
    audit = _load_script().HttpAudit(sandbox_url, None)

    done = settle_failed_run(ledger, "run-dead", listing(platform), audit_client=audit)

    assert [d["kind"] for d in done] == [
        "finish_run",
        "settle_action",
        "settle_action",
        "redeliver_audit",
    ]
    dead = ledger.get_run("run-dead")
    assert dead is not None and (dead.status, dead.outcome) == ("finished", "failed")
    assert ledger.claimed_tenants("run-dead") == []
    assert ledger.claimed_tenants("run-alive") == ["t-0007"]  # another run is not touched
    alive = ledger.get_run("run-alive")
    assert alive is not None and alive.active
    assert {a.tenant_id: a.state for a in ledger.actions("run-dead")} == {
        "t-0005": "succeeded",
        "t-0006": "failed",
    }
    assert ledger.pending_audit() == []
    received = {r["id"] for r in platform.get("/sandbox/audit").json()["records"]}
    assert {r.audit_id for r in ledger.audit_records("run-dead")} <= received
    # Called again (the listener fires once per failure, but a repeat must be harmless).
    assert settle_failed_run(ledger, "run-dead", listing(platform), audit_client=audit) == []


def test_a_run_that_went_through_finalize_is_left_alone(
    platform: httpx.Client,  # noqa: F811
    tmp_path: Path,
):
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    start(ledger, "run-done")
    ledger.finish_run("run-done", "rolled_back")
    assert settle_failed_run(ledger, "run-done", listing(platform)) == []
    assert settle_failed_run(ledger, "unknown-run", listing(platform)) == []
    record = ledger.get_run("run-done")
    assert record is not None and record.outcome == "rolled_back"
    assert ledger.audit_records("run-done") == []


def test_an_action_still_in_flight_is_settled_once_the_platform_has_finished_it(
    platform: httpx.Client,  # noqa: F811
    tmp_path: Path,
):
    """The killed task's last upgrade was accepted but not answered: the tenant is not `ready`
    at the first look; the next look finds it applied and settles it."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    start(ledger, "run-x")
    ledger.claim_tenants("run-x", PLUGIN, ["t-0005"])
    key = begin_upgrade(ledger, "run-x", "t-0005")
    looks: list[int] = []

    def fleet_in_flight(plugin: str):
        looks.append(1)
        tenants = fleet(platform)
        if len(looks) == 1:
            tenants["t-0005"] = {**tenants["t-0005"], "state": "upgrading"}
        return tenants.values()

    def sleep(_: float) -> None:
        apply_at_platform(platform, "t-0005", key)

    settle_failed_run(ledger, "run-x", fleet_in_flight, sleep=sleep)
    assert len(looks) == 2
    (action,) = ledger.actions("run-x")
    assert action.state == "succeeded"
    assert ledger.claimed_tenants("run-x") == []
