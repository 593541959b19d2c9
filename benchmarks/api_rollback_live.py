"""Benchmark: one call to `POST /internal/version/upgrade/rollback` rolls an ACTIVE run of 1,000
tenants back on a live Airflow stack; time from the call to the last tenant restored and to
the last verified tenant (issue 7 target: under 30 s at 1,000 tenants; floor 3 minutes).

Run: uv run python benchmarks/api_rollback_live.py [--tenants N] [--keep HOME]
Starts the sandbox (N tenants, 50 ms upgrade/rollback latency) and a real Airflow stack
(api-server with the control-plane plugin, scheduler, dag-processor, triggerer; LocalExecutor),
triggers a one-batch plan whose gate bakes for 10 minutes, waits until every tenant is upgraded
and the gate has baked in the triggerer for a few seconds (`BAKING_S`), then calls the API
with an Airflow token and a one-time approval token, and follows the rollback through the
sandbox and the ledger. Takes about 3 minutes; prints the figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from figures import emit  # the script's own folder is on sys.path

from powerx_dev.devstack import running_airflow
from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.security.approval import issue_approval
from powerx_upgrade.security.artifacts import generate_keypair, sign_artifact

ROOT = Path(__file__).resolve().parents[1]
PLUGIN, PLAN, SHA = "crm-sync", "crm-sync-bench", "b" * 64
DAG = f"plugin_upgrade__{PLAN}"
SECRET = "benchmark-approval-secret-0123456789abcdef"

SCENARIO = """
name: api-rollback-benchmark
seed: 11
plugin: crm-sync
tenants: {{count: {count}, version: 2.3.1, labels: {{tier: {{gold: 0.5, silver: 0.5}}}}}}
latency: {{upgrade_ms: 50, rollback_ms: 50, jitter: 0.2}}
traffic: {{rps: 20, error_rate: 0.01, latency_p95_ms: 120}}
versions:
  2.4.0: {{error_rate: 0.011, latency_p95_ms: 122}}
"""

CONFIG = """
version: 1
policies:
  bench:
    batches:
      - {name: all, ratio: 1.0, bake: 10m}
    deploy: {concurrency: 50, retries: 1, max_failed: 0, shard_size: 250}
    gate:
      poke_interval: 2s
      signal_delay: 2s
      missing_data: {after: 5m, action: pause}
      checks:
        - {metric: error_rate, op: "<=", limit: 0.05, scope: batch}
    rollback: {mode: auto, scope: all_upgraded, concurrency: 50}
plans:
  crm-sync-bench:
    plugin: crm-sync
    policy: bench
    target_version: 2.4.0
