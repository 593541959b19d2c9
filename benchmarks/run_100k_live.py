"""Benchmark: a whole run over a fleet of 100,000 tenants on a live Airflow stack, end to end.

Run: uv run python benchmarks/run_100k_live.py [--tenants N] [--keep DIR]

Starts the sandbox (N tenants, 50 ms per upgrade and rollback, gold / silver / bronze) and a
real Airflow stack (api-server, scheduler, dag-processor, triggerer; LocalExecutor; SQLite
ledger), then triggers a plan of three batches (gold 1 %, up to 30 %, everyone) of version
2.5.0, which fails 9 % of bronze requests: the canary and the second batch pass their gates,
the third fails its gate and the run rolls every upgraded tenant back. Figures printed:

- planning (the `preflight.plan` task), run start -> first deploy;
- per batch: deploy (first shard start -> last shard end), gate (bake + verdict), decision;
- the rollback (decision -> every tenant back at the platform, and rollback.verify);
- the report (finalize.report) and its files' sizes;
- the largest XCom value of the run (bounded: ledger references, not tenant lists);
- resident memory of every Airflow process at the end, and the ledger's size.

Takes about 15-30 minutes at 100,000 tenants on 2 cores (the platform work alone is
N x 2 x 50 ms / concurrency). The last line is `FIGURES {json}` for benchmarks/run.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from figures import emit  # the script's own folder is on sys.path

from powerx_dev.devstack import marked_processes, running_airflow
from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.security.artifacts import generate_keypair, sign_artifact

ROOT = Path(__file__).resolve().parents[1]
PLUGIN, PLAN, SHA, TARGET = "crm-sync", "crm-sync-100k", "e" * 64, "2.5.0"
DAG = f"plugin_upgrade__{PLAN}"

SCENARIO = """
name: fleet-100k
seed: 7
plugin: crm-sync
tenants:
  count: {count}
  version: 2.3.1
  labels: {{tier: {{gold: 0.1, silver: 0.3, bronze: 0.6}}}}
latency: {{upgrade_ms: 50, rollback_ms: 50, jitter: 0.2}}
traffic: {{rps: 20, error_rate: 0.01, latency_p95_ms: 120}}
versions:
  2.5.0: {{error_rate: 0.012, latency_p95_ms: 125}}
faults:
  - {{type: error_rate, version: 2.5.0, where: {{tier: bronze}}, value: 0.09}}
"""

CONFIG = """
version: 1
policies:
  fleet:
    batches:
      - {name: canary, ratio: 0.01, bake: 20s}
      - {name: early, ratio: 0.3, bake: 20s}
      - {name: rest, ratio: 1.0, bake: 20s}
    deploy: {concurrency: 50, retries: 1, max_failed: 1%, shard_size: 2500}
    gate:
      poke_interval: 5s
      signal_delay: 2s
      missing_data: {after: 5m, action: pause}
      checks:
        - {metric: error_rate, op: "<=", limit: 0.05, scope: batch}
    rollback: {mode: auto, scope: all_upgraded, concurrency: 50, deadline: 30m}
plans:
  crm-sync-100k:
    plugin: crm-sync
    policy: fleet
    target_version: 2.5.0
    tenants:
      order: [{label: tier, values: [gold, silver, bronze]}]
