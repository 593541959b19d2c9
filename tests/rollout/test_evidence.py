"""The evidence in the HITL texts and the CLI's waiting line: exact words from report batches."""

from __future__ import annotations

from datetime import UTC, datetime

from powerx_upgrade.rollout import evidence

PASSED = {
    "index": 1,
    "name": "canary",
    "size": 5,
    "status": "passed",
    "gate": {
        "verdict": "pass",
        "reason": "all checks within limits",
        "summary": None,
        "measurements": [
            {
                "metric": "error_rate",
                "op": "<=",
                "limit": 0.05,
                "threshold": 0.05,
                "value": 0.004,
                "samples": 1200,
                "phase": "pass",
                "tenant": None,
                "ratio": 0.08,
            },
            {
                "metric": "latency_p95_ms",
                "op": "<=",
                "limit": "+20%",
                "threshold": 144.0,
                "value": 120.0,
                "samples": 300,
                "phase": "pass",
                "tenant": "t-1",
                "ratio": 0.83,
            },
            {
                "metric": "latency_p95_ms",
                "op": "<=",
                "limit": "+20%",
                "threshold": 120.0,
                "value": 90.0,
                "samples": 280,
                "phase": "pass",
                "tenant": "t-2",
                "ratio": 0.75,
            },
        ],
    },
}
FAILED = {
    "index": 2,
    "name": "rest",
    "size": 19,
    "status": "failed",
    "gate": {
        "verdict": "fail",
        "reason": "error_rate 9.00% > 5.00%",
        "summary": "error_rate 9.00% is over its limit 5.00% (bronze tenants)",
        "measurements": [
            {
                "metric": "error_rate",
                "op": "<=",
                "limit": 0.05,
                "threshold": 0.05,
                "value": 0.09,
                "samples": 4000,
                "phase": "fail",
                "tenant": None,
                "ratio": 1.8,
            },
        ],
    },
}
NOT_RUN = {"index": 3, "name": "last", "size": 4, "status": "not_run", "gate": {"verdict": None}}


def test_a_passed_gate_in_words_names_metric_value_limit_and_samples_and_the_worst_tenant():
    assert evidence.gate_in_words(PASSED, per_tenant_shown=1) == (
        "Batch 1 (canary, 5 tenants) passed its gate: error_rate 0.40% (limit <= 5.00%, "
        "1,200 samples): pass; 0 of 2 per-tenant measurements over their limit (worst: "
        "latency_p95_ms on t-1 120 ms (limit <= 144 ms, from +20%, 300 samples): pass)"
        ". Verdict: all checks within limits"
    )


def test_a_failed_gate_in_words_carries_the_verdict_summary():
    assert evidence.gate_in_words(FAILED) == (
        "Batch 2 (rest, 19 tenants) failed its gate: error_rate 9.00% (limit <= 5.00%, "
        "4,000 samples): fail. Verdict: error_rate 9.00% is over its limit 5.00% (bronze tenants)"
    )


def test_the_evidence_lists_finished_batches_only_and_links_the_rollout_tab():
    url = evidence.rollout_tab_url("http://airflow:8080/", "plugin_upgrade__crm", "manual__1+0")
    assert (
        url
        == "http://airflow:8080/dags/plugin_upgrade__crm/runs/manual__1%2B0/plugin/powerx-rollout"
    )
    text = evidence.evidence_text([PASSED, NOT_RUN], url)
    assert text.splitlines()[0] == "Gate results so far:"
    assert text.splitlines()[1].startswith("- Batch 1 (canary, 5 tenants) passed its gate: ")
    assert "Batch 3" not in text
    assert text.endswith(f"[Rollout tab]({url})")
    assert evidence.evidence_text([NOT_RUN], None) == "No batch has finished yet."


def test_the_waiting_line_says_what_and_since_when():
    assert evidence.waiting_line("batch_2.approve", "2026-11-30T17:22:50.5Z") == (
        "batch 2 waits for approval since 17:22:50"
    )
    at = datetime(2026, 11, 30, 3, 4, 5, tzinfo=UTC)
    assert evidence.waiting_line("batch_1.pause", at) == (
        "batch 1 waits for a decision after its pause since 03:04:05"
    )
    assert evidence.waiting_line("batch_1.approve", "yesterday") == (
        "batch 1 waits for approval since 'yesterday' (not a timestamp)"
    )
    assert evidence.waiting_line("rollback.confirm", None) == "rollback.confirm waits for a human"
