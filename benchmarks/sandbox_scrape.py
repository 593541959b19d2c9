"""Benchmark: what a Prometheus scrape of the sandbox's `/metrics` costs (not a test).

Run: uv run python benchmarks/sandbox_scrape.py [--tenants 60 10000] [--scrapes 10]
For each fleet size, over HTTP against a sandbox subprocess: a scrape every second (the
steady state, what a 1 s scrape interval costs), with a third of the fleet on a second version;
then, in process, a first scrape that must catch up ten minutes of traffic.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from powerx_dev.sandbox.scenario import parse_scenario
from powerx_dev.sandbox.state import SandboxState
from powerx_dev.sandbox.testing import running_sandbox

SCENARIO = """\
name: bench-scrape
seed: 11
plugin: crm-sync
tenants:
  count: {count}
  version: 2.3.1
  labels: {{tier: {{gold: 0.2, silver: 0.3, bronze: 0.5}}}}
latency: {{upgrade_ms: 1, rollback_ms: 1}}
versions:
  2.4.0: {{error_rate: 0.012, latency_p95_ms: 125}}
"""
SHA = "0" * 64


def steady(count: int, scrapes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scenario.yaml"
        path.write_text(SCENARIO.format(count=count))
        with running_sandbox(path) as url, httpx.Client(base_url=url, timeout=60) as client:
            for number in range(1, count + 1, 3):
                client.post(
                    f"/internal/plugins/crm-sync/tenants/t-{number:04d}/upgrade",
                    json={
                        "version": "2.4.0",
                        "artifact": {"uri": "s3://r/crm-sync-2.4.0.tgz", "sha256": SHA},
                        "idempotency_key": f"k-{number}",
                    },
                )
            client.get("/metrics")  # catch up from the sandbox's start
            timings, size = [], 0
            for _ in range(scrapes):
                time.sleep(1.0)
                started = time.perf_counter()
                size = len(client.get("/metrics").content)
                timings.append((time.perf_counter() - started) * 1000)
    median = statistics.median(timings)
    print(
        f"{count:>6} tenants, scrape every 1 s over HTTP: median {median:.1f} ms, "
        f"max {max(timings):.1f} ms, {size / 1024:.0f} KiB"
    )


def catch_up(count: int) -> None:
    clock = [1_767_225_600.0]
    state = SandboxState(parse_scenario(SCENARIO.format(count=count)), clock=lambda: clock[0])
    clock[0] += 600
    series, now, faults = state.prepare_scrape()
    started = time.perf_counter()
    state.exposition.render(series, now, faults)
    print(
        f"{count:>6} tenants, first scrape 10 minutes after start (in process): "
        f"{time.perf_counter() - started:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, nargs="+", default=[60, 10_000])
    parser.add_argument("--scrapes", type=int, default=10)
    args = parser.parse_args()
    for count in args.tenants:
        steady(count, args.scrapes)
        catch_up(count)


if __name__ == "__main__":
    main()
