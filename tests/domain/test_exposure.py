"""Exposure before detection: tenants and tenant-minutes on the new version, from records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from powerx_upgrade.domain.exposure import exposure

pytestmark = pytest.mark.unit

T0 = datetime(2026, 3, 7, 2, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@dataclass(frozen=True)
class Action:
    tenant_id: str
    batch_index: int | None
    finished_at: datetime | None
    kind: str = "upgrade"
    state: str = "succeeded"
    noop: bool = False


@dataclass(frozen=True)
class Verdict:
    batch_index: int
    phase: str
    evaluated_at: datetime
    final: bool = True


def test_tenants_upgraded_before_the_first_failing_verdict_count_until_it():
    actions = [
        Action("a", 1, at(0)),
        Action("b", 1, at(30)),
        Action("c", 2, at(120)),  # after batch 1's failing verdict at 90 s
        Action("a", 1, at(150), kind="rollback"),
        Action("b", 1, at(180), kind="rollback"),
        Action("c", 2, at(210), kind="rollback"),
    ]
    verdicts = [Verdict(1, "pass", at(60), final=False), Verdict(1, "fail", at(90))]
    found = exposure(actions, verdicts, end=at(600))
    assert found.detected and found.detected_batch == 1 and found.detected_phase == "fail"
    assert found.detected_at == at(90)
    assert found.tenants_before_detection == 2
    assert found.tenant_minutes_before_detection == 2.5  # a 90 s + b 60 s
    assert found.batches_before_detection == (1,)
    assert found.tenants == 3
    assert found.tenant_minutes == 6.5  # a 150 s + b 150 s + c 90 s


def test_without_a_failing_verdict_everything_until_the_run_end_counts():
    actions = [Action("a", 1, at(0)), Action("b", 2, at(60))]
    found = exposure(actions, [Verdict(1, "pass", at(30)), Verdict(2, "pass", at(90))], end=at(120))
    assert not found.detected and found.detected_at is None
    assert found.tenants_before_detection == found.tenants == 2
    assert found.tenant_minutes_before_detection == found.tenant_minutes == 3.0


def test_noop_failed_and_unfinished_upgrades_expose_no_one():
    actions = [
        Action("already", 1, at(0), noop=True),
        Action("failed", 1, at(0), state="failed"),
        Action("running", 1, None, state="started"),
        Action("real", 1, at(30)),
    ]
    found = exposure(actions, [Verdict(1, "no_data", at(90))], end=at(90))
    assert found.tenants == found.tenants_before_detection == 1
    assert found.tenant_minutes_before_detection == 1.0
    assert found.detected_phase == "no_data"


def test_the_earliest_failing_verdict_is_the_detection_whatever_the_input_order():
    actions = [Action("a", 1, at(0)), Action("b", 2, at(100))]
    verdicts = [Verdict(2, "fail", at(200)), Verdict(1, "inconclusive", at(60))]
    found = exposure(actions, verdicts, end=at(300))
    assert found.detected_batch == 1 and found.tenants_before_detection == 1
    assert found.tenant_minutes_before_detection == 1.0
    assert found.as_dict()["detected_at"] == "2026-03-07T02:01:00+00:00"
