"""Benchmark: build and render the reports of a 10,000-tenant run (issue 5 target: under 5 s; the
use case allows 10 minutes from the run's end).

Run: uv run python benchmarks/render_10k_report.py [--tenants N] [--pokes P]
Fills a real SQLite ledger the way a run does (through the Ledger API): 5 batches (1 %, 10 %,
25 %, 50 %, 100 %), an upgrade action per tenant, P earlier gate pokes per batch, a pause at
batch 3 that a person resumes, a failing last batch and a rollback of every upgraded tenant
with its verification. The gate rows are the ones `rollout.gate_steps._record_gate` writes:
each earlier poke as its compact per-check summary (`rollout.gating.summarise`: one row per
check, the worst tenant for a per-tenant check) plus its replay input (`domain.replay.
input_json`, capped by TENANT_CAP / BUDGET: beyond the cap it says `omitted`), the deciding
poke as an input-only row, and the final verdict with every measurement (one per tenant of the
batch plus the batch's error rate). Before issue 16's report work the fill wrote every poke
with one measurement per tenant (600,000 at 100,000 tenants), which no gate does.

Then times what `finalize.report` does: read the ledger, build the document, render the four
files and store them through ObjectStoragePath, streamed (`reporting.stream_reports`: each file
written in chunks as it is rendered, never held whole; issue 16) or, with `--whole`, rendered
whole first and then stored (the path before issue 16, for comparison).

`benchmarks/run.py` runs it as `report_10k` and (with `--long`) `report_100k` (`--tenants 100000`).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from figures import emit  # the script's own folder is on sys.path

RATIOS = (0.01, 0.10, 0.25, 0.50, 1.00)
T0 = datetime(2026, 3, 7, 2, 0, tzinfo=UTC)
RUN_ID = "scheduled__2026-03-07T02:00:00+00:00"


def _measurements(tenants: list[str], error_rate: float, rng: random.Random) -> list[Any]:
    """One poke's measurements (`domain.measurement.Measurement`): the batch's error rate and
    every tenant's p95 latency against its baseline +20 %."""
    from powerx_upgrade.domain.measurement import Measurement, Phase

    rows = [
        Measurement(
            check=0,
            metric="error_rate",
            scope="batch",
            op="<=",
            limit="0.05",
            threshold=0.05,
            value=error_rate,
            samples=40,
            phase=Phase.FAIL if error_rate > 0.05 else Phase.PASS,
        )
    ]
    for tenant in tenants:
        value = 120 * rng.uniform(0.95, 1.15)
        rows.append(
            Measurement(
                check=1,
                metric="latency_p95_ms",
                scope="per_tenant",
                op="<=",
                limit="+20%",
                threshold=144.0,
                value=round(value, 1),
                samples=4,
                phase=Phase.PASS if value <= 144 else Phase.FAIL,
                tenant=tenant,
                detail="baseline 120 +20%",
            )
        )
    return rows


def _poke_rows(
    batch: list[str],
    upgraded: list[str],
    measured: list[Any],
    at: datetime,
    bake_started: datetime,
    used: int,
) -> tuple[list[dict[str, Any]], int]:
    """What `gate_steps._record_gate` writes for an earlier poke: the poke's summary checks
    (`gating.summarise`) and its replay input (`replay.input_json`); returns the rows and the
    tenant entries the gate's input history holds after it."""
    from powerx_upgrade.domain.gate import GateEvaluation, GateInput, Phase
    from powerx_upgrade.domain.measurement import TenantStats
    from powerx_upgrade.domain.replay import MARKER, input_json
    from powerx_upgrade.rollout.gating import summarise

    stats = {
        t: TenantStats(requests=400, errors=4, latency_p95_ms=m.value, samples=4)
        for t, m in zip(batch, measured[1:], strict=True)
    }
    cumulative = {t: stats.get(t, TenantStats(400, 4, 120.0, 4)) for t in upgraded}
    data = GateInput(
        now=at,
        bake_started=bake_started,
        bake=timedelta(minutes=15),
        batch=stats,
        cumulative=cumulative,
        expected=batch,
        cumulative_expected=upgraded,
    )
    result = GateEvaluation(
        phase=Phase.RUNNING,
        reason="bake goes on",
        measurements=tuple(measured),
        failures=0,
        has_data=True,
    )
    poke = {**summarise(at, result), "input": input_json(data, used)}
    rows = [*poke["checks"], {"check": -3, "metric": MARKER, "input": poke["input"]}]
    return rows, used + int(poke["input"].get("n") or 0)


