"""Benchmark: plan 100,000 tenants into 5 batches (issue 2 target: under 1 s on a 2-core machine).

Run: uv run python benchmarks/plan_100k_tenants.py [--tenants N] [--repeat R]
Prints the best and median wall time of `plan_batches` over R runs, plus the batch sizes.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from figures import emit  # the script's own folder is on sys.path

from powerx_upgrade.domain.models import Plan, Policy, SourceRef, TenantSelection
from powerx_upgrade.domain.planner import Tenant, plan_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    rng = random.Random(42)
    tiers, regions = ("gold", "silver", "bronze", "trial"), ("eu", "us", "apac")
    tenants = [
        Tenant(f"t-{i:06d}", {"tier": rng.choice(tiers), "region": rng.choice(regions)})
        for i in range(args.tenants)
    ]
    policy = Policy.model_validate(
        {
            "batches": [
                {"name": "canary", "ratio": 0.01, "bake": "10m"},
                {"ratio": 0.05, "bake": "10m"},
                {"ratio": 0.2, "bake": "15m"},
                {"ratio": 0.5, "bake": "30m", "approval": "required"},
                {"ratio": 1.0, "bake": "15m"},
            ],
            "gate": {"checks": [{"metric": "error_rate", "op": "<=", "limit": 0.05}]},
        }
    )
    plan = Plan(
        id="bench",
        source=SourceRef(file="bench"),
        plugin="crm-sync",
        policy_id="bench",
        policy=policy,
        tenants=TenantSelection.model_validate(
            {
                "select": {"tier": ["gold", "silver", "bronze"]},
                "exclude": ["t-000042", {"region": "apac", "tier": "bronze"}],
                "canary": ["t-000001", "t-000002", "t-000003"],
                "order": [{"label": "tier", "values": ["bronze", "silver", "gold"]}, "region"],
            }
        ),
    )
    timings = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        result = plan_batches(plan, tenants)
        timings.append(time.perf_counter() - started)
    sizes = [len(b.tenants) for b in result.batches]
    print(f"planned {len(result.selected):,} selected of {args.tenants:,} tenants into {sizes}")
    print(
        f"plan_batches: best {min(timings):.3f} s, median {statistics.median(timings):.3f} s "
        f"over {args.repeat} runs (target < 1 s)"
    )
    emit(tenants=args.tenants, median_s=statistics.median(timings), best_s=min(timings))


if __name__ == "__main__":
    main()
