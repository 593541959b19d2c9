"""Benchmark: 200 concurrent upgrades (then rollbacks) against a 10,000-tenant sandbox (not a test).

Run: uv run python benchmarks/sandbox_upgrades.py [--tenants 10000] [--concurrent 200]
Prints wall time, throughput and per-request latency, and checks that no request failed and
that exactly the upgraded tenants changed version (and changed back). Rounds use a minimal
asyncio HTTP client (one connection per request) so the figures measure the server; the last
round uses httpx.AsyncClient to show what a real client library adds on the same 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import httpx

from powerx_dev.sandbox.testing import running_sandbox

SCENARIO = """\
name: bench-upgrades
seed: 3
plugin: crm-sync
tenants:
  count: {count}
  version: 2.3.1
  labels: {{tier: {{gold: 0.2, silver: 0.3, bronze: 0.5}}}}
latency: {{upgrade_ms: 50, rollback_ms: 50, jitter: 0.2}}
versions:
  2.4.0: {{error_rate: 0.012, latency_p95_ms: 125}}
"""
SHA = "0" * 64


def _body(action: str, tenant: str) -> dict:
    if action == "upgrade":
        return {
            "version": "2.4.0",
            "artifact": {"uri": "s3://bench/crm-sync-2.4.0.tgz", "sha256": SHA},
            "idempotency_key": f"{action}-{tenant}",
        }
    return {"to_version": "2.3.1", "idempotency_key": f"{action}-{tenant}"}


def _succeeded(status: int, payload: bytes) -> int:
    if status == 200 and json.loads(payload)["operation"]["status"] == "succeeded":
        return 200
    return status


async def _raw_post(host: str, port: int, path: str, body: dict) -> tuple[int, bytes]:
    """A minimal HTTP/1.1 POST on its own connection: measures the server, not a client library."""
    data = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + data)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    header, _, payload = answer.partition(b"\r\n\r\n")
    return int(header.split(b" ", 2)[1]), payload


async def burst(
    url: str, tenants: list[str], action: str, client_kind: str
) -> tuple[float, list[float], Counter]:
    parsed = urlparse(url)
    limits = httpx.Limits(max_connections=len(tenants), max_keepalive_connections=len(tenants))
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(tenant: str) -> tuple[int, float]:
            path = f"/internal/plugins/crm-sync/tenants/{tenant}/{action}"
            began = time.perf_counter()
            if client_kind == "raw":
                status, payload = await _raw_post(
                    parsed.hostname, parsed.port, path, _body(action, tenant)
                )
            else:
                response = await client.post(path, json=_body(action, tenant))
                status, payload = response.status_code, response.content
            return _succeeded(status, payload), (time.perf_counter() - began) * 1000

        started = time.perf_counter()
        results = await asyncio.gather(*(one(t) for t in tenants))
        wall = time.perf_counter() - started
    return wall, sorted(ms for _, ms in results), Counter(code for code, _ in results)


def report(label: str, wall: float, latencies: list[float], codes: Counter) -> None:
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    print(
        f"{label}: {len(latencies)} concurrent in {wall * 1000:.0f} ms "
        f"({len(latencies) / wall:.0f}/s); latency median {statistics.median(latencies):.0f} ms, "
        f"p95 {p95:.0f} ms, max {latencies[-1]:.0f} ms; outcomes {dict(codes)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench-upgrades.yaml"
        path.write_text(SCENARIO.format(count=args.tenants))
        started = time.perf_counter()
        with running_sandbox(path, startup_timeout=120) as url:
            print(f"sandbox with {args.tenants} tenants up in {time.perf_counter() - started:.2f}s")
            with httpx.Client(base_url=url, timeout=60) as client:
                began = time.perf_counter()
                listing = client.get("/internal/plugins/crm-sync/tenants")
                took = (time.perf_counter() - began) * 1000
                print(
                    f"tenant listing: {len(listing.json()['tenants'])} tenants, "
                    f"{len(listing.content) / 1024:.0f} KiB in {took:.0f} ms"
                )
            step = max(1, args.tenants // (args.concurrent * args.rounds))
            failures = 0
            for round_no in range(args.rounds):
                offset = round_no * args.concurrent * step
                chosen = [f"t-{n:04d}" for n in range(1 + offset, args.tenants + 1, step)]
                chosen = chosen[: args.concurrent]
                client_kind = "httpx" if round_no == args.rounds - 1 else "raw"
                for action in ("upgrade", "rollback"):
                    with httpx.Client(base_url=url, timeout=60) as client:
                        last = client.get("/sandbox/events").json()["events"][-1]["seq"]
                    wall, latencies, codes = asyncio.run(burst(url, chosen, action, client_kind))
                    label = f"round {round_no + 1} {action:8} ({client_kind:5} client)"
                    report(label, wall, latencies, codes)
                    failures += sum(n for code, n in codes.items() if code != 200)
                    with httpx.Client(base_url=url, timeout=60) as client:
                        events = client.get(
                            "/sandbox/events", params={"since": last, "prefix": "/internal"}
                        ).json()["events"]
                    served = sorted(e["duration_ms"] for e in events)
                    print(
                        f"{'':>4} server-side: median {statistics.median(served):.1f} ms, "
                        f"p95 {served[int(0.95 * (len(served) - 1))]:.1f} ms "
                        f"(includes the scenario's 50 ms +-20 % operation latency)"
                    )
                with httpx.Client(base_url=url, timeout=60) as client:
                    versions = Counter(
                        t["version"] for t in client.get("/sandbox/tenants").json()["tenants"]
                    )
                assert versions == {"2.3.1": args.tenants}, versions
            print(f"unexpected failures: {failures}; fleet back on 2.3.1: yes")


if __name__ == "__main__":
    main()