def _action(
    tenant: str, batch: int, kind: str, old: str, new: str, begun: datetime, done: datetime
) -> dict[str, Any]:
    return {
        "run_id": RUN_ID,
        "plugin": "crm-sync",
        "tenant_id": tenant,
        "batch_index": batch,
        "kind": kind,
        "state": "succeeded",
        "from_version": old,
        "to_version": new,
        "from_config": "cfg-1",
        "config_after": "cfg-2" if kind == "upgrade" else "cfg-1",
        "idempotency_key": f"{RUN_ID}:{kind}:{tenant}",
        "attempts": 1,
        "noop": False,
        "detail": {},
        "started_at": begun,
        "finished_at": done,
    }


def _insert_actions(ledger: Any, rows: list[dict[str, Any]]) -> None:
    """Thousands of finished actions in one transaction: the same rows `begin_action` and
    `finish_action` write one by one (that would take minutes and measure nothing here)."""
    from powerx_upgrade.ledger import schema
    from powerx_upgrade.ledger.engine import write_transaction

    with write_transaction(ledger._engine) as conn:
        conn.execute(schema.actions.insert(), rows)


def fill(ledger: Any, tenants: int, pokes: int) -> dict[str, float]:
    """A whole run in the ledger; returns what the filling took."""
    from powerx_upgrade.ledger import clock as ledger_clock

    clock = {"now": T0}
    ledger_clock.now = lambda: clock["now"]  # a simulated run: hours pass in seconds
    rng = random.Random(7)
    ids = [f"t-{n:05d}" for n in range(1, tenants + 1)]
    bounds = [0, *(round(r * tenants) for r in RATIOS)]
    batches = [ids[bounds[k] : bounds[k + 1]] for k in range(len(RATIOS))]
    started = time.perf_counter()
    ledger.start_run(
        RUN_ID,
        dag_id="plugin_upgrade__crm-sync-10k",
        plan_id="crm-sync-10k",
        plugin="crm-sync",
        target_version="2.5.0",
        artifact_uri="s3://releases/crm-sync-2.5.0.tgz",
        artifact_sha256="b" * 64,
        triggered_by="scheduler",
        reason="benchmark: 10,000 tenants",
    )
    ledger.update_run(
        RUN_ID,
        batches=[
            {
                "index": k,
                "name": f"wave-{k}",
                "tenants": b,
                "size": len(b),
                "cumulative_count": bounds[k],
                "cumulative_ratio": RATIOS[k - 1],
                "bake_seconds": 900,
                "approval_required": k == 3,
                "merged": [],
            }
            for k, b in enumerate(batches, start=1)
        ],
        baseline={
            t: {"requests": 4000, "errors": 40, "latency_p95_ms": 120.0, "samples": 60} for t in ids
        },
        detail={"notes": [], "fleet": tenants, "versions_before": dict.fromkeys(ids, "2.3.1")},
    )
    at = T0
    for k, batch in enumerate(batches, start=1):
        last = k == len(batches)
        at += timedelta(minutes=1)
        ledger.record_decision(
            RUN_ID,
            batch_index=k,
            kind="approval",
            decision="approve" if k == 3 else "not_required",
            actor="alice" if k == 3 else "policy",
            via="ui" if k == 3 else "auto",
            decided_at=at,
        )
        rows = []
        for n, tenant in enumerate(batch):
            begun = at + timedelta(milliseconds=20 * n)
            rows.append(
                _action(
                    tenant,
                    k,
                    "upgrade",
                    "2.3.1",
                    "2.5.0",
                    begun,
                    begun + timedelta(milliseconds=150),
                )
            )
        _insert_actions(ledger, rows)
        clock["now"] = rows[-1]["finished_at"]
        at = clock["now"]
        error_rate = 0.072 if last else 0.011
        upgraded = ids[: bounds[k]]
        bake_started, used = at, 0
        for p in range(1, pokes + 1):
            poked = at + timedelta(seconds=900 * p / (pokes + 1))
            measured = _measurements(batch, error_rate * (0.7 + 0.3 * p / pokes), rng)
            rows, used = _poke_rows(batch, upgraded, measured, poked, bake_started, used)
            ledger.record_gate(
                RUN_ID,
                k,
                phase="running",
                reason="poke",
                measurements=rows,
                final=False,
                evaluated_at=poked,
            )
        at += timedelta(seconds=900)
        verdict = "fail" if last else ("inconclusive" if k == 3 else "pass")
        measured = _measurements(batch, error_rate, rng)
        # the deciding poke: its checks are the final row's measurements, its row the input alone
        rows, used = _poke_rows(batch, upgraded, measured, at, bake_started, used)
        ledger.record_gate(
            RUN_ID,
            k,
            phase=verdict,
            reason="poke",
            measurements=rows[-1:],
            final=False,
            evaluated_at=at,
        )
        ledger.record_gate(
            RUN_ID,
            k,
            phase=verdict,
            reason=f"error_rate {error_rate:.3f} vs limit 0.05",
            measurements=[m.as_dict() for m in measured],
            final=True,
            evaluated_at=at,
        )
        decision = {"fail": "rollback", "inconclusive": "pause", "pass": "promote"}[verdict]
        ledger.record_decision(
            RUN_ID,
            batch_index=k,
            kind="decide",
            decision=decision,
            actor="policy",
            via="auto",
            detail={"verdict": verdict, "reason": "gate"},
            decided_at=at,
        )
        if decision == "pause":
            at += timedelta(minutes=12)
            ledger.record_decision(
                RUN_ID,
                batch_index=k,
                kind="pause",
                decision="resume",
                actor="bob",
                via="ui",
                detail={"timed_out": False},
                decided_at=at,
            )
    rollback_started = at
    targets = [
        {"tenant": t, "from_version": "2.3.1", "batch": k}
        for k, b in enumerate(batches, start=1)
        for t in b
    ]
    rows = []
    for n, target in enumerate(targets):
        begun = at + timedelta(milliseconds=10 * n)
        rows.append(
            _action(target["tenant"], target["batch"], "rollback", "2.5.0", "2.3.1", begun, begun)
        )
    _insert_actions(ledger, rows)
    clock["now"] = rows[-1]["finished_at"]
    ended = clock["now"]
    ledger.update_run(
        RUN_ID,
        detail={
            **ledger.get_run(RUN_ID).detail,
            "rollback_started_at": rollback_started.isoformat(),
            "rollback_scope": "all_upgraded",
            "rollback_targets": targets,
            "rollback_verification": {
                "verified": [
                    {"tenant": t["tenant"], "version": "2.3.1", "problems": []} for t in targets
                ],
                "broken": [],
                "checked_at": ended.isoformat(),
                "duration_ms": int((ended - rollback_started).total_seconds() * 1000),
            },
        },
    )
    ledger.finish_run(
        RUN_ID, "rolled_back", detail={"outcome_detail": {"tenants": tenants}}, ended_at=ended
    )
    return {"fill_s": time.perf_counter() - started}