"""


def versions(sandbox: httpx.Client) -> dict[str, str]:
    tenants = sandbox.get("/sandbox/tenants", params={"plugin": PLUGIN}).json()["tenants"]
    return {t["id"]: t["version"] for t in tenants}


def last_restored(sandbox: httpx.Client, called_at: datetime) -> float:
    """Seconds from the call to the last tenant back on 2.3.1, by the platform's own record
    (each tenant's version history, in the platform's clock corrected by its offset): read once
    after the run, not polled during the rollback (polling every tenant's full record every
    0.25 s took a CPU share of its own from the rollback it timed, most at 10,000 tenants)."""
    offset_ms = sandbox.get("/sandbox/clock").json()["offset_ms"]
    tenants = sandbox.get("/sandbox/tenants", params={"plugin": PLUGIN}).json()["tenants"]
    left = [t["id"] for t in tenants if t["version"] != "2.3.1"]
    if left:
        raise SystemExit(f"{len(left)} tenant(s) not restored, e.g. {left[:5]}")
    back = max(datetime.fromisoformat(t["history"][-1]["since"]) for t in tenants)
    return (back - called_at).total_seconds() - offset_ms / 1000


def timeline(tis: list[dict[str, Any]], called_at: datetime) -> list[str]:
    """The task instances that started after the API call, in seconds from the call: when each
    was queued, started and ended (where the hops between the call and the last tenant go)."""

    def rel(value: str | None) -> str:
        if not value:
            return "     -"
        return f"{(datetime.fromisoformat(value) - called_at).total_seconds():6.2f}"

    after = [
        ti
        for ti in tis
        if ti.get("end_date") and datetime.fromisoformat(ti["end_date"]) >= called_at
    ]
    after.sort(key=lambda ti: ti.get("start_date") or ti["end_date"])
    lines = [f"task instances after the call ({len(after)}): queued start end run"]
    for ti in after:
        lines.append(
            f"  {ti['task_id']:24s} {ti.get('map_index', -1):3d} {rel(ti.get('queued_when'))} "
            f"{rel(ti.get('start_date'))} {rel(ti['end_date'])} {ti.get('duration') or 0:6.2f}"
        )
    return lines


BAKING_S = 3.0
"""How long the gate has been baking in the triggerer when the API is called."""


def baking_in_triggerer(stack: Any, run_id: str) -> None:
    """Wait until a triggerer has taken the deferred gate over, then `BAKING_S` more: the
    active run of a real rollback has been baking for minutes, its trigger long running. A call
    the instant the task turns deferred would time the triggerer's pickup of a new trigger
    (1-2 s on the dev stack), which no operator's rollback of a baking batch waits for."""
    stack.wait_for(
        lambda: (stack.task_instance(DAG, run_id, "batch_1.gate").get("trigger") or {}).get(
            "triggerer_id"
        ),
        timeout=120,
        interval=0.25,
        what="a triggerer to take the gate's trigger",
    )
    time.sleep(BAKING_S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--keep", help="AIRFLOW_HOME to use (kept afterwards)")
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="print each task instance that ran after the call: queued, start, end",
    )
    parser.add_argument(
        "--rollback-shards",
        type=int,
        help="[powerx_upgrade] rollback_shards for the stack (unset: the executor's slots)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="powerx-api-rollback-"))
    (work / "config").mkdir()
    (work / "config" / "upgrade_policies.yaml").write_text(CONFIG)
    (work / "keys").mkdir()
    private, public = generate_keypair()
    (work / "keys" / "bench.pub").write_bytes(public)
    (work / "scenario.yaml").write_text(SCENARIO.format(count=args.tenants))
    ledger_url = f"sqlite:///{work / 'ledger.db'}"
    with running_sandbox(work / "scenario.yaml") as sandbox_url:
        env = {
            f"AIRFLOW_CONN_POWERX_{name}": sandbox_url
            for name in ("PLATFORM", "MONITORING", "NOTIFY", "AUDIT")
        }
        env["AIRFLOW_CONN_POWERX_LEDGER"] = json.dumps(
            {"conn_type": "generic", "extra": {"url": ledger_url}}
        )
        env["AIRFLOW_CONN_POWERX_APPROVAL"] = json.dumps(
            {"conn_type": "generic", "password": SECRET}
        )
        env["POWERX_UPGRADE_CONFIG"] = str(work / "config")
        if args.rollback_shards:
            env["AIRFLOW__POWERX_UPGRADE__ROLLBACK_SHARDS"] = str(args.rollback_shards)
        env["POWERX_UPGRADE_SIGNING_KEYS"] = str(work / "keys")
        env["POWERX_UPGRADE_REPORTS"] = str(work / "reports")
        home = Path(args.keep) if args.keep else work / "airflow"
        started = time.monotonic()
        with (
            running_airflow(home, dags_folder=ROOT / "dags", env=env, dag_ids=[DAG]) as stack,
            httpx.Client(base_url=sandbox_url, timeout=30) as sandbox,
        ):
            print(f"stack healthy, DAG parsed: {time.monotonic() - started:.1f} s")
            conf = {
                "target_version": "2.4.0",
                "artifact_uri": "s3://releases/crm-sync-2.4.0.tgz",
                "artifact_sha256": SHA,
                "artifact_signature": sign_artifact(private, PLUGIN, "2.4.0", SHA),
                "reason": "benchmark: API rollback of an active run",
            }
            triggered = time.monotonic()
            run_id = stack.trigger(DAG, conf)
            stack.wait_for_task(DAG, run_id, "batch_1.gate", ["deferred"], timeout=600)
            baking_in_triggerer(stack, run_id)
            upgraded = [t for t, v in versions(sandbox).items() if v == "2.4.0"]
            print(
                f"{len(upgraded)} tenants upgraded, gate deferred: "
                f"{time.monotonic() - triggered:.1f} s after the trigger"
            )
            token = issue_approval(
                SECRET, subject="bench-approver", action="rollback", plan_id=PLAN, run_id=run_id
            )
            called_at = datetime.now(UTC)
            t0 = time.monotonic()
            answer = httpx.post(
                f"{stack.base_url}/internal/version/upgrade/rollback",
                headers={
                    "Authorization": f"Bearer {stack.token()}",
                    "X-Approval-Token": token,
                },
                json={"run_id": run_id, "reason": "benchmark"},
                timeout=60,
            )
            answered = time.monotonic() - t0
            answer.raise_for_status()
            state = stack.wait_for_run(DAG, run_id, timeout=600)
            restored = last_restored(sandbox, called_at)
            if args.timeline:
                print("\n".join(timeline(stack.task_instances(DAG, run_id), called_at)))
        ledger = Ledger(ledger_url)
        run = ledger.get_run(run_id)
        rollbacks = [a for a in ledger.actions(run_id) if a.kind == "rollback"]
        last = max(a.finished_at for a in rollbacks if a.finished_at)
        verification = (run.detail or {}).get("rollback_verification") or {}
        print(f"tenants: {args.tenants}, upgraded by the run: {len(upgraded)}")
        print(f"API answered (202) in: {answered:.2f} s")
        print(f"call -> last tenant restored (platform): {restored:.1f} s")
        recorded = (last - called_at).total_seconds()
        print(f"call -> last rollback recorded (ledger): {recorded:.1f} s")
        print(
            f"verified: {len(verification.get('verified') or [])}, "
            f"broken: {len(verification.get('broken') or [])}; "
            f"run {state}, outcome {run.outcome}"
        )
        took = verification.get("duration_ms")
        print(f"rollback decision -> verified (rollback.verify): {took} ms")
        emit(
            tenants=args.tenants,
            latency_s=0.05,
            concurrency=50,
            answered_s=answered,
            call_to_restored_s=restored,
            call_to_recorded_s=recorded,
            verified=len(verification.get("verified") or []),
            broken=len(verification.get("broken") or []),
        )


if __name__ == "__main__":
    main()
