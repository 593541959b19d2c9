"""Adaptive concurrency: halves on a throttled answer (once per Retry-After window), waits the
window out, and climbs back one step per `limit` successes, never above the policy's ceiling."""

from __future__ import annotations

import threading
import time

import pytest

from powerx_upgrade.rollout.pacing import AdaptiveConcurrency

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_throttle_halves_the_limit_and_a_burst_in_the_same_window_counts_once():
    clock = Clock()
    pacing = AdaptiveConcurrency(50, clock=clock)
    pacing.throttled(2.0)
    pacing.throttled(2.0)  # the other callers of the same burst
    pacing.throttled(None)
    assert pacing.stats() == {
        "ceiling": 50,
        "limit": 25,
        "lowest": 25,
        "throttled": 3,
        "decreases": 1,
    }
    clock.now += 2.5  # the window is over: a new 429 halves again
    pacing.throttled(1.0)
    assert (pacing.limit, pacing.lowest, pacing.decreases) == (12, 12, 2)


def test_the_limit_never_drops_below_one():
    clock = Clock()
    pacing = AdaptiveConcurrency(3, clock=clock)
    for _ in range(5):
        pacing.throttled(0.0)
        clock.now += 1
    assert pacing.limit == 1


def test_successes_raise_the_limit_one_step_per_limit_successes_up_to_the_ceiling():
    clock = Clock()
    pacing = AdaptiveConcurrency(8, clock=clock)
    pacing.throttled(0.0)
    assert pacing.limit == 4
    for _ in range(3):
        pacing.succeeded()
    assert pacing.limit == 4
    pacing.succeeded()
    assert pacing.limit == 5
    for _ in range(100):
        pacing.succeeded()
    assert pacing.limit == 8 and pacing.lowest == 4


def test_no_more_calls_in_flight_than_the_limit():
    pacing = AdaptiveConcurrency(3)
    in_flight = peak = 0
    lock = threading.Lock()

    def call() -> None:
        nonlocal in_flight, peak
        with pacing.slot():
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            time.sleep(0.01)
            with lock:
                in_flight -= 1

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 3


def test_a_slot_waits_until_the_throttle_window_is_over():
    pacing = AdaptiveConcurrency(4)
    pacing.throttled(0.3)
    started = time.monotonic()
    with pacing.slot():
        waited = time.monotonic() - started
    assert waited >= 0.25
