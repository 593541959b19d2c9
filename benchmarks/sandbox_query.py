"""Benchmark: monitoring queries for 1,000 tenants against a sandbox over HTTP (not a test).

Run: uv run python benchmarks/sandbox_query.py [--tenants 1000] [--repeat 10]
Prints latency and payload size per interval length, with a third of the fleet upgraded just
before (so intervals contain version changes, the expensive case).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from powerx_dev.sandbox.testing import running_sandbox

SCENARIO = """\
name: bench-query
seed: 11
plugin: crm-sync
tenants:
  count: {count}
  version: 2.3.1
  labels: {{tier: {{gold: 0.2, silver: 0.3, bronze: 0.5}}}}
latency: {{upgrade_ms: 5, rollback_ms: 5}}
versions:
  2.4.0: {{error_rate: 0.012, latency_p95_ms: 125}}
faults:
  - {{type: error_rate, version: 2.4.0, where: {{tier: bronze}}, value: 0.09, after: 0s}}
"""
SHA = "0" * 64


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def upgrade_third(url: str, count: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        semaphore = asyncio.Semaphore(100)

        async def one(n: int) -> None:
            async with semaphore:
                body = {
                    "version": "2.4.0",
                    "artifact": {"uri": "s3://bench/crm-sync-2.4.0.tgz", "sha256": SHA},
                    "idempotency_key": f"bench-{n}",
                }
                response = await client.post(
                    f"/internal/plugins/crm-sync/tenants/t-{n:04d}/upgrade", json=body
                )
                response.raise_for_status()

        await asyncio.gather(*(one(n) for n in range(1, count + 1, 3)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench-query.yaml"
        path.write_text(SCENARIO.format(count=args.tenants))
        with running_sandbox(path) as url:
            started = time.perf_counter()
            asyncio.run(upgrade_third(url, args.tenants))
            print(f"setup: upgraded {len(range(1, args.tenants + 1, 3))} tenants in "
                  f"{time.perf_counter() - started:.2f}s")  # fmt: skip
            time.sleep(2)
            ids = [f"t-{n:04d}" for n in range(1, args.tenants + 1)]
            print(f"monitoring query, {len(ids)} tenants, {args.repeat} runs each:")
            print(f"{'interval':>10} {'median ms':>10} {'p95 ms':>8} {'max ms':>8} "
                  f"{'KiB':>7} {'tenants w/ data':>16}")  # fmt: skip
            with httpx.Client(base_url=url, timeout=120) as client:
                for minutes in (5, 10, 30, 60):
                    end = datetime.now(UTC)
                    body = {
                        "plugin": "crm-sync",
                        "tenants": ids,
                        "start": iso(end - timedelta(minutes=minutes)),
                        "end": iso(end),
                    }
                    timings = []
                    for _ in range(args.repeat):
                        began = time.perf_counter()
                        response = client.post("/internal/monitoring/query", json=body)
                        timings.append((time.perf_counter() - began) * 1000)
                        response.raise_for_status()
                    timings.sort()
                    p95 = timings[min(len(timings) - 1, int(0.95 * len(timings)))]
                    print(
                        f"{minutes:>8}m {statistics.median(timings):>10.1f} {p95:>8.1f} "
                        f"{timings[-1]:>8.1f} {len(response.content) / 1024:>7.1f} "
                        f"{len(response.json()['tenants']):>16}"
                    )


if __name__ == "__main__":
    main()
