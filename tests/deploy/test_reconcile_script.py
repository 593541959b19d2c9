"""scripts/workflows/version-upgrade-reconcile.py against a real sandbox (over HTTP) and a real
SQLite ledger: a tenant moved behind the ledger's back, an action that never finished, a
tenant still claimed by a finished run, and a clean fleet."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from sqlalchemy import insert

from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.ledger.schema import claims
from powerx_upgrade.rollout.reconcile import reconcile
from tests.conftest import CONFIG_DIR, ROOT

pytestmark = pytest.mark.e2e

SCRIPT = ROOT / "scripts" / "workflows" / "version-upgrade-reconcile.py"
PLUGIN = "crm-sync"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("version_upgrade_reconcile", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    with running_sandbox(CONFIG_DIR / "scenarios" / "happy.yaml") as url:
        yield url


@pytest.fixture
def platform(sandbox_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox_url, timeout=10) as client:
        client.post("/sandbox/reset").raise_for_status()
        yield client


def _upgrade(platform: httpx.Client, ledger: Ledger, run_id: str, tenant: str) -> None:
    """Upgrade one tenant for real and record it in the ledger, as a run's deploy does."""
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
    answer = platform.post(
        f"/internal/plugins/{PLUGIN}/tenants/{tenant}/upgrade",
        json={
            "version": "2.4.0",
            "artifact": {"uri": "s3://r/crm.tgz", "sha256": "a" * 64},
            "idempotency_key": key,
        },
    )
    answer.raise_for_status()
    ledger.finish_action(key, "succeeded")


def _finished_run(ledger: Ledger, platform: httpx.Client, run_id: str, tenants: list[str]) -> None:
    ledger.start_run(
        run_id, dag_id="plugin_upgrade__p", plan_id="p", plugin=PLUGIN, target_version="2.4.0"
    )
    for tenant in tenants:
        _upgrade(platform, ledger, run_id, tenant)
    ledger.finish_run(run_id, "promoted")


def test_a_fleet_that_matches_the_ledger_has_no_findings(
    platform: httpx.Client, sandbox_url: str, tmp_path: Path
) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    _finished_run(ledger, platform, "run-clean", ["t-0001", "t-0002"])
    script = _load_script()
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    code = script.main(
        ["--plugin", PLUGIN, "--ledger-url", url, "--platform-url", sandbox_url, "--json"]
    )
    assert code == 0


def test_drift_unsettled_action_and_stale_claim_are_found(
    platform: httpx.Client, sandbox_url: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(url)
    _finished_run(ledger, platform, "run-1", ["t-0001", "t-0002", "t-0003"])
    # Someone rolls t-0002 back by hand, outside any run: the ledger does not know.
    platform.post(
        f"/internal/plugins/{PLUGIN}/tenants/t-0002/rollback",
        json={"idempotency_key": "by-hand-1"},
    ).raise_for_status()
    # A run whose task died mid-upgrade of t-0004 and was then closed.
    ledger.start_run(
        "run-2", dag_id="plugin_upgrade__p", plan_id="p", plugin=PLUGIN, target_version="2.4.0"
    )
    ledger.begin_action(
        run_id="run-2",
        plugin=PLUGIN,
        tenant_id="t-0004",
        batch_index=1,
        kind="upgrade",
        from_version="2.3.1",
        to_version="2.4.0",
        idempotency_key="run-2:upgrade:t-0004",
    )
    ledger.finish_run("run-2", "failed")
    # A claim left behind by a finished run (written below the ledger's API, as a crash would).
    with ledger._engine.begin() as conn:
        conn.execute(
            insert(claims).values(
                plugin=PLUGIN, tenant_id="t-0009", run_id="run-2", claimed_at=datetime.now(UTC)
            )
        )
    fleet = platform.get(f"/internal/plugins/{PLUGIN}/tenants").json()["tenants"]
    findings = reconcile(ledger, PLUGIN, fleet)
    kinds = {(f.kind, f.tenant) for f in findings}
    assert ("version_drift", "t-0002") in kinds
    assert ("unsettled_action", "t-0004") in kinds
    assert any(f.kind == "stale_claim" and f.run_id == "run-2" for f in findings)
    assert not any(f.tenant in ("t-0001", "t-0003") for f in findings)
    drift = next(f for f in findings if f.kind == "version_drift")
    assert "2.3.1" in drift.message and "2.4.0" in drift.message

    # The script as CI runs it: JSON out, exit 1; then it frees the stale claim on request.
    command = [
        sys.executable,
        str(SCRIPT),
        "--plugin",
        PLUGIN,
        "--ledger-url",
        url,
        "--platform-url",
        sandbox_url,
    ]
    done = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    printed = json.loads(done.stdout)
    assert {f["kind"] for f in printed["findings"]} >= {
        "version_drift",
        "unsettled_action",
        "stale_claim",
    }
    freed = subprocess.run(
        [*command, "--release-stale-claims"], capture_output=True, text=True, timeout=60
    )
    assert "'released': 1" in freed.stdout, freed.stdout + freed.stderr
    assert ledger.claimed_tenants("run-2") == []


def test_a_run_active_for_too_long_and_late_audit_are_warnings(
    platform: httpx.Client, tmp_path: Path
) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    long_ago = datetime.now(UTC) - timedelta(days=2)
    ledger.start_run(
        "run-old",
        dag_id="plugin_upgrade__p",
        plan_id="p",
        plugin=PLUGIN,
        target_version="2.4.0",
        started_at=long_ago,
    )
    ledger.enqueue_audit(run_id="run-old", event="run.started", payload={"x": 1})
    fleet = platform.get(f"/internal/plugins/{PLUGIN}/tenants").json()["tenants"]
    findings = reconcile(ledger, PLUGIN, fleet, now=datetime.now(UTC) + timedelta(hours=1))
    assert {f.kind for f in findings} == {"stuck_run", "audit_backlog"}
    assert all(f.severity == "warning" for f in findings)


def test_an_unreachable_platform_is_a_setup_error(tmp_path: Path) -> None:
    script = _load_script()
    code = script.main(
        [
            "--plugin",
            PLUGIN,
            "--ledger-url",
            f"sqlite:///{tmp_path / 'l.db'}",
            "--platform-url",
            "http://127.0.0.1:9",
        ]
    )
    assert code == 2
