"""Benchmark: per-batch orchestration overhead (the scheduler and executor hops between a
batch's tasks, without the bake and the deploy) on the distributed stack (CeleryExecutor, two
workers, two schedulers, PostgreSQL, Redis) and on the local one (LocalExecutor, SQLite), from
the same plan (issue 13 point 8).

Run: uv run python benchmarks/orchestration_overhead.py [--engine local|celery|both] [--runs N]
Starts the sandbox and a stack per engine (one after the other), runs a four-batch plan of
2.4.0 (healthy: every batch promotes) N times and reads every task instance's start and end
through the REST API. For batch k:

    wall(k)     = end of batch k's last task - end of batch k-1's last task (batch 1: the end
                  of preflight)
    deploy(k)   = first deploy shard's start .. last deploy shard's end
    gate(k)     = the gate's start .. end (the bake, the polls: it waits in the triggerer)
    overhead(k) = wall(k) - deploy(k) - gate(k)

The overhead is what the batch costs beyond its real work: queueing and scheduling each task
(start, deploy, gate, decide, promote), the executor handing it to a worker, the task
process starting, and the hops out of the triggerer. Takes about 3 minutes per engine; prints
the figures (docs/deployment.md quotes them) and `FIGURES` for benchmarks/run.py (the first engine:
`per_batch_overhead_s`, `start_to_first_deploy_s`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from figures import emit  # the script's own folder is on sys.path

from powerx_dev.devstack import AirflowStack, running_airflow
from powerx_dev.devstack.distributed import running_distributed_airflow
from powerx_dev.sandbox.testing import running_sandbox
from powerx_upgrade.security.artifacts import generate_keypair, sign_artifact

ROOT = Path(__file__).resolve().parents[1]
PLUGIN, PLAN, SHA = "crm-sync", "crm-sync-overhead", "b" * 64
DAG = f"plugin_upgrade__{PLAN}"
BATCHES = 4

SCENARIO = """
name: orchestration-overhead
seed: 13
plugin: crm-sync
tenants: {count: 40, version: 2.3.1, labels: {tier: {gold: 0.5, silver: 0.5}}}
latency: {upgrade_ms: 50, rollback_ms: 50, jitter: 0.2}
traffic: {rps: 20, error_rate: 0.01, latency_p95_ms: 120}
versions:
  2.4.0: {error_rate: 0.011, latency_p95_ms: 122}
"""

CONFIG = """
version: 1
policies:
  overhead:
    batches:
      - {name: b1, ratio: 0.1, bake: 6s}
      - {name: b2, ratio: 0.3, bake: 6s}
      - {name: b3, ratio: 0.6, bake: 6s}
      - {name: b4, ratio: 1.0, bake: 6s}
    deploy: {concurrency: 10, retries: 1, max_failed: 0, shard_size: 10}
    gate:
      poke_interval: 2s
      signal_delay: 2s
      missing_data: {after: 1m, action: pause}
      checks:
        - {metric: error_rate, op: "<=", limit: 0.05, scope: batch}
    rollback: {mode: auto, scope: all_upgraded, concurrency: 20}
plans:
  crm-sync-overhead:
    plugin: crm-sync
    policy: overhead
    target_version: 2.4.0
"""


def _at(value: str | None) -> float:
    if not value:
        raise ValueError("a task instance without start or end date")
    return datetime.fromisoformat(value).timestamp()


def start_to_first_deploy(tis: list[dict[str, Any]]) -> float:
    """Seconds from the run's first task (preflight.validate) starting to batch 1's first deploy
    shard starting: preflight's hops plus its real work (planning, baseline)."""
    ran = [ti for ti in tis if ti.get("start_date")]
    first = min(_at(ti["start_date"]) for ti in ran)
    deploy = min(_at(ti["start_date"]) for ti in ran if ti["task_id"] == "batch_1.deploy")
    return deploy - first


