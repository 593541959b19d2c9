"""The report document built from a real ledger (SQLite file) that a run's steps filled."""

from __future__ import annotations

import json

import pytest

from powerx_upgrade.reporting import (
    SCHEMA_VERSION,
    RunIdentity,
    RunRecords,
    build_report,
    needs_postmortem,
    report_from_ledger,
)
from tests.reporting.scenarios import DAG, PLAN, RUN_ID, T0, Batch, case_b, fill_run, frozen_ledger

pytestmark = pytest.mark.unit

ALERT = {
    "rule": "grey_error_rate",
    "severity": "critical",
    "batch": 3,
    "message": "error rate 9.00% > 5.00%",
    "at": "2026-03-07T02:03:30+00:00",
}


@pytest.fixture
def case_b_report(tmp_path, monkeypatch):
    with frozen_ledger(tmp_path / "ledger.db", monkeypatch) as (book, clock):
        case_b(book, clock)
        return report_from_ledger(
            book, RUN_ID, alerts=[ALERT], airflow_base_url="http://airflow.example:8080/"
        )


def test_report_is_versioned_and_json_ready(case_b_report):
    assert case_b_report["schema_version"] == SCHEMA_VERSION == 1
    assert json.loads(json.dumps(case_b_report)) == case_b_report
    assert case_b_report["plan"] == {"id": PLAN, "dag_id": DAG}
    assert case_b_report["plugin"] == "crm-sync"
    assert case_b_report["versions"] == {
        "from": "2.3.1",
        "from_versions": {"2.3.1": 10},
        "to": "2.5.0",
    }
    assert case_b_report["artifact"]["sha256"] == "a" * 64
    assert case_b_report["trigger"]["by"] == "alice"
    assert case_b_report["trigger"]["reason"] == "case B"


def test_run_link_escapes_the_run_id_for_a_url_path(case_b_report):
    assert case_b_report["links"]["airflow_run"] == (
        "http://airflow.example:8080/dags/plugin_upgrade__crm-sync-e2e/runs/"
        "manual__2026-03-07T02%3A00%3A00%2B00%3A00"
    )


def test_rates_count_tenants_on_target_and_batches_passed_against_the_floors(case_b_report):
    rates = case_b_report["rates"]
    # every upgraded tenant was rolled back: none is on 2.5.0 at the end
    assert rates["upgrade_success"] == {
        "value": 0.0,
        "numerator": 0,
        "denominator": 10,
        "floor": 0.98,
        "met": False,
    }
    assert rates["deploy_success"]["value"] == 1.0  # but every upgrade itself worked
    assert rates["batch_success"]["numerator"] == 2
    assert rates["batch_success"]["denominator"] == 3
    assert rates["batch_success"]["value"] == pytest.approx(2 / 3, abs=1e-6)
    assert rates["batch_success"]["met"] is False and rates["batch_success"]["floor"] == 0.95


def test_each_batch_has_its_verdict_deploy_counts_times_and_every_measured_value(case_b_report):
    batches = case_b_report["batches"]
    assert [b["status"] for b in batches] == ["passed", "passed", "failed"]
    assert [b["gate"]["verdict"] for b in batches] == ["pass", "pass", "fail"]
    assert [b["decision"]["decision"] for b in batches] == ["promote", "promote", "rollback"]
    third = batches[2]
    assert third["tenants"] == ["t-06", "t-07", "t-08", "t-09", "t-10"]
    assert third["deploy"]["succeeded"] == 5 and third["deploy"]["failed"] == 0
    # start: first upgrade began; end: the gate's verdict (fill_run: 02:02:27 -> 02:03:33)
    assert third["started_at"] == "2026-03-07T02:02:27+00:00"
    assert third["deploy_ended_at"] == "2026-03-07T02:02:33+00:00"
    assert third["ended_at"] == "2026-03-07T02:03:33+00:00"
    assert third["duration_minutes"] == 1.1
    error_rate = third["gate"]["measurements"][0]
    assert error_rate["metric"] == "error_rate" and error_rate["phase"] == "fail"
    assert error_rate["value"] == 0.09 and error_rate["threshold"] == 0.05
    assert error_rate["ratio"] == pytest.approx(1.8)
    assert len(third["gate"]["measurements"]) == 1 + 5  # batch check + one per tenant
    assert third["gate"]["pokes"] == 3


