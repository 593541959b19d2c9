"""The window engine: open/closed, closing and next opening, freezes, and DST in the plan's zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from powerx_upgrade.domain.models import WindowSpec
from powerx_upgrade.domain.windows import WindowError, firings, parse_freeze, window_state, zone

pytestmark = pytest.mark.unit


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


SATURDAY_SHANGHAI = WindowSpec(
    schedule="0 2 * * SAT",
    duration="4h",
    timezone="Asia/Shanghai",
    freeze=["2026-12-24/2026-12-26", "2026-12-31/2027-01-01"],
)


def test_window_is_open_inside_and_says_when_it_closes():
    # Saturday 2026-11-28 02:00 in Shanghai is 2026-11-27 18:00 UTC.
    state = window_state(SATURDAY_SHANGHAI, utc(2026, 11, 27, 19))
    assert state.open
    assert state.opened_at == utc(2026, 11, 27, 18)
    assert state.closes_at == utc(2026, 11, 27, 22)


def test_window_is_closed_before_and_gives_the_next_opening():
    state = window_state(SATURDAY_SHANGHAI, utc(2026, 11, 27, 12))
    assert not state.open and state.next_open == utc(2026, 11, 27, 18)
    assert "2026-11-28 02:00 CST" in state.reason


def test_window_end_is_exclusive():
    state = window_state(SATURDAY_SHANGHAI, utc(2026, 11, 27, 22))
    assert not state.open and state.next_open == utc(2026, 12, 4, 18)


def test_freeze_ranges_skip_a_whole_window():
    # 2026-12-26 is a Saturday inside the Christmas freeze; 2027-01-02 is the next free one.
    state = window_state(SATURDAY_SHANGHAI, utc(2026, 12, 19, 0))
    assert state.next_open == utc(2027, 1, 1, 18)


def test_inside_a_freeze_the_window_stays_closed_and_names_the_freeze():
    state = window_state(SATURDAY_SHANGHAI, utc(2026, 12, 25, 19))
    assert not state.open
    assert state.frozen_by == "2026-12-24/2026-12-26"
    assert state.next_open == utc(2027, 1, 1, 18)


def test_a_freeze_cutting_into_a_window_closes_it_early():
    spec = SATURDAY_SHANGHAI.model_copy(update={"freeze": ["2026-12-05T04:00/2026-12-05T12:00"]})
    state = window_state(spec, utc(2026, 12, 4, 18, 30))
    assert state.open and state.closes_at == utc(2026, 12, 4, 20)


def test_spring_forward_fires_at_the_end_of_the_gap():
    # Berlin skips 02:00-03:00 on 2026-03-29: a 02:30 firing happens at 03:00 CEST = 01:00 UTC.
    spec = WindowSpec(schedule="30 2 * * *", duration="1h", timezone="Europe/Berlin")
    assert window_state(spec, utc(2026, 3, 28, 23)).next_open == utc(2026, 3, 29, 1)
    assert list(firings(spec, utc(2026, 3, 28), utc(2026, 3, 31))) == [
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 30, 0, 30),
    ]


def test_fall_back_fires_once_at_the_first_occurrence():
    # Berlin repeats 02:00-03:00 on 2026-10-25: 02:30 CEST (00:30 UTC) fires, 02:30 CET does not.
    spec = WindowSpec(schedule="30 2 * * *", duration="1h", timezone="Europe/Berlin")
    assert window_state(spec, utc(2026, 10, 25, 0)).next_open == utc(2026, 10, 25, 0, 30)
    later = window_state(spec, utc(2026, 10, 25, 1, 45))
    assert not later.open and later.next_open == utc(2026, 10, 26, 1, 30)


def test_duration_is_elapsed_time_across_a_dst_change():
    spec = WindowSpec(schedule="0 1 * * *", duration="4h", timezone="Europe/Berlin")
    state = window_state(spec, utc(2026, 3, 29, 1))
    assert state.open and state.closes_at == utc(2026, 3, 29, 4)


def test_overlapping_firings_merge_into_one_open_stretch():
    spec = WindowSpec(schedule="0 * * * *", duration="90m", timezone="UTC")
    state = window_state(spec, utc(2026, 1, 1, 12, 10))
    assert state.open and state.closes_at - utc(2026, 1, 1, 12, 10) > timedelta(days=30)


def test_no_window_means_always_open():
    state = window_state(None, utc(2026, 1, 1))
    assert state.open and state.closes_at is None


def test_a_window_that_never_opens_again_says_so():
    spec = WindowSpec(schedule="0 2 * * *", duration="1h", freeze=["2026-01-01/2029-12-31"])
    state = window_state(spec, utc(2026, 1, 1))
    assert not state.open and state.next_open is None and "no opening within" in state.reason


def test_naive_now_is_refused():
    with pytest.raises(WindowError, match="timezone-aware"):
        window_state(SATURDAY_SHANGHAI, datetime(2026, 1, 1))


def test_freeze_dates_are_whole_days_in_the_window_zone():
    freeze = parse_freeze("2026-12-24/2026-12-26", zone("Asia/Shanghai"))
    assert freeze.start == utc(2026, 12, 23, 16) and freeze.end == utc(2026, 12, 26, 16)


def test_freeze_with_explicit_offset_is_taken_as_written():
    freeze = parse_freeze("2026-12-24T18:00+00:00/2026-12-24T20:00+00:00", zone("Asia/Shanghai"))
    assert freeze.start == utc(2026, 12, 24, 18) and freeze.end == utc(2026, 12, 24, 20)