def timeline(tis: list[dict[str, Any]], until: str = "batch_1.deploy") -> list[str]:
    """One line per task instance up to `until` (first map index): when it was scheduled,
    queued, started and ended, in seconds from the first task's start; where a hop's time goes."""
    ran = [ti for ti in tis if ti.get("start_date")]
    zero = min(_at(ti["start_date"]) for ti in ran)
    first_deploy = min(_at(ti["start_date"]) for ti in ran if ti["task_id"] == until)

    def rel(ti: dict[str, Any], key: str) -> str:
        value = ti.get(key)
        return f"{_at(value) - zero:6.2f}" if value else "     -"

    rows = sorted(
        (ti for ti in ran if _at(ti["start_date"]) <= first_deploy),
        key=lambda ti: _at(ti["start_date"]),
    )
    lines = ["  task                         map sched  queued start  end    run"]
    for ti in rows:
        took = _at(ti["end_date"]) - _at(ti["start_date"]) if ti.get("end_date") else 0.0
        lines.append(
            f"  {ti['task_id']:28s} {ti.get('map_index', -1):3d} {rel(ti, 'scheduled_when')} "
            f"{rel(ti, 'queued_when')} {rel(ti, 'start_date')} {rel(ti, 'end_date')} {took:5.2f}"
        )
    return lines


def batch_overheads(tis: list[dict[str, Any]], batches: int) -> list[dict[str, float]]:
    """wall, deploy, gate and overhead (seconds) of each batch, from the run's task instances
    (the REST API's `start_date`/`end_date`; skipped tasks have none and are left out)."""
    ran = [ti for ti in tis if ti.get("start_date") and ti.get("end_date")]
    previous = max(_at(ti["end_date"]) for ti in ran if ti["task_id"].startswith("preflight."))
    figures = []
    for k in range(1, batches + 1):
        mine = [ti for ti in ran if ti["task_id"].startswith(f"batch_{k}.")]
        deploy = [ti for ti in mine if ti["task_id"] == f"batch_{k}.deploy"]
        gate = [ti for ti in mine if ti["task_id"] == f"batch_{k}.gate"]
        end = max(_at(ti["end_date"]) for ti in mine)
        deploy_s = max(_at(t["end_date"]) for t in deploy) - min(
            _at(t["start_date"]) for t in deploy
        )
        gate_s = sum(_at(t["end_date"]) - _at(t["start_date"]) for t in gate)
        wall = end - previous
        figures.append(
            {"wall": wall, "deploy": deploy_s, "gate": gate_s, "overhead": wall - deploy_s - gate_s}
        )
        previous = end
    return figures


@contextmanager
def _stack(engine: str, work: Path, env: dict[str, str]) -> Iterator[AirflowStack]:
    home = work / engine
    runner: AbstractContextManager[AirflowStack]
    if engine == "celery":
        runner = running_distributed_airflow(
            home, dags_folder=ROOT / "dags", env=env, dag_ids=[DAG]
        )
    else:
        local_env = {
            **env,
            "AIRFLOW_CONN_POWERX_LEDGER": json.dumps(
                {"conn_type": "generic", "extra": {"url": f"sqlite:///{home / 'ledger.db'}"}}
            ),
        }
        runner = running_airflow(home, dags_folder=ROOT / "dags", env=local_env, dag_ids=[DAG])
    with runner as stack:
        yield stack


