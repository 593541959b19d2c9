"""Gate evaluations and decisions: recorded with their measurements, actor and channel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from powerx_upgrade.ledger import InvalidLedgerValue, Ledger, LedgerNotMigrated, UnknownRun, migrate
from tests.ledger.conftest import sql, start

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 7, 2, 0, tzinfo=UTC)
MEASUREMENTS = [
    {
        "check": "error_rate <= 0.05",
        "scope": "batch",
        "value": 0.012,
        "limit": 0.05,
        "result": "pass",
    },
    {
        "check": "latency_p95_ms <= +20%",
        "tenant": "t-7",
        "value": 260.0,
        "limit": 240.0,
        "result": "fail",
    },
]


def test_gate_evaluations_keep_phase_reason_measurements_and_time(ledger):
    start(ledger)
    ledger.record_gate(
        "run-1", 0, phase="running", reason="baking", measurements=[], final=False, evaluated_at=T0
    )
    final = ledger.record_gate(
        "run-1",
        0,
        phase="fail",
        reason="latency_p95_ms breached on 2 tenants (max 1)",
        measurements=MEASUREMENTS,
        final=True,
        evaluated_at=T0 + timedelta(minutes=3),
    )

    assert final.measurements == MEASUREMENTS
    assert (final.phase, final.final, final.evaluated_at) == (
        "fail",
        True,
        T0 + timedelta(minutes=3),
    )
    assert [g.phase for g in ledger.gate_evaluations("run-1")] == ["running", "fail"]
    assert ledger.gate_evaluations("run-1", final_only=True) == [final]


def test_gate_evaluations_filter_by_batch(ledger):
    start(ledger)
    for batch in (0, 1, 1):
        ledger.record_gate("run-1", batch, phase="pass", reason="ok", measurements=[], final=True)
    assert [g.batch_index for g in ledger.gate_evaluations("run-1", 1)] == [1, 1]
    assert ledger.gate_evaluations("run-1", 2) == []


def test_a_gate_of_an_unknown_run_is_refused(ledger):
    with pytest.raises(UnknownRun):
        ledger.record_gate("ghost", 0, phase="pass", reason="ok", measurements=[], final=True)


def test_decisions_keep_who_decided_how_and_when_in_order(ledger):
    start(ledger)
    ledger.record_decision("run-1", batch_index=0, kind="decide", decision="next_batch", via="auto")
    human = ledger.record_decision(
        "run-1",
        batch_index=2,
        kind="approval",
        decision="approved",
        actor="alice",
        via="ui",
        detail={"comment": "looks fine"},
        decided_at=T0,
    )

    assert (human.actor, human.via, human.decided_at, human.detail) == (
        "alice",
        "ui",
        T0,
        {"comment": "looks fine"},
    )
    assert [(d.kind, d.decision) for d in ledger.decisions("run-1")] == [
        ("decide", "next_batch"),
        ("approval", "approved"),
    ]
    assert ledger.decisions("run-1")[0].decided_at.tzinfo is UTC


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"kind": "vote", "via": "ui"}, "kind"),
        ({"kind": "pause", "via": "email"}, "via"),
        ({"kind": "pause", "via": "ui", "decided_at": datetime(2026, 1, 1)}, "decided_at"),
    ],
)
def test_decisions_outside_the_closed_sets_are_refused(ledger, fields, field):
    start(ledger)
    with pytest.raises(InvalidLedgerValue) as raised:
        ledger.record_decision("run-1", batch_index=0, decision="resume", **fields)
    assert raised.value.field == field
    assert ledger.decisions("run-1") == []


def test_a_decision_without_a_channel_is_allowed(ledger):
    start(ledger)
    decision = ledger.record_decision("run-1", batch_index=None, kind="stop", decision="stop")
    assert (decision.via, decision.actor, decision.batch_index) == (None, None, None)


def test_a_final_verdict_keeps_its_sentence_and_segment(ledger):
    start(ledger)
    segment = {"segment": "tier=bronze", "value": 0.094, "rest": 0.012}
    ledger.record_gate("run-1", 1, phase="running", reason="baking", measurements=[], final=False)
    final = ledger.record_gate(
        "run-1",
        1,
        phase="fail",
        reason="check(s) 0 failed",
        measurements=MEASUREMENTS,
        final=True,
        summary="error_rate 9.36 % > limit 5.00 % over 30 samples in batch 1 (canary)",
        segment=segment,
    )
    assert final.summary.startswith("error_rate 9.36 %") and final.segment == segment
    poke, stored = ledger.gate_evaluations("run-1")
    assert (poke.summary, poke.segment) == (None, None)
    assert stored == final


def test_a_ledger_from_before_verdict_sentences_gains_the_table_when_upgraded(ledger_url):
    with Ledger(ledger_url) as old:
        start(old)
        old.record_gate("run-1", 1, phase="pass", reason="ok", measurements=[], final=True)
    # as a ledger of an early release: no verdict table, no migrations yet
    sql(ledger_url, "DROP TABLE powerx_ledger_gate_verdicts")
    sql(ledger_url, "DROP TABLE powerx_ledger_alembic_version")
    with pytest.raises(LedgerNotMigrated, match="run powerx ledger upgrade"):
        Ledger(ledger_url)
    assert migrate.upgrade(ledger_url).after == migrate.head_revision()
    with Ledger(ledger_url) as reopened:
        (kept,) = reopened.gate_evaluations("run-1")
        assert (kept.reason, kept.summary) == ("ok", None)
        reopened.record_gate(
            "run-1", 2, phase="pass", reason="ok", measurements=[], final=True, summary="held"
        )
        assert [g.summary for g in reopened.gate_evaluations("run-1")] == [None, "held"]
