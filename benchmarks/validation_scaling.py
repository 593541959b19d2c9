"""Benchmark: validation is linear in the number of problems (issue 15 target: 50,000 problems
in under 5 s).

Run: uv run python benchmarks/validation_scaling.py [--sizes 1000 10000 50000]
Builds configs of N invalid policies, each with one problem (an unknown field or a ratio over
100 %, alternately), spread over files of 100 policies (a file is limited to 256 KiB); validates
them in process (YAML parsing included) and prints seconds, problems and microseconds per
problem: a flat last column is a linear curve. `cpu s` is the process's CPU time, which a shared
machine inflates less than the wall clock; the target is judged on it. `calibration` is a fixed
Python loop (about 0.12 s on an idle core): on a loaded machine, scale the figures by it.
Before the fix, 1,000 / 2,000 / 4,000 invalid policies took 2.6 / 5.9 / 18.7 s (quadratic).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from powerx_upgrade.domain.config import parse_config
from powerx_upgrade.domain.yaml_source import parse_yaml

PER_FILE = 100
GATE = 'gate: {checks: [{metric: error_rate, op: "<=", limit: 0.05}]}'
TARGET_S = 5.0


def config_files(policies: int) -> list[tuple[str, str]]:
    files = []
    for start in range(0, policies, PER_FILE):
        lines = ["version: 1", "policies:"]
        for n in range(start, min(start + PER_FILE, policies)):
            ratio, extra = (1.0, f", unknwn_{n % 13}: 1") if n % 2 else (2.5, "")
            lines.append(f"  p{n}: {{batches: [{{ratio: {ratio}, bake: 1m}}], {GATE}{extra}}}")
        files.append((f"plans/f{start // PER_FILE:04d}.yaml", "\n".join(lines) + "\n"))
    return files


def calibration() -> str:
    """A fixed Python loop: wall and CPU seconds (about 0.12 s each on an idle core)."""
    started, cpu = time.perf_counter(), time.process_time()
    sum(range(10_000_000))
    return f"{time.perf_counter() - started:.2f} s wall, {time.process_time() - cpu:.2f} s CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 50_000])
    args = parser.parse_args()
    print(f"calibration: {calibration()} (about 0.12 s each on an idle core)")
    head = f"{'policies':>9} {'problems':>9} {'seconds':>8} {'cpu s':>7} {'us/problem':>11}"
    print(f"{head} {'of which YAML cpu s':>20} {'validation cpu s':>17}")
    worst = validation = 0.0
    for size in args.sizes:
        files = config_files(size)
        started, cpu_started = time.perf_counter(), time.process_time()
        result = parse_config(files)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        problems = len(result.problems)
        assert not result.policies and len(result.errors) >= size
        per = cpu / problems * 1e6
        gc.disable()  # as parse_config does
        parse_cpu = time.process_time()
        for name, text in files:
            parse_yaml(text, name)
        parse_cpu = time.process_time() - parse_cpu
        gc.enable()
        row = f"{size:>9,} {problems:>9,} {elapsed:>8.2f} {cpu:>7.2f} {per:>11.1f}"
        print(f"{row} {parse_cpu:>20.2f} {cpu - parse_cpu:>17.2f}")
        if problems >= 50_000:
            worst = max(worst, cpu)
            validation = cpu - parse_cpu
    if worst:
        verdict = "ok" if worst < TARGET_S else "OVER TARGET"
        print(
            f"target: 50,000 problems under {TARGET_S:.0f} s (CPU): {worst:.2f} s in all "
            f"({verdict}); validation without YAML parsing {validation:.2f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
