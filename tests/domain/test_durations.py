from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from powerx_upgrade.domain.durations import DurationError, format_duration, parse_duration

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("10m", timedelta(minutes=10)),
        ("4h", timedelta(hours=4)),
        ("1h30m", timedelta(minutes=90)),
        ("1d", timedelta(days=1)),
        ("250ms", timedelta(milliseconds=250)),
        ("1.5h", timedelta(minutes=90)),
        (45, timedelta(seconds=45)),
    ],
)
def test_durations_read_the_documented_forms(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["10 min", "m10", "", "ten minutes", "-5m", True])
def test_invalid_durations_name_the_text_and_the_accepted_forms(text):
    with pytest.raises(DurationError) as caught:
        parse_duration(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize("text", ["99999999999d", 1e20])
def test_absurdly_long_durations_are_a_clear_error(text):
    with pytest.raises(DurationError, match="too long"):
        parse_duration(text)


def test_negative_seconds_are_refused():
    with pytest.raises(DurationError, match="negative"):
        parse_duration(-3)


@given(st.integers(min_value=0, max_value=10 * 86_400 * 1000))
def test_format_duration_round_trips(milliseconds):
    value = timedelta(milliseconds=milliseconds)
    assert parse_duration(format_duration(value)) == value