def test_poke_history_becomes_one_series_per_check(case_b_report):
    series = {s["metric"]: s for s in case_b_report["batches"][2]["gate"]["series"]}
    errors = series["error_rate"]
    assert [p["final"] for p in errors["points"]] == [False, False, True]
    assert [p["value"] for p in errors["points"]] == pytest.approx([0.072, 0.09, 0.09])
    assert errors["points"][-1]["threshold"] == 0.05
    latency = series["latency_p95_ms"]
    assert latency["per_tenant"] is True
    # per tenant: the worst tenant's value as a share of its own limit
    assert latency["points"][-1]["value"] == pytest.approx(130 / 144, abs=1e-6)
    assert latency["points"][-1]["tenant"] == "t-10"
    assert latency["points"][-1]["measured"] == 5


def test_rollback_has_scope_duration_and_an_outcome_per_tenant(case_b_report):
    rollback = case_b_report["rollback"]
    assert rollback["scope"] == "all_upgraded"
    assert rollback["duration_ms"] == 42_000
    assert rollback["deadline_ms"] == 180_000 and rollback["within_deadline"] is True
    assert rollback["trigger"]["batch"] == 3 and rollback["trigger"]["actor"] == "policy"
    assert rollback["counts"] == {
        "targets": 10,
        "succeeded": 10,
        "failed": 0,
        "not_started": 0,
        "verified": 10,
        "broken": 0,
    }
    assert {t["tenant"] for t in rollback["tenants"]} == {f"t-{n:02d}" for n in range(1, 11)}
    assert all(t["verified"] is True and t["from_version"] == "2.3.1" for t in rollback["tenants"])


def test_metrics_carry_the_six_values(case_b_report):
    metrics = case_b_report["metrics"]
    assert set(metrics) == {
        "version.upgrade.success_rate",
        "version.upgrade.batch_duration_minutes",
        "version.rollback.duration_ms",
        "version.upgrade.alert_total",
        "version.upgrade.paused_total",
        "version.upgrade.exposure_tenant_minutes",
    }
    assert (
        metrics["version.upgrade.exposure_tenant_minutes"]
        == case_b_report["exposure"]["tenant_minutes_before_detection"]
    )
    assert metrics["version.upgrade.success_rate"] == 1.0  # = what StatsD was sent
    assert metrics["version.upgrade.batch_duration_minutes"] == {"1": 1.05, "2": 1.07, "3": 1.1}
    assert metrics["version.rollback.duration_ms"] == 42_000
    assert metrics["version.upgrade.alert_total"] == 1
    assert metrics["version.upgrade.paused_total"] == 0


def test_findings_name_what_tripped_the_impact_and_the_deviation_from_baseline(case_b_report):
    findings = case_b_report["findings"]
    assert findings["postmortem_required"] is True
    (tripped,) = findings["tripped"]
    assert tripped["what"] == "gate" and tripped["batch"] == 3 and tripped["phase"] == "fail"
    assert [m["metric"] for m in tripped["measurements"]] == ["error_rate"]
    impact = findings["impact"]
    assert impact["tenants_exposed"] == 10 and impact["tenants_recovered"] == 10
    assert impact["tenants_still_on_new_version"] == 0
    # t-01 ran 2.5.0 from 02:00:12 (upgrade done) to its rollback at 02:03:40
    assert impact["max_tenant_minutes"] == pytest.approx(208 / 60, abs=0.01)
    assert impact["exposed_batches"] == [1, 2, 3]
    (deviation,) = findings["deviations"]
    assert deviation["metric"] == "error_rate" and deviation["batch"] == 3
    assert deviation["baseline"] == pytest.approx(0.01)  # 10 errors in 1000 requests
    assert deviation["relative"] == pytest.approx(8.0)  # 9 % is 800 % above 1 %
    assert any("error_rate" in item and "batch 3" in item for item in findings["follow_up"])


def test_timeline_is_in_time_order_from_start_to_end(case_b_report):
    timeline = case_b_report["timeline"]
    assert [e["at"] for e in timeline] == sorted(e["at"] for e in timeline)
    assert timeline[0]["text"].startswith("run started")
    assert timeline[-1]["text"] == "run ended: rolled_back"
    kinds = {e["kind"] for e in timeline}
    assert {"deploy", "gate", "decision", "rollback", "alert"} <= kinds


def test_a_promoted_run_meets_the_floors_and_needs_no_postmortem(tmp_path, monkeypatch):
    with frozen_ledger(tmp_path / "ledger.db", monkeypatch) as (book, clock):
        fill_run(book, clock, [Batch(["t-01"], "canary"), Batch(["t-02", "t-03"], "rest")])
        report = report_from_ledger(book, RUN_ID)
    assert report["outcome"] == "promoted" and report["rollback"] is None
    assert report["rates"]["upgrade_success"]["value"] == 1.0
    assert report["rates"]["upgrade_success"]["met"] is True
    assert report["rates"]["batch_success"]["met"] is True
    assert report["findings"]["postmortem_required"] is False
    assert report["findings"]["tripped"] == []
    assert report["links"]["airflow_run"] is None  # no base URL given


