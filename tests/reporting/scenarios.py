"""Ledgers filled the way a run fills them, on a controlled clock, for the report tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from powerx_upgrade.ledger import Ledger
from powerx_upgrade.ledger import clock as ledger_clock

T0 = datetime(2026, 3, 7, 2, 0, 0, tzinfo=UTC)
RUN_ID = "manual__2026-03-07T02:00:00+00:00"
PLAN = "crm-sync-e2e"
DAG = f"plugin_upgrade__{PLAN}"
BASELINE = {"requests": 1000, "errors": 10, "latency_p95_ms": 120.0, "samples": 10}


class Clock:
    """What the ledger believes `now` is; tests move it explicitly."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def at(self, seconds: float) -> datetime:
        self.now = T0 + timedelta(seconds=seconds)
        return self.now

    def __call__(self) -> datetime:
        return self.now


@contextmanager
def frozen_ledger(path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Ledger, Clock]]:
    clock = Clock()
    monkeypatch.setattr(ledger_clock, "now", clock)
    book = Ledger(f"sqlite:///{path}")
    try:
        yield book, clock
    finally:
        book.close()


@dataclass
class Batch:
    tenants: list[str]
    name: str
    verdict: str = "pass"
    error_rate: float = 0.011
    failed: tuple[str, ...] = ()


def _measurements(batch: Batch, phase_of_poke: str, error_rate: float) -> list[dict[str, Any]]:
    rows = [
        {
            "check": 0,
            "metric": "error_rate",
            "scope": "batch",
            "op": "<=",
            "limit": "0.05",
            "threshold": 0.05,
            "value": error_rate,
            "samples": 12,
            "phase": "fail" if error_rate > 0.05 else "pass",
            "tenant": None,
            "detail": "",
        }
    ]
    for n, tenant in enumerate(t for t in batch.tenants if t not in batch.failed):
        value = 126.0 + n
        rows.append(
            {
                "check": 1,
                "metric": "latency_p95_ms",
                "scope": "per_tenant",
                "op": "<=",
                "limit": "+20%",
                "threshold": 144.0,
                "value": value,
                "samples": 12,
                "phase": "pass",
                "tenant": tenant,
                "detail": "",
            }
        )
    return rows


