"""Runs in the ledger: start (idempotent), update, finish, active runs, timestamps, storage."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from powerx_upgrade.ledger import (
    InvalidLedgerValue,
    Ledger,
    UnknownRun,
    default_ledger_url,
    normalize_url,
)
from tests.ledger.conftest import sqlite_path, start

pytestmark = pytest.mark.unit


def test_start_run_records_every_field_and_starts_running(ledger):
    run = start(
        ledger,
        artifact_uri="s3://artifacts/crm-sync-2.4.0.tgz",
        artifact_sha256="ab" * 32,
        triggered_by="alice",
        reason="CVE fix",
        dry_run=True,
        conf={"target_version": "2.4.0", "shard_size": 25},
    )

    assert run == ledger.get_run("run-1")
    assert (run.plugin, run.plan_id, run.target_version) == (
        "crm-sync",
        "crm-sync-standard",
        "2.4.0",
    )
    assert run.artifact_sha256 == "ab" * 32
    assert (run.triggered_by, run.reason, run.dry_run) == ("alice", "CVE fix", True)
    assert run.conf == {"target_version": "2.4.0", "shard_size": 25}
    assert (run.status, run.outcome, run.ended_at) == ("running", None, None)
    assert run.active
    assert (run.batches, run.baseline, run.detail) == (None, None, {})


def test_start_run_again_returns_the_first_record_unchanged(ledger):
    first = start(ledger, target_version="2.4.0", reason="first")
    again = start(ledger, target_version="9.9.9", reason="second")

    assert again == first
    assert ledger.get_run("run-1").target_version == "2.4.0"
    assert len(ledger.runs()) == 1


def test_get_run_of_unknown_id_is_none(ledger):
    assert ledger.get_run("nope") is None


def test_update_run_sets_batches_baseline_and_an_in_between_status(ledger):
    start(ledger)
    batches = [{"index": 0, "name": "canary", "tenants": ["t-1"]}, {"index": 1, "tenants": ["t-2"]}]
    ledger.update_run(
        "run-1", batches=batches, baseline={"t-1": {"error_rate": 0.01}}, status="paused"
    )

    run = ledger.get_run("run-1")
    assert run.batches == batches
    assert run.baseline == {"t-1": {"error_rate": 0.01}}
    assert run.status == "paused"
    assert run.active


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"plugin": "other"}, "run field 'plugin'"),
        ({"outcome": "promoted"}, "run field 'outcome'"),
        ({"status": "finished"}, "finish_run"),
        ({"status": ""}, "invalid status"),
    ],
)
def test_update_run_refuses_fields_it_must_not_set(ledger, fields, match):
    start(ledger)
    with pytest.raises(InvalidLedgerValue, match=match):
        ledger.update_run("run-1", **fields)
    assert ledger.get_run("run-1").status == "running"


def test_update_and_finish_of_an_unknown_run_name_the_run(ledger):
    with pytest.raises(UnknownRun, match="'ghost'"):
        ledger.update_run("ghost", status="paused")
    with pytest.raises(UnknownRun, match="'ghost'"):
        ledger.finish_run("ghost", "promoted")


def test_finish_run_records_outcome_end_and_merges_detail(ledger):
    start(ledger)
    ledger.update_run("run-1", detail={"batches_done": 2})
    ended = datetime(2026, 3, 7, 4, 30, tzinfo=UTC)

    ledger.finish_run("run-1", "rolled_back", detail={"verdict": "fail"}, ended_at=ended)

    run = ledger.get_run("run-1")
    assert (run.status, run.outcome, run.ended_at) == ("finished", "rolled_back", ended)
    assert run.detail == {"batches_done": 2, "verdict": "fail"}
    assert not run.active


def test_finish_run_rejects_an_outcome_outside_the_closed_set(ledger):
    start(ledger)
    with pytest.raises(InvalidLedgerValue, match=r"'succeeded'.*promoted") as raised:
        ledger.finish_run("run-1", "succeeded")
    assert raised.value.field == "outcome"
    assert ledger.get_run("run-1").active


def test_active_runs_exclude_finished_runs_and_filter_by_plugin(ledger):
    start(ledger, "a", started_at=datetime(2026, 1, 1, tzinfo=UTC))
    start(ledger, "b", started_at=datetime(2026, 1, 2, tzinfo=UTC))
    start(ledger, "c", plugin="billing", started_at=datetime(2026, 1, 3, tzinfo=UTC))
    ledger.finish_run("a", "promoted")

    assert [run.run_id for run in ledger.active_runs()] == ["b", "c"]
    assert [run.run_id for run in ledger.active_runs("crm-sync")] == ["b"]
    assert [run.run_id for run in ledger.runs()] == ["c", "b", "a"]
    assert [run.run_id for run in ledger.runs(plugin="crm-sync", limit=1)] == ["b"]


def test_timestamps_are_stored_as_utc_and_returned_timezone_aware(ledger):
    local = datetime(2026, 3, 7, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
    run = start(ledger, started_at=local)

    assert run.started_at == local
    assert run.started_at.tzinfo is UTC
    assert run.started_at.hour == 2
    finished = ledger.finish_run("run-1", "promoted")
    assert finished.ended_at.tzinfo is UTC
    assert abs(finished.ended_at - datetime.now(UTC)) < timedelta(minutes=1)


def test_sqlite_stores_utc_text(ledger, ledger_url):
    raw = sqlite3.connect(sqlite_path(ledger_url))
    start(ledger, started_at=datetime(2026, 3, 7, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai")))
    (stored,) = raw.execute("SELECT started_at FROM powerx_ledger_runs").fetchone()
    assert stored == "2026-03-07 02:00:00.000000"


def test_naive_timestamps_are_rejected(ledger):
    with pytest.raises(InvalidLedgerValue, match="started_at"):
        start(ledger, started_at=datetime(2026, 3, 7, 2, 0))
    assert ledger.get_run("run-1") is None


def test_records_convert_to_json_ready_dicts(ledger):
    run = start(ledger, started_at=datetime(2026, 3, 7, 2, 0, tzinfo=UTC))
    data = json.loads(json.dumps(run.to_json()))
    assert data["started_at"] == "2026-03-07T02:00:00+00:00"
    assert data["run_id"] == "run-1"


def test_a_second_ledger_on_the_same_file_sees_the_data_and_keeps_the_schema(ledger_url):
    with Ledger(ledger_url) as first:
        start(first)
    with Ledger(ledger_url) as second:
        assert second.get_run("run-1").plugin == "crm-sync"


def test_the_sqlite_file_is_in_wal_mode(ledger, ledger_url):
    raw = sqlite3.connect(sqlite_path(ledger_url))
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_url_is_an_sqlite_file_under_airflow_home(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow-home"))
    assert default_ledger_url() == f"sqlite:///{tmp_path / 'airflow-home' / 'powerx_ledger.db'}"
    with Ledger() as ledger:
        start(ledger)
    assert (tmp_path / "airflow-home" / "powerx_ledger.db").is_file()


def test_default_airflow_home_is_home_airflow(monkeypatch, tmp_path: Path):
    monkeypatch.delenv("AIRFLOW_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_ledger_url() == f"sqlite:///{tmp_path / 'airflow' / 'powerx_ledger.db'}"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/ledger", "postgresql://u:p@db:5432/ledger"),
        ("postgres+psycopg2://u@db/ledger", "postgresql+psycopg2://u@db/ledger"),
        ("postgresql://u@db/ledger", "postgresql://u@db/ledger"),
        (" sqlite:////var/ledger.db ", "sqlite:////var/ledger.db"),
    ],
)
def test_normalize_url_accepts_airflow_postgres_uris(given, expected):
    assert normalize_url(given) == expected