def test_a_pause_is_counted_with_who_answered_and_how_long_it_waited(tmp_path, monkeypatch):
    with frozen_ledger(tmp_path / "ledger.db", monkeypatch) as (book, clock):
        fill_run(
            book,
            clock,
            [Batch(["t-01"], "canary", verdict="inconclusive"), Batch(["t-02"], "rest")],
            pause_at=1,
        )
        report = report_from_ledger(book, RUN_ID)
    (pause,) = report["pauses"]
    assert pause["batch"] == 1 and pause["answer"] == "resume" and pause["actor"] == "bob"
    assert pause["waited_seconds"] == 300.0 and pause["timed_out"] is False
    assert report["metrics"]["version.upgrade.paused_total"] == 1
    assert report["rates"]["batch_success"]["numerator"] == 1  # a resumed batch did not pass


def test_a_rollback_that_left_a_tenant_behind_is_a_finding(tmp_path, monkeypatch):
    with frozen_ledger(tmp_path / "ledger.db", monkeypatch) as (book, clock):
        case_b(book, clock, broken=("t-07",), rollback_duration_ms=200_000)
        report = report_from_ledger(book, RUN_ID)
    rollback = report["rollback"]
    assert report["outcome"] == "rollback_failed"
    assert rollback["counts"]["broken"] == 1 and rollback["counts"]["failed"] == 1
    assert rollback["tenants"][0]["tenant"] == "t-07"  # the one that did not come back first
    assert rollback["tenants"][0]["verified"] is False
    assert rollback["within_deadline"] is False
    assert report["findings"]["impact"]["tenants_still_on_new_version"] == 1
    whats = [t["what"] for t in report["findings"]["tripped"]]
    assert whats == ["gate", "rollback"]
    follow_up = " ".join(report["findings"]["follow_up"])
    assert "did not come back" in follow_up and "deadline" in follow_up


def test_deploy_failures_and_refusals_are_listed_per_batch(tmp_path, monkeypatch):
    with frozen_ledger(tmp_path / "ledger.db", monkeypatch) as (book, clock):
        fill_run(
            book,
            clock,
            [Batch(["t-01", "t-02", "t-03"], "canary", failed=("t-02",))],
            outcome="partially_promoted",
        )
        report = report_from_ledger(book, RUN_ID)
    (batch,) = report["batches"]
    assert batch["deploy"]["failed"] == 1
    assert batch["deploy"]["failed_tenants"] == [
        {"tenant": "t-02", "error": "platform said 500", "attempts": 3}
    ]
    assert report["rates"]["upgrade_success"]["numerator"] == 2
    assert report["rates"]["deploy_success"]["value"] == pytest.approx(2 / 3, abs=1e-6)
    assert report["tenants"]["not_on_target"] == 1
    assert needs_postmortem("partially_promoted")


def test_a_run_the_ledger_never_saw_reports_what_the_dag_knows():
    identity = RunIdentity(
        run_id="manual__2026-03-07T02:00:00+00:00",
        dag_id=DAG,
        plan_id=PLAN,
        plugin="crm-sync",
        target_version="2.5.0",
        error="run conf for plan 'crm-sync-e2e': artifact_sha256 'xyz' is not 64 hex digits",
    )
    report = build_report(RunRecords(None), identity=identity, generated_at=T0)
    assert report["outcome"] == "failed"
    assert report["run"]["in_ledger"] is False and report["run"]["status"] == "not_recorded"
    assert report["batches"] == [] and report["rollback"] is None
    assert report["rates"]["upgrade_success"]["value"] is None
    assert report["rates"]["batch_success"]["met"] is None
    assert report["findings"]["tripped"][0]["what"] == "preflight"
    assert "64 hex digits" in report["findings"]["follow_up"][0]


def test_a_run_that_failed_planning_takes_its_error_from_the_outcome(tmp_path, monkeypatch):
    with frozen_ledger(tmp_path / "ledger.db", monkeypatch) as (book, clock):
        clock.at(0)
        book.start_run(RUN_ID, dag_id=DAG, plan_id=PLAN, plugin="crm-sync", target_version="2.5.0")
        clock.at(5)
        note = "the run ended before its batches were planned"
        book.finish_run(RUN_ID, "failed", detail={"outcome_detail": {"note": note}})
        report = report_from_ledger(book, RUN_ID)
    assert report["outcome"] == "failed" and report["run"]["error"] == note
    assert report["run"]["duration_seconds"] == 5.0
    assert report["findings"]["postmortem_required"] is True


