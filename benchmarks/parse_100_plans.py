"""Benchmark: parse a config with 100 plans into DAGs (issue 4 target: under 3 s in total).

Run: uv run python benchmarks/parse_100_plans.py [--plans N]
Writes a generated config to a temp dir, then measures in fresh processes (what a dag-processor
pays per parse): validating the config, building the DAGs, and Airflow's DagBag parse of
dags/upgrade_plans.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from figures import emit  # the script's own folder is on sys.path

ROOT = Path(__file__).resolve().parents[1]

POLICY = """
  grey-{n}:
    batches:
      - {{name: canary, ratio: 0.01, bake: 10m}}
      - {{ratio: 0.10, bake: 15m}}
      - {{ratio: 0.50, bake: 30m, approval: required}}
      - {{ratio: 1.00, bake: 15m}}
    deploy: {{concurrency: 20, retries: 3, max_failed: 2%}}
    gate:
      checks:
        - {{metric: error_rate, op: "<=", limit: 0.05}}
        - {{metric: latency_p95_ms, op: "<=", limit: +20%, baseline: pre_upgrade,
           scope: per_tenant, max_breaching_tenants: 1}}
"""

PLAN = """
  plan-{n:03d}:
    plugin: plugin-{n:03d}
    policy: grey-{p}
    target_version: 2.{n}.0
    tenants: {{select: {{tier: [gold, silver]}}, exclude: [t-0042], canary: [t-0001]}}
    window: {{schedule: "0 2 * * SAT", duration: 4h, timezone: Asia/Shanghai,
              freeze: ["2026-12-24/2026-12-26"]}}
    owners: [ops@example.com]
"""

MEASURE = textwrap.dedent("""
    import json, time
    t0 = time.perf_counter()
    from powerx_upgrade.config import load_config
    t1 = time.perf_counter()
    config = load_config()
    t2 = time.perf_counter()
    from powerx_upgrade.orchestration.factory import build_dags
    t3 = time.perf_counter()
    dags = build_dags(config)
    t4 = time.perf_counter()
    print(json.dumps({"plans": len(config.plans), "dags": len(dags),
                      "validate_s": t2 - t1, "build_dags_s": t4 - t3,
                      "import_airflow_side_s": t3 - t2,
                      "tasks": sum(len(d.tasks) for d in dags.values())}))
""")

DAGBAG = textwrap.dedent("""
    import json, time
    from airflow.dag_processing.dagbag import DagBag
    t0 = time.perf_counter()
    bag = DagBag(dag_folder=%r)
    t1 = time.perf_counter()
    print(json.dumps({"dagbag_parse_s": t1 - t0, "dags": len(bag.dag_ids),
                      "import_errors": len(bag.import_errors)}))
""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--plans", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "upgrade_policies.yaml"
        policies = "".join(POLICY.format(n=n) for n in range(5))
        plans = "".join(PLAN.format(n=n, p=n % 5) for n in range(args.plans))
        config.write_text(f"version: 1\npolicies:{policies}plans:{plans}")
        env = {
            **os.environ,
            "POWERX_UPGRADE_CONFIG": str(config),
            "AIRFLOW_HOME": tmp,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        }
        first = json.loads(
            subprocess.run(
                [sys.executable, "-c", MEASURE], env=env, check=True, capture_output=True, text=True
            ).stdout.splitlines()[-1]
        )
        bag = json.loads(
            subprocess.run(
                [sys.executable, "-c", DAGBAG % str(ROOT / "dags")],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.splitlines()[-1]
        )
    print(f"{first['plans']} plans -> {first['dags']} DAGs, {first['tasks']:,} tasks")
    print(f"validate config: {first['validate_s']:.3f} s")
    print(f"build DAGs:      {first['build_dags_s']:.3f} s")
    print(
        f"DagBag parse of dags/upgrade_plans.py (everything): {bag['dagbag_parse_s']:.3f} s "
        f"({bag['dags']} DAGs, {bag['import_errors']} import errors; target < 3 s)"
    )
    emit(plans=first["plans"], dagbag_parse_s=bag["dagbag_parse_s"], validate_s=first["validate_s"])


if __name__ == "__main__":
    main()
