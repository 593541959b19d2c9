"""Benchmark: roll back 1,000 tenants at 50 ms platform latency, decision to last verified tenant
(issue 4 target: under 30 s; the use case's floor is 3 minutes).

Run: uv run python benchmarks/rollback_1000_tenants.py [--tenants N] [--concurrency C]
Starts the sandbox with N tenants (50 ms upgrade/rollback latency), upgrades them all through the
rollout's own deploy step, then times the rollback the way the DAG's rollback group does it:
scope from the ledger, concurrent idempotent rollbacks in shards, verification of every tenant
read back from the platform. Real HTTP, real SQLite ledger.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from figures import emit  # the script's own folder is on sys.path

SCENARIO = """
name: rollback-benchmark
seed: 5
plugin: crm-sync
tenants: {{count: {count}, version: 2.3.1, labels: {{tier: {{gold: 0.5, silver: 0.5}}}}}}
latency: {{upgrade_ms: 50, rollback_ms: 50, jitter: 0.2}}
traffic: {{rps: 20, error_rate: 0.01, latency_p95_ms: 120}}
versions:
  2.5.0: {{error_rate: 0.09, latency_p95_ms: 130}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50, help="policy rollback.concurrency")
    parser.add_argument("--shard-size", type=int, default=50, help="policy deploy.shard_size")
    parser.add_argument(
        "--parallel-shards", type=int, default=4, help="shards running at once (Airflow workers)"
    )
    args = parser.parse_args()

    from powerx_dev.sandbox.testing import running_sandbox
    from powerx_upgrade.domain.models import Plan, Policy, SourceRef, TenantSelection
    from powerx_upgrade.ledger import Ledger
    from powerx_upgrade.rollout import finalize, operations
    from powerx_upgrade.rollout.context import RunContext
    from powerx_upgrade.rollout.record import Recorder

    with tempfile.TemporaryDirectory() as tmp:
        scenario = Path(tmp) / "scenario.yaml"
        scenario.write_text(SCENARIO.format(count=args.tenants))
        with running_sandbox(scenario, startup_timeout=60) as url:
            os.environ["AIRFLOW_HOME"] = tmp
            os.environ["AIRFLOW_CONN_POWERX_PLATFORM"] = url
            from powerx_upgrade.orchestration.hooks.platform import PowerXPlatformHook

            ledger = Ledger(f"sqlite:///{tmp}/ledger.db")
            ctx = RunContext(
                run_id="bench",
                dag_id="d",
                plan_id="p",
                plugin="crm-sync",
                target_version="2.5.0",
                artifact={"uri": "s3://x", "sha256": "b" * 64},
            )
            ledger.start_run(
                ctx.run_id, dag_id="d", plan_id="p", plugin="crm-sync", target_version="2.5.0"
            )
            policy = Policy.model_validate(
                {
                    "batches": [{"ratio": 1.0, "bake": "1m"}],
                    "gate": {"checks": [{"metric": "error_rate", "op": "<=", "limit": 0.05}]},
                    "rollback": {"scope": "all_upgraded", "concurrency": args.concurrency},
                }
            )
            plan = Plan(
                id="p",
                source=SourceRef(file="bench"),
                plugin="crm-sync",
                policy_id="p",
                policy=policy,
                tenants=TenantSelection(),
            )
            hook = PowerXPlatformHook(retries=0)
            recorder = Recorder(ledger)
            retry = operations.RetryPolicy(retries=3)
            tenants = [t["id"] for t in hook.list_tenants("crm-sync")]
            started = time.perf_counter()
            shards = [
                tenants[i : i + args.shard_size] for i in range(0, len(tenants), args.shard_size)
            ]
            with ThreadPoolExecutor(args.parallel_shards) as pool:
                list(
                    pool.map(
                        lambda s: operations.deploy_shard(
                            hook,
                            ledger,
                            recorder,
                            ctx,
                            batch=1,
                            tenants=s,
                            concurrency=args.concurrency,
                            retry=retry,
                        ),
                        shards,
                    )
                )
            print(
                f"setup: upgraded {len(tenants):,} tenants in {time.perf_counter() - started:.1f} s"
            )

            decided = time.perf_counter()
            targets = finalize.rollback_plan(hook, ledger, plan, ctx, failing_batch=1, breaching=[])
            scoped = time.perf_counter()
            chunks = [
                targets[i : i + args.shard_size] for i in range(0, len(targets), args.shard_size)
            ]
            with ThreadPoolExecutor(args.parallel_shards) as pool:
                summaries = list(
                    pool.map(
                        lambda c: operations.rollback_shard(
                            hook,
                            ledger,
                            recorder,
                            ctx,
                            targets=c,
                            concurrency=args.concurrency,
                            retry=retry,
                        ),
                        chunks,
                    )
                )
            executed = time.perf_counter()
            upgrades = {a.tenant_id: a for a in ledger.actions(ctx.run_id, kind="upgrade")}
            verdict = operations.verify_rollback(hook, ctx, targets, upgrades)
            verified = time.perf_counter()
    ok = sum(s.count("succeeded") for s in summaries)
    print(
        f"rollback of {len(targets):,} tenants at 50 ms latency "
        f"(concurrency {args.concurrency}, shards of {args.shard_size}, "
        f"{args.parallel_shards} at once):"
    )
    print(f"  scope:   {scoped - decided:6.2f} s")
    print(f"  execute: {executed - scoped:6.2f} s  ({ok:,} succeeded)")
    print(
        f"  verify:  {verified - executed:6.2f} s  ({len(verdict['verified']):,} verified, "
        f"{len(verdict['broken'])} broken)"
    )
    print(f"  decision to last verified tenant: {verified - decided:.2f} s (target < 30 s)")
    emit(
        tenants=len(targets),
        concurrency=args.concurrency,
        parallel_shards=args.parallel_shards,
        latency_s=0.05,
        scope_s=scoped - decided,
        execute_s=executed - scoped,
        verify_s=verified - executed,
        decision_to_verified_s=verified - decided,
        succeeded=ok,
    )


if __name__ == "__main__":
    main()
