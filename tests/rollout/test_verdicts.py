"""The verdict in words for a real ledger (labels kept by preflight, a segment named), and
which run events notify under `notify.on`."""

from __future__ import annotations

from pathlib import Path

import pytest

from powerx_upgrade.config import load_config
from powerx_upgrade.domain.models import NotifySpec
from powerx_upgrade.ledger import Ledger
from powerx_upgrade.rollout.context import RunContext
from powerx_upgrade.rollout.preflight import plan_run, start_run
from powerx_upgrade.rollout.verdicts import (
    DEFAULT_ON,
    describe_verdict,
    previous_verdict,
    should_notify,
    tenant_labels,
)
from tests.airflow_harness import E2E_CONFIG

pytestmark = pytest.mark.unit

PLAN = load_config([E2E_CONFIG]).plans["crm-sync-e2e"]
EVENTS = ("run_start", "batch_promoted", "paused", "rollback", "run_end", "alert")


class Fleet:
    """The platform's tenant listing, nothing else (plan_run reads only that)."""

    def __init__(self, tenants: list[dict]) -> None:
        self.tenants = tenants

    def list_tenants(self, plugin: str) -> list[dict]:
        return self.tenants


def ctx() -> RunContext:
    return RunContext(
        run_id="run-1",
        dag_id="plugin_upgrade__crm-sync-e2e",
        plan_id="crm-sync-e2e",
        plugin="crm-sync",
        target_version="2.5.0",
        artifact={},
    )


@pytest.fixture
def book(tmp_path: Path) -> Ledger:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    start_run(ledger, ctx())
    tiers = ["gold"] * 4 + ["silver"] * 6 + ["bronze"] * 10
    fleet = [
        {"id": f"t-{i:04d}", "labels": {"tier": tier}, "version": "2.3.1"}
        for i, tier in enumerate(tiers, start=1)
    ]
    plan_run(Fleet(fleet), ledger, PLAN, ctx())
    return ledger


def stats(rate: float) -> dict:
    return {"requests": 1000, "errors": round(rate * 1000), "latency_p95_ms": 120, "samples": 100}


def test_preflight_keeps_the_planned_tenants_labels(book):
    labels = tenant_labels(book, "run-1")
    assert len(labels) == 20 and labels["t-0001"] == {"tier": "gold"}


def test_a_failing_gate_is_described_with_its_batch_name_and_the_bronze_segment(book):
    per_tenant = {
        f"t-{i:04d}": stats(0.094 if i > 10 else 0.012) for i in range(1, 21)
    }  # batch 1 (gold, silver) and batch 2 (bronze) all on the new version
    evaluation = {
        "phase": "fail",
        "reason": "check(s) 0 failed; 1 failed evaluation(s) > failure_limit 0",
        "measurements": [
            {
                "check": 0,
                "metric": "error_rate",
                "scope": "batch",
                "op": "<=",
                "limit": "0.05",
                "threshold": 0.05,
                "value": 0.094,
                "samples": 1000,
                "phase": "fail",
                "tenant": None,
                "detail": "",
            }
        ],
        "per_tenant": per_tenant,
    }
    verdict = describe_verdict(book, PLAN, ctx(), 2, evaluation)
    assert verdict["summary"] == (
        "error_rate 9.40 % > limit 5.00 % over 1000 samples in batch 2 (rest); "
        "concentrated in tier=bronze: 9.4 % vs 1.2 % elsewhere"
    )
    assert verdict["segment"]["labels"] == {"tier": "bronze"}
    assert (verdict["segment"]["tenants"], verdict["segment"]["rest_tenants"]) == (10, 10)


def test_the_gate_state_stands_in_for_an_evaluation_without_per_tenant_stats(book):
    evaluation = {
        "phase": "fail",
        "measurements": [
            {
                "check": 0,
                "metric": "error_rate",
                "op": "<=",
                "threshold": 0.05,
                "value": 0.09,
                "samples": 40,
                "phase": "fail",
                "tenant": None,
                "limit": "0.05",
            }
        ],
    }
    state = {"per_tenant": {f"t-{i:04d}": stats(0.09 if i > 10 else 0.01) for i in range(1, 21)}}
    verdict = describe_verdict(book, PLAN, ctx(), 2, evaluation, state)
    assert verdict["segment"]["segment"] == "tier=bronze"
    without = describe_verdict(book, PLAN, ctx(), 2, evaluation)  # an old gate: no stats at all
    assert without["segment"] is None
    assert (
        without["summary"] == "error_rate 9.00 % > limit 5.00 % over 40 samples in batch 2 (rest)"
    )


def test_the_next_approval_reads_the_previous_batch_s_sentence(book):
    book.record_gate(
        "run-1", 1, phase="pass", reason="ok", measurements=[], final=True, summary="all held"
    )
    assert previous_verdict(book, "run-1", 2) == "all held"
    assert previous_verdict(book, "run-1", 1) is None


def test_the_default_notify_on_leaves_out_batch_promoted():
    plan = PLAN.model_copy(update={"notify": NotifySpec()})
    assert [e for e in EVENTS if should_notify(plan, e)] == list(DEFAULT_ON)
    assert not should_notify(plan, "batch_promoted")


def test_notify_on_is_exactly_what_the_plan_lists():
    plan = PLAN.model_copy(update={"notify": NotifySpec(on=["batch_promoted", "run_end"])})
    assert [e for e in EVENTS if should_notify(plan, e)] == ["batch_promoted", "run_end"]
    silent = PLAN.model_copy(update={"notify": NotifySpec(on=[])})
    assert not any(should_notify(silent, e) for e in EVENTS)


def test_a_run_whose_plan_is_gone_notifies_as_the_default():
    assert [e for e in EVENTS if should_notify(None, e)] == list(DEFAULT_ON)
