"""Benchmark: the hostile plan files of issue 15 cost fixed time and memory (targets: under 2 s
and under 200 MB per file).

Run: uv run python benchmarks/hostile_parse.py
For each file of tests/hostile.py (alias bombs, recursive aliases, deep nesting, 4,400-digit
numbers, 5,000-character time zones, a file over the size limit, ...) beside the example
policies: the seconds and the peak traced memory (tracemalloc) of `load_config` on that folder,
and the problem it gives. Before the fix, the 570-byte alias bomb took 24 s and 4.6 GB and
several files raised instead of answering. `calibration` is a fixed Python loop (about 0.12 s
on an idle core): on a loaded machine, scale the seconds by it.
"""

from __future__ import annotations

import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TIME_TARGET_S = 2.0
MEMORY_TARGET_MB = 200.0


def calibration() -> str:
    """A fixed Python loop: wall and CPU seconds (about 0.12 s each on an idle core)."""
    started, cpu = time.perf_counter(), time.process_time()
    sum(range(10_000_000))
    return f"{time.perf_counter() - started:.2f} s wall, {time.process_time() - cpu:.2f} s CPU"


def accepted_worst() -> dict[str, bytes]:
    """The costliest files still under every limit: a dense flow mapping just under the size
    limit, and aliases expanding to just under the value budget inside a plan's tenant list."""
    from powerx_upgrade.domain.yaml_source import MAX_FILE_CHARS

    pairs, dense = [], 0
    while dense < MAX_FILE_CHARS - 200:
        pairs.append(f"k{len(pairs)}: [a, b]")
        dense += len(pairs[-1]) + 2
    flow = ("version: 1\nx-dense: {" + ", ".join(pairs[:-2]) + "}\n").encode()
    levels = "x-l0: &l0 [" + ", ".join(f"t{i}" for i in range(45)) + "]\n"
    levels += "x-l1: &l1 [" + ", ".join(["*l0"] * 45) + "]\n"
    bomb = (
        "version: 1\n" + levels + "plans:\n  wide:\n    plugin: crm-sync\n"
        "    policy: standard-grey\n    tenants: {exclude: [" + ", ".join(["*l1"] * 45) + "]}\n"
    ).encode()
    return {"accepted_dense_256k": flow, "accepted_aliases_95k": bomb}


def main() -> int:
    from tests.hostile import HOSTILE_FILES

    from powerx_upgrade.config import load_config

    print(f"calibration: {calibration()} (about 0.12 s each on an idle core)")
    print(f"{'file':<24} {'bytes':>8} {'seconds':>8} {'cpu s':>6} {'peak MB':>8}  problem")
    worst_s = worst_mb = 0.0
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder)
        (config / "plans").mkdir()
        shutil.copy(ROOT / "include" / "config" / "upgrade_policies.yaml", config)
        load_config([config])  # warm: imports, the monitoring mapping
        for name, content in {**HOSTILE_FILES, **accepted_worst()}.items():
            path = config / "plans" / f"{name}.yaml"
            path.write_bytes(content)
            started, cpu = time.perf_counter(), time.process_time()
            result = load_config([config])
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            tracemalloc.start()  # a second run for the memory: tracing slows it several times
            load_config([config])
            peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            path.unlink()
            mine = [p for p in result.errors if p.file.endswith(f"{name}.yaml")]
            first = str(mine[0]).split(": ", 1)[1][:70] if mine else "(accepted: no problem)"
            figures = f"{len(content):>8,} {elapsed:>8.3f} {cpu:>6.3f} {peak_mb:>8.1f}"
            print(f"{name:<24} {figures}  {first}")
            worst_s, worst_mb = max(worst_s, cpu), max(worst_mb, peak_mb)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ok = worst_s < TIME_TARGET_S and worst_mb < MEMORY_TARGET_MB
    print(
        f"worst: {worst_s:.3f} s CPU (target < {TIME_TARGET_S:.0f}), {worst_mb:.1f} MB traced peak "
        f"(target < {MEMORY_TARGET_MB:.0f}); process max RSS {rss_mb:.0f} MB; "
        f"{'ok' if ok else 'OVER TARGET'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
