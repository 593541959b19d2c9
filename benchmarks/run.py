"""Run every benchmark, print each figure beside its target and its physical floor, and write the
figures as JSON so that two commits can be compared.

Run:
    uv run python benchmarks/run.py                      # the default rows (a few minutes)
    uv run python benchmarks/run.py --long               # also the long rows (live 10k, 100k)
    uv run python benchmarks/run.py --only rollback_execute_1k --repeat 3
    uv run python benchmarks/run.py --compare A.json B.json

Each benchmark is a script of this folder run in its own process; it prints its figures on a
`FIGURES {json}` line (benchmarks/figures.py). A row takes one figure of one script. With
`--repeat N` every script runs N times and the row shows the median (the machine is shared:
single runs are noisy). The floor is what the platform's latency alone costs:
tenants x latency / concurrency. Results go to `benchmarks/results/<commit>.json` (gitignored)
or to `--output`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from figures import parse

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@dataclass(frozen=True)
class Row:
    """One figure of one benchmark script, with what it should be and what physics allows."""

    name: str
    script: str
    args: tuple[str, ...]
    figure: str
    target_s: float | None
    what: str
    tenants: int | None = None
    latency_s: float | None = None
    concurrency: int | None = None
    long: bool = False

    @property
    def floor_s(self) -> float | None:
        if self.tenants is None or self.latency_s is None or not self.concurrency:
            return None
        return self.tenants * self.latency_s / self.concurrency


ROWS = (
    Row(
        "rollback_execute_1k",
        "rollback_1000_tenants.py",
        ("--tenants", "1000"),
        "execute_s",
        1.5,
        "in-process rollback execute, 1,000 tenants",
        tenants=1000,
        latency_s=0.05,
        concurrency=50,
    ),
    Row(
        "rollback_execute_10k",
        "rollback_1000_tenants.py",
        ("--tenants", "10000"),
        "execute_s",
        None,
        "in-process rollback execute, 10,000 tenants (cost growth)",
        tenants=10_000,
        latency_s=0.05,
        concurrency=50,
        long=True,
    ),
    Row(
        "rollback_execute_100k",
        "rollback_1000_tenants.py",
        ("--tenants", "100000"),
        "execute_s",
        None,
        "in-process rollback execute, 100,000 tenants (cost growth; setup takes minutes)",
        tenants=100_000,
        latency_s=0.05,
        concurrency=50,
        long=True,
    ),
    Row(
        "api_rollback_live_1k",
        "api_rollback_live.py",
        ("--tenants", "1000"),
        "call_to_restored_s",
        5.0,
        "API rollback call -> last tenant restored, 1,000 tenants, live stack",
        tenants=1000,
        latency_s=0.05,
        concurrency=50,
    ),
    Row(
        "api_rollback_live_10k",
        "api_rollback_live.py",
        ("--tenants", "10000"),
        "call_to_restored_s",
        15.0,
        "same, 10,000 tenants",
        tenants=10_000,
        latency_s=0.05,
        concurrency=50,
        long=True,
    ),
    Row(
        "orchestration_per_batch",
        "orchestration_overhead.py",
        ("--runs", "3"),
        "per_batch_overhead_s",
        3.0,
        "orchestration per batch beyond deploy and bake, live stack",
    ),
    Row(
        "run_start_to_first_deploy",
        "orchestration_overhead.py",
        ("--runs", "3"),
        "start_to_first_deploy_warm_s",
        4.0,
        "run start -> first deploy, live stack (a stack that has run before)",
    ),
    Row(
        "run_start_to_first_deploy_cold",
        "orchestration_overhead.py",
        ("--runs", "3"),
        "start_to_first_deploy_first_run_s",
        None,
        "same, the first run after the api-server started (its one-time warm-up included)",
    ),
    Row(
        "run_100k_live",
        "run_100k_live.py",
        (),
        "total_s",
        None,
        "100,000-tenant run, live stack (completes; every figure printed)",
        long=True,
    ),
    Row(
        "report_10k",
        "render_10k_report.py",
        ("--tenants", "10000"),
        "total_s",
        5.0,
        "report for 10,000 tenants",
    ),
    Row(
        "report_100k",
        "render_10k_report.py",
        ("--tenants", "100000"),
        "total_s",
        5.0,
        "report for 100,000 tenants",
        long=True,
    ),
    Row(
        "plan_100k",
        "plan_100k_tenants.py",
        ("--repeat", "3"),
        "median_s",
        1.0,
        "plan 100,000 tenants into batches",
    ),
    Row(
        "parse_100_plans",
        "parse_100_plans.py",
        (),
        "dagbag_parse_s",
        3.0,
        "DagBag parse of 100 plans",
    ),
)


def run_script(script: str, args: tuple[str, ...], timeout: float) -> dict[str, Any]:
    """One run of a benchmark script: its figures, or why there are none."""
    path = HERE / script
    if not path.exists():
        return {"error": f"benchmarks/{script} does not exist on this commit"}
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, str(path), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    figures = parse(done.stdout)
    figures["wall_s"] = time.monotonic() - started
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        figures["error"] = f"exit {done.returncode}: " + " | ".join(tail)
    return figures


def measure(rows: list[Row], repeat: int, timeout: float) -> dict[str, Any]:
    """Run each script of `rows` `repeat` times (a script shared by rows runs once per round)."""
    runs: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row.script, row.args)
        if key in runs:
            continue
        runs[key] = []
        for n in range(repeat):
            print(f"... {row.script} {' '.join(row.args)} (run {n + 1}/{repeat})", flush=True)
            runs[key].append(run_script(row.script, row.args, timeout))
    results: dict[str, Any] = {}
    for row in rows:
        samples = runs[(row.script, row.args)]
        values = [s[row.figure] for s in samples if isinstance(s.get(row.figure), int | float)]
        errors = sorted({s["error"] for s in samples if "error" in s})
        results[row.name] = {
            "what": row.what,
            "figure": row.figure,
            "median_s": statistics.median(values) if values else None,
            "samples_s": values,
            "target_s": row.target_s,
            "floor_s": row.floor_s,
            "errors": errors,
            "figures": samples[-1],
        }
    return results


def verdict(result: dict[str, Any]) -> str:
    value, target = result.get("median_s"), result.get("target_s")
    if value is None:
        return "no figure"
    if target is None:
        return "measured"
    return "ok" if value <= target else "OVER"


def show(results: dict[str, Any]) -> None:
    print()
    print(f"{'row':28} {'median':>9} {'target':>8} {'floor':>8}  verdict")
    for name, result in results.items():
        value = _fmt(result.get("median_s"))
        print(
            f"{name:28} {value:>9} {_fmt(result.get('target_s')):>8} "
            f"{_fmt(result.get('floor_s')):>8}  {verdict(result)}"
        )
        for error in result.get("errors") or []:
            print(f"{'':28} ! {error}")


def compare(before: Path, after: Path) -> None:
    old, new = (json.loads(p.read_text())["results"] for p in (before, after))
    print(f"{'row':28} {before.stem[:9]:>9} {after.stem[:9]:>9} {'change':>8} {'target':>8}")
    for name in dict.fromkeys([*old, *new]):
        a = (old.get(name) or {}).get("median_s")
        b = (new.get(name) or {}).get("median_s")
        target = (new.get(name) or old.get(name) or {}).get("target_s")
        change = f"{(b - a) / a:+.0%}" if a and b is not None else "-"
        print(f"{name:28} {_fmt(a):>9} {_fmt(b):>9} {change:>8} {_fmt(target):>8}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--long", action="store_true", help="also the long rows")
    parser.add_argument("--only", nargs="+", metavar="ROW", help="just these rows")
    parser.add_argument("--repeat", type=int, default=1, help="runs per script; median shown")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per script run")
    parser.add_argument("--output", type=Path, help="JSON file (default results/<commit>.json)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
        return
    known = {row.name: row for row in ROWS}
    if args.list:
        for row in ROWS:
            print(f"{row.name:28} {'(long) ' if row.long else ''}{row.what}")
        return
    unknown = sorted(set(args.only or ()) - set(known))
    if unknown:
        raise SystemExit(f"unknown row(s): {', '.join(unknown)}; --list shows them")
    rows = (
        [known[n] for n in args.only] if args.only else [r for r in ROWS if args.long or not r.long]
    )
    results = measure(rows, max(1, args.repeat), args.timeout)
    show(results)
    commit = _commit()
    output = args.output or HERE / "results" / f"{commit}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "commit": commit,
                "at": datetime.now(UTC).isoformat(),
                "machine": {"python": platform.python_version(), "cpus": _cpus()},
                "repeat": args.repeat,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"\nfigures written to {output}")


def _cpus() -> int | None:
    import os

    return os.cpu_count()


if __name__ == "__main__":
    main()