def fill_run(
    book: Ledger,
    clock: Clock,
    batches: list[Batch],
    *,
    run_id: str = RUN_ID,
    target: str = "2.5.0",
    reason: str = "case B",
    triggered_by: str = "alice",
    rollback_duration_ms: int | None = 42_000,
    broken: tuple[str, ...] = (),
    outcome: str | None = None,
    pause_at: int | None = None,
) -> dict[str, Any]:
    """A run through its batches; a failing verdict rolls back every upgraded tenant."""
    clock.at(0)
    tenants = [t for b in batches for t in b.tenants]
    book.start_run(
        run_id,
        dag_id=DAG,
        plan_id=PLAN,
        plugin="crm-sync",
        target_version=target,
        artifact_uri="s3://releases/crm-sync-2.5.0.tgz",
        artifact_sha256="a" * 64,
        triggered_by=triggered_by,
        reason=reason,
        conf={"target_version": target, "reason": reason},
    )
    planned, cumulative = [], 0
    for k, b in enumerate(batches, start=1):
        cumulative += len(b.tenants)
        planned.append(
            {
                "index": k,
                "name": b.name,
                "tenants": b.tenants,
                "size": len(b.tenants),
                "cumulative_count": cumulative,
                "cumulative_ratio": cumulative / len(tenants),
                "bake_seconds": 60,
                "approval_required": False,
                "merged": [],
            }
        )
    book.update_run(
        run_id,
        batches=planned,
        baseline={t: dict(BASELINE) for t in tenants},
        detail={  # merged, as preflight's planning keeps what the run's start recorded
            **(book.get_run(run_id).detail or {}),
            "notes": [],
            "fleet": len(tenants) + 1,
            "versions_before": dict.fromkeys(tenants, "2.3.1"),
        },
    )
    t = 10.0
    failing = None
    for k, b in enumerate(batches, start=1):
        book.record_decision(
            run_id,
            batch_index=k,
            kind="approval",
            decision="not_required",
            actor="policy",
            via="auto",
            decided_at=clock.at(t),
        )
        for tenant in b.tenants:
            clock.at(t)
            key = f"{run_id}:upgrade:{tenant}"
            book.begin_action(
                run_id=run_id,
                plugin="crm-sync",
                tenant_id=tenant,
                batch_index=k,
                kind="upgrade",
                from_version="2.3.1",
                to_version=target,
                idempotency_key=key,
                from_config="cfg-1",
            )
            clock.at(t + 2)
            if tenant in b.failed:
                book.finish_action(key, "failed", error="platform said 500", attempts=3)
            else:
                book.finish_action(key, "succeeded", config_after="cfg-2")
            t += 1
        deployed = t + 1
        for poke in (1, 2):
            book.record_gate(
                run_id,
                k,
                phase="running",
                reason="bake goes on",
                measurements=_measurements(b, "running", b.error_rate * (0.6 + 0.2 * poke)),
                final=False,
                evaluated_at=clock.at(deployed + 20 * poke),
            )
        final_at = deployed + 60
        reason = (
            "every check held over the whole bake"
            if b.verdict == "pass"
            else f"error_rate {b.error_rate:.4f} > 0.05 (batch)"
        )
        book.record_gate(
            run_id,
            k,
            phase=b.verdict,
            reason=reason,
            measurements=_measurements(b, b.verdict, b.error_rate),
            final=True,
            evaluated_at=clock.at(final_at),
        )
        if pause_at == k:
            book.record_decision(
                run_id,
                batch_index=k,
                kind="decide",
                decision="pause",
                actor="policy",
                via="auto",
                detail={"verdict": b.verdict, "reason": reason},
                decided_at=clock.at(final_at + 1),
            )
            book.record_decision(
                run_id,
                batch_index=k,
                kind="pause",
                decision="resume",
                actor="bob",
                via="ui",
                detail={"timed_out": False},
                decided_at=clock.at(final_at + 301),
            )
            t = final_at + 310
            continue
        decision = "promote" if b.verdict == "pass" else "rollback"
        book.record_decision(
            run_id,
            batch_index=k,
            kind="decide",
            decision=decision,
            actor="policy",
            via="auto",
            detail={"verdict": b.verdict, "reason": reason, "breaching": []},
            decided_at=clock.at(final_at + 1),
        )
        t = final_at + 5
        if decision == "rollback":
            failing = k
            break
    if failing is not None:
        upgraded = [a for a in book.actions(run_id, kind="upgrade") if a.state == "succeeded"]
        started = clock.at(t)
        targets = [
            {"tenant": a.tenant_id, "from_version": "2.3.1", "batch": a.batch_index}
            for a in upgraded
        ]
        run = book.get_run(run_id)
        detail = dict(run.detail)
        detail.update(
            rollback_started_at=started.isoformat(),
            rollback_scope="all_upgraded",
            rollback_targets=targets,
        )
        book.update_run(run_id, status="rolling_back", detail=detail)
        for n, target_row in enumerate(targets):
            tenant = target_row["tenant"]
            clock.at(t + 1 + n)
            key = f"{run_id}:rollback:{tenant}"
            book.begin_action(
                run_id=run_id,
                plugin="crm-sync",
                tenant_id=tenant,
                batch_index=target_row["batch"],
                kind="rollback",
                from_version=target,
                to_version="2.3.1",
                idempotency_key=key,
            )
            clock.at(t + 2 + n)
            book.finish_action(
                key,
                "failed" if tenant in broken else "succeeded",
                error="platform refused" if tenant in broken else None,
            )
        verification = {
            "verified": [
                {"tenant": r["tenant"], "version": "2.3.1", "problems": []}
                for r in targets
                if r["tenant"] not in broken
            ],
            "broken": [
                {"tenant": x, "version": target, "problems": [f"on {target}, expected 2.3.1"]}
                for x in broken
            ],
            "checked_at": clock.at(t + 3 + len(targets)).isoformat(),
        }
        if rollback_duration_ms is not None:
            verification["duration_ms"] = rollback_duration_ms
        detail["rollback_verification"] = verification
        book.update_run(run_id, detail=detail)
        t += 10 + len(targets)
    final_outcome = outcome or (
        ("rollback_failed" if broken else "rolled_back") if failing else "promoted"
    )
    clock.at(t)
    book.finish_run(run_id, final_outcome, detail={"outcome_detail": {"tenants": len(tenants)}})
    return {"run_id": run_id, "failing": failing, "tenants": tenants}


def case_b(book: Ledger, clock: Clock, **kwargs: Any) -> dict[str, Any]:
    """Ten tenants: gold canary, silver, then a bronze batch whose error rate breaks the gate."""
    return fill_run(
        book,
        clock,
        [
            Batch(["t-01", "t-02"], "canary"),
            Batch(["t-03", "t-04", "t-05"], "half"),
            Batch(
                ["t-06", "t-07", "t-08", "t-09", "t-10"], "rest", verdict="fail", error_rate=0.09
            ),
        ],
        **kwargs,
    )