def test_building_needs_a_ledger_run_or_an_identity():
    with pytest.raises(ValueError, match="RunIdentity"):
        build_report(RunRecords(None))


def test_exposure_counts_every_tenant_upgraded_before_the_failing_verdict_of_batch_3(
    case_b_report,
):
    exposure = case_b_report["exposure"]
    assert exposure["detected"] is True
    assert exposure["detected_batch"] == 3 and exposure["detected_phase"] == "fail"
    # the bronze batch's gate is the first failing verdict: all ten ran 2.5.0 before it
    assert exposure["tenants_before_detection"] == exposure["tenants"] == 10
    assert exposure["batches_before_detection"] == [1, 2, 3]
    impact = case_b_report["findings"]["impact"]
    assert exposure["tenant_minutes"] == pytest.approx(impact["tenant_minutes"], abs=0.01)
    assert 0 < exposure["tenant_minutes_before_detection"] < exposure["tenant_minutes"]


def test_the_report_holds_the_run_against_its_policys_floors_and_rollback_deadline(
    tmp_path, monkeypatch
):
    from powerx_upgrade.domain.models import Policy
    from powerx_upgrade.reporting import policy_options

    policy = Policy.model_validate(
        {
            "batches": [{"ratio": 1.0, "bake": "10s"}],
            "gate": {"checks": [{"metric": "error_rate", "op": "<=", "limit": 0.05}]},
            "success_floors": {"upgrade": "0%", "batch": "60%"},
            "rollback": {"deadline": "30s"},
        }
    )
    with frozen_ledger(tmp_path / "ledger.db", monkeypatch) as (book, clock):
        case_b(book, clock)
        report = report_from_ledger(book, RUN_ID, **policy_options(policy))
    rates = report["rates"]
    assert (rates["upgrade_success"]["floor"], rates["upgrade_success"]["met"]) == (0.0, True)
    assert (rates["batch_success"]["floor"], rates["batch_success"]["met"]) == (0.6, True)
    # the same 42 s rollback is over a 30 s deadline
    assert report["rollback"]["deadline_ms"] == 30_000
    assert report["rollback"]["within_deadline"] is False
    assert policy_options(None) == {}


def test_a_report_built_without_the_plan_holds_the_run_against_the_limits_it_started_under(
    tmp_path, monkeypatch
):
    """The control plane and the UI build reports without the plan: they read the floors and
    the rollback deadline preflight recorded at the run's start, not the defaults."""
    from powerx_upgrade.domain.models import Policy
    from powerx_upgrade.rollout import preflight
    from powerx_upgrade.rollout.context import RunContext

    policy = Policy.model_validate(
        {
            "batches": [{"ratio": 1.0, "bake": "10s"}],
            "gate": {"checks": [{"metric": "error_rate", "op": "<=", "limit": 0.05}]},
            "success_floors": {"upgrade": "0%", "batch": "60%"},
            "rollback": {"deadline": "30s"},
        }
    )
    ctx = RunContext(
        run_id=RUN_ID, dag_id=DAG, plan_id=PLAN, plugin="crm-sync", target_version="2.5.0"
    )
    with frozen_ledger(tmp_path / "ledger.db", monkeypatch) as (book, clock):
        preflight.start_run(book, ctx, conf={}, policy=policy)
        case_b(book, clock)
        report = report_from_ledger(book, RUN_ID)
        given = report_from_ledger(book, RUN_ID, success_floors=(0.5, 0.5))
    assert report["rates"]["upgrade_success"]["floor"] == 0.0
    assert report["rates"]["batch_success"]["floor"] == 0.6
    assert report["rollback"]["deadline_ms"] == 30_000
    assert report["rollback"]["within_deadline"] is False
    # what the caller gives wins over what was recorded
    assert given["rates"]["batch_success"]["floor"] == 0.5


def test_a_run_recorded_without_limits_is_held_against_the_defaults(tmp_path, monkeypatch):
    with frozen_ledger(tmp_path / "ledger.db", monkeypatch) as (book, clock):
        case_b(book, clock)
        report = report_from_ledger(book, RUN_ID)
    assert report["rates"]["upgrade_success"]["floor"] == 0.98
    assert report["rates"]["batch_success"]["floor"] == 0.95