"""


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def process_name(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [w.decode(errors="replace") for w in cmd if w]
    for known in ("api-server", "scheduler", "dag-processor", "triggerer", "standalone"):
        if known in words:
            return known
    return " ".join(Path(w).name for w in words[:3])


def span(tis: Iterable[dict[str, Any]]) -> tuple[datetime | None, datetime | None]:
    starts = [datetime.fromisoformat(t["start_date"]) for t in tis if t.get("start_date")]
    ends = [datetime.fromisoformat(t["end_date"]) for t in tis if t.get("end_date")]
    return (min(starts) if starts else None, max(ends) if ends else None)


def seconds(a: datetime | None, b: datetime | None) -> float | None:
    return None if a is None or b is None else round((b - a).total_seconds(), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=100_000)
    parser.add_argument("--keep", help="a folder to keep everything in (default: removed)")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="powerx-100k-"))
    (work / "config").mkdir(parents=True, exist_ok=True)
    (work / "config" / "upgrade_policies.yaml").write_text(CONFIG)
    (work / "keys").mkdir(exist_ok=True)
    private, public = generate_keypair()
    (work / "keys" / "bench.pub").write_bytes(public)
    (work / "scenario.yaml").write_text(SCENARIO.format(count=args.tenants))
    ledger_path = work / "ledger.db"
    figures: dict[str, Any] = {"tenants": args.tenants}
    try:
        with running_sandbox(work / "scenario.yaml") as sandbox_url:
            env = {
                f"AIRFLOW_CONN_POWERX_{name}": sandbox_url
                for name in ("PLATFORM", "MONITORING", "NOTIFY", "AUDIT")
            }
            env["AIRFLOW_CONN_POWERX_LEDGER"] = json.dumps(
                {"conn_type": "generic", "extra": {"url": f"sqlite:///{ledger_path}"}}
            )
            env["POWERX_UPGRADE_CONFIG"] = str(work / "config")
            env["POWERX_UPGRADE_SIGNING_KEYS"] = str(work / "keys")
            env["POWERX_UPGRADE_REPORTS"] = str(work / "reports")
            started = time.monotonic()
            with running_airflow(
                work / "airflow", dags_folder=ROOT / "dags", env=env, dag_ids=[DAG]
            ) as stack:
                print(f"stack healthy, DAG parsed: {time.monotonic() - started:.1f} s", flush=True)
                conf = {
                    "target_version": TARGET,
                    "artifact_uri": "s3://releases/crm-sync-2.5.0.tgz",
                    "artifact_sha256": SHA,
                    "artifact_signature": sign_artifact(private, PLUGIN, TARGET, SHA),
                    "reason": f"benchmark: {args.tenants} tenants end to end",
                }
                t0 = time.monotonic()
                run_id = stack.trigger(DAG, conf)
                state = stack.wait_for_run(DAG, run_id, timeout=4 * 3600)
                figures["total_s"] = round(time.monotonic() - t0, 1)
                figures["dag_run_state"] = state
                tis = stack.task_instances(DAG, run_id)
                memory = {
                    f"{process_name(pid)}[{pid}]": round(mb, 1)
                    for pid in marked_processes(stack.settings.stack_id)
                    if (mb := rss_mb(pid)) is not None and mb > 20
                }
                xcom_sizes = largest_xcoms(stack, run_id, tis)
        ledger = Ledger(f"sqlite:///{ledger_path}")
        try:
            summarise(figures, ledger, run_id, tis)
        finally:
            ledger.close()
        figures["ledger_bytes"] = ledger_path.stat().st_size
        figures["largest_xcom_bytes"] = max(xcom_sizes.values(), default=0)
        figures["airflow_rss_mb"] = memory
        reports = list((work / "reports").rglob("*")) if (work / "reports").exists() else []
        figures["report_bytes"] = {p.name: p.stat().st_size for p in reports if p.is_file()}
        for key, value in figures.items():
            print(f"{key}: {value}")
        print(
            "largest XCom values (bytes):",
            dict(sorted(xcom_sizes.items(), key=lambda kv: -kv[1])[:5]),
        )
        emit(**figures)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def largest_xcoms(stack: Any, run_id: str, tis: list[dict[str, Any]]) -> dict[str, int]:
    """Bytes of each task's return value as the REST API serves it (what XCom holds)."""
    sizes: dict[str, int] = {}
    with httpx.Client(base_url=stack.base_url, timeout=60) as client:
        headers = {"Authorization": f"Bearer {stack.token()}"}
        for ti in tis:
            path = (
                f"/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances/{ti['task_id']}"
                f"/xcomEntries/return_value"
            )
            answer = client.get(path, headers=headers, params={"map_index": ti["map_index"]})
            if answer.status_code == 200:
                key = f"{ti['task_id']}[{ti['map_index']}]"
                sizes[key] = len(json.dumps(answer.json().get("value")))
    return sizes


def summarise(
    figures: dict[str, Any], ledger: Ledger, run_id: str, tis: list[dict[str, Any]]
) -> None:
    by_task: dict[str, list[dict[str, Any]]] = {}
    for ti in tis:
        by_task.setdefault(ti["task_id"], []).append(ti)
    run = ledger.get_run(run_id)
    figures["outcome"] = run.outcome if run else None
    validate, _ = span(by_task.get("preflight.validate", []))
    plan_start, plan_end = span(by_task.get("preflight.plan", []))
    figures["plan_task_s"] = seconds(plan_start, plan_end)
    first_deploy, _ = span(by_task.get("batch_1.deploy", []))
    figures["start_to_first_deploy_s"] = seconds(validate, first_deploy)
    for k in range(1, 4):
        d_start, d_end = span(by_task.get(f"batch_{k}.deploy", []))
        g_start, g_end = span(by_task.get(f"batch_{k}.gate", []))
        _, decided = span(by_task.get(f"batch_{k}.decide", []))
        figures[f"batch_{k}_deploy_s"] = seconds(d_start, d_end)
        figures[f"batch_{k}_gate_s"] = seconds(g_start, g_end)
        figures[f"batch_{k}_deploy_end_to_decision_s"] = seconds(d_end, decided)
    r_start, r_end = span(by_task.get("rollback.execute", []))
    _, verified = span(by_task.get("rollback.verify", []))
    figures["rollback_execute_s"] = seconds(r_start, r_end)
    figures["rollback_to_verified_s"] = seconds(r_start, verified)
    rep_start, rep_end = span(by_task.get("finalize.report", []))
    figures["report_task_s"] = seconds(rep_start, rep_end)
    actions = ledger.actions(run_id)
    figures["upgrades"] = sum(1 for a in actions if a.kind == "upgrade" and a.state == "succeeded")
    figures["rollbacks"] = sum(
        1 for a in actions if a.kind == "rollback" and a.state == "succeeded"
    )
    figures["audit_records"] = len(ledger.audit_records(run_id))
    figures["pending_audit"] = len(ledger.pending_audit(limit=1_000_000))


if __name__ == "__main__":
    main()