def measure(
    engine: str,
    runs: int,
    work: Path,
    sandbox_url: str,
    private: bytes,
    *,
    timelines: bool = False,
) -> tuple[list[float], list[float]]:
    """Per-batch overheads and start -> first deploy of every run (seconds)."""
    env = {
        f"AIRFLOW_CONN_POWERX_{n}": sandbox_url
        for n in ("PLATFORM", "MONITORING", "NOTIFY", "AUDIT")
    }
    env["POWERX_UPGRADE_CONFIG"] = str(work / "config")
    env["POWERX_UPGRADE_SIGNING_KEYS"] = str(work / "keys")
    env["POWERX_UPGRADE_REPORTS"] = str(work / "reports")
    overheads: list[float] = []
    starts: list[float] = []
    started = time.monotonic()
    with _stack(engine, work, env) as stack:
        print(f"[{engine}] stack healthy, DAG parsed: {time.monotonic() - started:.1f} s")
        for n in range(runs):
            import httpx

            httpx.post(f"{sandbox_url}/sandbox/reset", timeout=10).raise_for_status()
            conf = {
                "target_version": "2.4.0",
                "artifact_uri": "s3://releases/crm-sync-2.4.0.tgz",
                "artifact_sha256": SHA,
                "artifact_signature": sign_artifact(private, PLUGIN, "2.4.0", SHA),
                "reason": f"benchmark: orchestration overhead ({engine})",
            }
            t0 = time.monotonic()
            run_id = stack.trigger(DAG, conf)
            state = stack.wait_for_run(DAG, run_id, timeout=900)
            if state != "success":
                raise SystemExit(
                    f"[{engine}] run {run_id} ended {state}:\n{stack.describe_run(DAG, run_id)}"
                )
            tis = stack.task_instances(DAG, run_id)
            figures = batch_overheads(tis, BATCHES)
            starts.append(start_to_first_deploy(tis))
            print(
                f"[{engine}] run {n + 1}: {time.monotonic() - t0:.1f} s trigger to end, "
                f"{starts[-1]:.1f} s run start to first deploy"
            )
            if timelines:
                print("\n".join(timeline(tis)))
            for k, f in enumerate(figures, 1):
                print(
                    f"[{engine}]   batch {k}: wall {f['wall']:5.1f} s = deploy {f['deploy']:4.1f} s"
                    f" + gate {f['gate']:5.1f} s + overhead {f['overhead']:5.1f} s"
                )
            overheads += [f["overhead"] for f in figures]
    return overheads, starts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=("local", "celery", "both"), default="both")
    parser.add_argument("--runs", type=int, default=1, help="runs of the plan per engine")
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="print each task instance's scheduled/queued/start/end up to the first deploy",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="powerx-overhead-"))
    (work / "config").mkdir()
    (work / "config" / "upgrade_policies.yaml").write_text(CONFIG)
    (work / "keys").mkdir()
    private, public = generate_keypair()
    (work / "keys" / "bench.pub").write_bytes(public)
    (work / "scenario.yaml").write_text(SCENARIO)
    engines = ("local", "celery") if args.engine == "both" else (args.engine,)
    results: dict[str, list[float]] = {}
    starts: dict[str, list[float]] = {}
    with running_sandbox(work / "scenario.yaml") as sandbox_url:
        for engine in engines:
            results[engine], starts[engine] = measure(
                engine, args.runs, work, sandbox_url, private, timelines=args.timeline
            )
    for engine, values in starts.items():
        # the stack's first task pays the api-server's one-time warm-up: its first Execution
        # API calls (the task's `run` 2.2 s, `rtif` 0.4 s on a quiet machine, then 0.01 s
        # each); later runs show the steady state of a stack that has run before
        warm = values[1:]
        print(
            f"[{engine}] run start -> first deploy (s): first run {values[0]:.2f}"
            + (f", later runs median {statistics.median(warm):.2f}" if warm else "")
        )
    print("per-batch orchestration overhead (s): engine, batches, median, mean, max")
    for engine, values in results.items():
        print(
            f"  {engine:7s} {len(values):3d}  {statistics.median(values):5.1f}  "
            f"{statistics.mean(values):5.1f}  {max(values):5.1f}"
        )

    # benchmarks/run.py's rows: the first engine measured (local unless --engine celery)
    engine = engines[0]
    emit(
        per_batch_overhead_s=round(statistics.median(results[engine]), 2),
        start_to_first_deploy_s=round(statistics.median(starts[engine]), 2),
        start_to_first_deploy_first_run_s=round(starts[engine][0], 2),
        **(
            {"start_to_first_deploy_warm_s": round(statistics.median(starts[engine][1:]), 2)}
            if len(starts[engine]) > 1
            else {}
        ),
        **{
            f"{name}_per_batch_overhead_s": round(statistics.median(values), 2)
            for name, values in results.items()
        },
        **{
            f"{name}_start_to_first_deploy_s": round(statistics.median(values), 2)
            for name, values in starts.items()
        },
        **{
            f"{name}_start_to_first_deploy_warm_s": round(statistics.median(values[1:]), 2)
            for name, values in starts.items()
            if len(values) > 1
        },
    )


if __name__ == "__main__":
    main()
