"""The HITL settle wait of the REST client: an answer never goes out sooner than the settle time
after the request, also when Airflow's timestamp cannot be read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from powerx_upgrade.airflow_client import rest

pytestmark = pytest.mark.unit


def test_an_unreadable_timestamp_waits_the_whole_settle_time(monkeypatch, caplog):
    slept: list[float] = []
    monkeypatch.setattr(rest.time, "sleep", slept.append)
    rest.settle_after("not a time", 5.0)
    assert slept == [5.0]
    assert "unreadable timestamp 'not a time'" in caplog.text


def test_an_old_request_needs_no_wait_and_a_fresh_one_waits_the_rest(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(rest.time, "sleep", slept.append)
    rest.settle_after((datetime.now(UTC) - timedelta(seconds=60)).isoformat(), 5.0)
    assert slept == []
    rest.settle_after((datetime.now(UTC) - timedelta(seconds=2)).isoformat(), 5.0)
    assert len(slept) == 1 and 2.5 < slept[0] <= 3.0
    rest.settle_after(None, 5.0)
    assert len(slept) == 1