def _peak_rss_mb() -> float:
    """The process's peak resident memory so far (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--pokes", type=int, default=6, help="non-final gate pokes per batch")
    parser.add_argument("--out", help="also keep the rendered files in this folder")
    parser.add_argument(
        "--whole", action="store_true", help="render every file whole, then store (pre-issue 16)"
    )
    args = parser.parse_args()

    from powerx_upgrade.ledger import Ledger
    from powerx_upgrade.reporting import (
        RunRecords,
        build_report,
        render_reports,
        store_reports,
        stream_reports,
    )

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("AIRFLOW_HOME", tmp)
        ledger = Ledger(f"sqlite:///{tmp}/ledger.db")
        figures = fill(ledger, args.tenants, args.pokes)
        alerts = [
            {
                "rule": "grey_error_rate",
                "severity": "critical",
                "batch": 5,
                "message": "grey error rate 7.20% is above 5%",
                "at": "2026-03-07T04:10:00+00:00",
            }
        ]
        from airflow.sdk import ObjectStoragePath  # noqa: F401 - imported before timing

        # the first write through ObjectStoragePath loads fsspec's file system (0.5-0.7 s of
        # CPU, the same at 10 tenants as at 100,000): paid here, printed, not in the total
        w0 = time.perf_counter()
        store_reports({"warm-up.txt": ""}, "warm-up", RUN_ID, base=f"file://{tmp}/warm-up")
        warm_up_s = time.perf_counter() - w0
        # CPU seconds besides wall seconds: on a shared machine the wall time is mostly waiting
        c0, t0 = time.process_time(), time.perf_counter()
        records = RunRecords.from_ledger(ledger, RUN_ID)
        c1, t1 = time.process_time(), time.perf_counter()
        document = build_report(records, alerts=alerts, airflow_base_url="http://airflow:8080")
        c2, t2 = time.process_time(), time.perf_counter()
        rss_before = _peak_rss_mb()
        if args.whole:
            files: dict[str, Any] = render_reports(document)
            t3 = time.perf_counter()
        else:
            files = stream_reports(document)  # rendered while stored: t3 - t2 is ~0
            t3 = time.perf_counter()
        written = store_reports(files, "crm-sync-10k", RUN_ID, base=f"file://{tmp}/reports")
        c4, t4 = time.process_time(), time.perf_counter()
        rss_after = _peak_rss_mb()
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            for name, uri in written.items():
                shutil.copyfile(uri.removeprefix("file://"), Path(args.out) / name)
        sizes = {
            name: Path(uri.removeprefix("file://")).stat().st_size for name, uri in written.items()
        }
        measurements = sum(len(g.measurements) for g in records.gates)

    print(
        f"tenants {args.tenants:,}; batches {len(document['batches'])}; gate records "
        f"{len(records.gates)} ({measurements:,} measurements); actions {len(records.actions):,}"
    )
    print(
        f"outcome {document['outcome']}; rollback {document['rollback']['counts']['targets']:,} "
        f"tenants in {document['rollback']['duration_ms'] / 1000:.1f}s; pauses "
        f"{len(document['pauses'])}; batch success "
        f"{document['rates']['batch_success']['value']:.1%}"
    )
    print(f"ledger filled in {figures['fill_s']:.1f}s (not part of the measurement)")
    print(f"storage warm-up {warm_up_s:.2f}s (first ObjectStoragePath write; not in the total)")
    print(f"read ledger   {t1 - t0:6.2f}s  (cpu {c1 - c0:.2f}s)")
    print(f"build report  {t2 - t1:6.2f}s  (cpu {c2 - c1:.2f}s)")
    if args.whole:
        print(f"render files  {t3 - t2:6.2f}s")
        print(f"store files   {t4 - t3:6.2f}s")
    else:
        print(
            f"render+store  {t4 - t2:6.2f}s  (cpu {c4 - c2:.2f}s; streamed: each file written "
            "as it is rendered)"
        )
    print(f"total         {t4 - t0:6.2f}s  (cpu {c4 - c0:.2f}s; target < 5 s)")
    print(
        f"peak RSS {rss_after:,.0f} MB (before rendering {rss_before:,.0f} MB: the ledger "
        "records and the document are in memory; the files are not)"
    )
    emit(
        tenants=args.tenants,
        mode="whole" if args.whole else "streamed",
        read_s=t1 - t0,
        build_s=t2 - t1,
        render_s=t3 - t2,
        store_s=t4 - t3,
        render_store_s=t4 - t2,
        total_s=t4 - t0,
        storage_warm_up_s=warm_up_s,
        cpu_read_s=c1 - c0,
        cpu_build_s=c2 - c1,
        cpu_render_store_s=c4 - c2,
        cpu_total_s=c4 - c0,
        bytes=sum(sizes.values()),
        peak_rss_mb=rss_after,
        rss_growth_while_rendering_mb=rss_after - rss_before,
    )
    for name, size in sizes.items():
        print(f"  {name:14} {size / 1024:8.0f} KiB")


if __name__ == "__main__":
    main()
