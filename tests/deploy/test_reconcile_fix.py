"""Reconcile that repairs (`rollout.repair`, `--fix` of the reconcile script) against a real
sandbox over HTTP and a real SQLite ledger: dead runs' claims released (a run Airflow calls
failed or no longer knows, not only finished ones), unsettled actions settled from the
platform's tenant versions, the audit backlog delivered, each fix audited; a dry run changes
nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.rollout.reconcile import reconcile
from powerx_upgrade.rollout.record import audit_payload
from powerx_upgrade.rollout.repair import apply_fixes, dead_reason, plan_fixes
from tests.conftest import CONFIG_DIR
from tests.deploy.test_reconcile_script import SCRIPT, _load_script

pytestmark = pytest.mark.e2e

PLUGIN = "crm-sync"


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    with running_sandbox(CONFIG_DIR / "scenarios" / "happy.yaml") as url:
        yield url


@pytest.fixture
def platform(sandbox_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox_url, timeout=10) as client:
        client.post("/sandbox/reset").raise_for_status()
        yield client


def start(ledger: Ledger, run_id: str) -> None:
    ledger.start_run(
        run_id, dag_id="plugin_upgrade__p", plan_id="p", plugin=PLUGIN, target_version="2.4.0"
    )


def begin_upgrade(ledger: Ledger, run_id: str, tenant: str) -> str:
    key = f"{run_id}:upgrade:{tenant}"
    ledger.begin_action(
        run_id=run_id,
        plugin=PLUGIN,
        tenant_id=tenant,
        batch_index=1,
        kind="upgrade",
        from_version="2.3.1",
        to_version="2.4.0",
        idempotency_key=key,
    )
    return key


def apply_at_platform(platform: httpx.Client, tenant: str, key: str) -> None:
    """The platform applied the upgrade; the task died before it could record the answer."""
    platform.post(
        f"/internal/plugins/{PLUGIN}/tenants/{tenant}/upgrade",
        json={
            "version": "2.4.0",
            "artifact": {"uri": "s3://r/crm.tgz", "sha256": "a" * 64},
            "idempotency_key": key,
        },
    ).raise_for_status()


def fleet(platform: httpx.Client) -> dict[str, dict]:
    tenants = platform.get(f"/internal/plugins/{PLUGIN}/tenants").json()["tenants"]
    return {t["id"]: t for t in tenants}


def crashed_run(ledger: Ledger, platform: httpx.Client) -> None:
    """run-dead: killed mid-deploy (t-0005 applied at the platform, t-0006 not), its claims
    kept, its audit records still in the outbox; run-alive: going, holds t-0007."""
    start(ledger, "run-dead")
    ledger.claim_tenants("run-dead", PLUGIN, ["t-0005", "t-0006"])
    apply_at_platform(platform, "t-0005", begin_upgrade(ledger, "run-dead", "t-0005"))
    begin_upgrade(ledger, "run-dead", "t-0006")
    started = audit_payload("run.started", actor=None, plugin=PLUGIN, run_id="run-dead")
    ledger.enqueue_audit(run_id="run-dead", event="run.started", payload=started, audit_id="a1")
    start(ledger, "run-alive")
    ledger.claim_tenants("run-alive", PLUGIN, ["t-0007"])


def test_dead_means_finished_in_the_ledger_or_finished_or_absent_in_airflow(tmp_path: Path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    for run_id in ("a", "b", "c", "d", "e"):
        start(ledger, run_id)
    ledger.finish_run("a", "promoted")
    runs = {r.run_id: r for r in ledger.runs()}
    states = {"b": "failed", "c": None, "d": "running"}
    assert "finished" in (dead_reason(runs["a"], states) or "")
    assert "is failed" in (dead_reason(runs["b"], states) or "")
    assert "no longer exists" in (dead_reason(runs["c"], states) or "")
    assert dead_reason(runs["d"], states) is None  # Airflow says running
    assert dead_reason(runs["e"], states) is None  # Airflow not asked: never dead


def test_fix_releases_a_dead_runs_claims_settles_its_actions_and_delivers_audit(
    platform: httpx.Client, sandbox_url: str, tmp_path: Path
):
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    crashed_run(ledger, platform)
    states = {"run-dead": "failed", "run-alive": "running"}
    fixes = plan_fixes(ledger, ledger.runs(), fleet(platform), dag_run_states=states)
    assert [(f.kind, f.tenant) for f in fixes] == [
        ("finish_run", None),
        ("settle_action", "t-0005"),
        ("settle_action", "t-0006"),
        ("redeliver_audit", None),
    ]
    done = apply_fixes(ledger, fixes, audit_client=_load_script().HttpAudit(sandbox_url, None))
    assert len(done) == 4
    # the ledger: run-dead finished, its claims gone, its actions settled from the platform
    dead = ledger.get_run("run-dead")
    assert dead is not None and (dead.status, dead.outcome) == ("finished", "failed")
    assert ledger.claimed_tenants("run-dead") == []
    assert ledger.claimed_tenants("run-alive") == ["t-0007"]
    states_of = {a.tenant_id: a.state for a in ledger.actions("run-dead")}
    assert states_of == {"t-0005": "succeeded", "t-0006": "failed"}
    # the platform agrees with what the ledger now says
    versions = {t: v["version"] for t, v in fleet(platform).items()}
    assert (versions["t-0005"], versions["t-0006"]) == ("2.4.0", "2.3.1")
    # every fix audited once, and the outbox delivered to the audit service
    events = [r.event for r in ledger.audit_records("run-dead")]
    assert events.count("reconcile.fix.finish_run") == 1
    assert events.count("reconcile.fix.settle_action") == 2
    assert ledger.pending_audit() == []
    received = {r["id"] for r in platform.get("/sandbox/audit").json()["records"]}
    assert {r.audit_id for r in ledger.audit_records()} <= received
    # nothing left to fix; reconcile finds no drift and no unsettled action
    assert plan_fixes(ledger, ledger.runs(), fleet(platform), dag_run_states=states) == []
    kinds = {f.kind for f in reconcile(ledger, PLUGIN, fleet(platform).values())}
    assert not kinds & {"version_drift", "unsettled_action", "stale_claim"}


def test_the_script_shows_fixes_without_fix_and_makes_them_with_it(
    platform: httpx.Client, sandbox_url: str, tmp_path: Path
):
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ledger = Ledger(url)
    crashed_run(ledger, platform)
    ledger.finish_run("run-dead", "failed")  # finished in the ledger; actions still unsettled
    ledger.claim_tenants("run-alive", PLUGIN, ["t-0008"])
    command = [
        sys.executable,
        str(SCRIPT),
        "--plugin",
        PLUGIN,
        "--ledger-url",
        url,
        "--platform-url",
        sandbox_url,
        "--json",
    ]
    shown = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 1, shown.stderr
    planned = json.loads(shown.stdout)
    assert {(f["kind"], f["tenant"]) for f in planned["fixes"]} == {
        ("settle_action", "t-0005"),
        ("settle_action", "t-0006"),
        ("redeliver_audit", None),
    }
    dry = subprocess.run([*command, "--fix", "--dry-run"], capture_output=True, text=True)
    assert json.loads(dry.stdout)["fixed"] == []
    assert {a.state for a in ledger.actions("run-dead")} == {"started"}
    fixed = subprocess.run([*command, "--fix"], capture_output=True, text=True, timeout=60)
    result = json.loads(fixed.stdout)
    assert len(result["fixed"]) == 3, fixed.stderr
    assert {a.tenant_id: a.state for a in ledger.actions("run-dead")} == {
        "t-0005": "succeeded",
        "t-0006": "failed",
    }
    assert ledger.claimed_tenants("run-alive") == ["t-0007", "t-0008"]  # no Airflow: alive
    assert ledger.pending_audit() == []
    assert fixed.returncode == 0 or {f["kind"] for f in result["findings"]} <= {"stuck_run"}


def test_the_script_module_still_loads():
    assert hasattr(_load_script(), "apply_fixes")
