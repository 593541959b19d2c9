"""Concurrency that adapts to the platform: fewer calls in flight when it answers 429, more
again when it keeps up (additive increase, multiplicative decrease, as TCP does)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


class AdaptiveConcurrency:
    """A limit on platform calls in flight, between 1 and the policy's `concurrency`.

    A throttled answer halves the limit (at most once per `Retry-After` window, so one burst of
    429s counts once) and every caller waits out the window; each `limit` successes in a row
    raise it by one, back up to the ceiling. Every change is logged; `stats()` is what the shard
    summary (and so the task's XCom and the report) carries.

    :param ceiling: the policy's concurrency, never exceeded.
    :param clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, ceiling: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ceiling = max(1, ceiling)
        self.limit = self.ceiling
        self.lowest = self.ceiling
        self.throttles = 0
        self.decreases = 0
        self._in_flight = 0
        self._streak = 0
        self._quiet_until = 0.0
        self._clock = clock
        self._cond = threading.Condition()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the `limit` places for a platform call; waits while none is free or a
        throttle window is open."""
        with self._cond:
            while True:
                pause = self._quiet_until - self._clock()
                if pause > 0:
                    self._cond.wait(pause)
                elif self._in_flight >= self.limit:
                    self._cond.wait()
                else:
                    break
            self._in_flight += 1
        try:
            yield
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def succeeded(self) -> None:
        with self._cond:
            self._streak += 1
            if self.limit < self.ceiling and self._streak >= self.limit:
                self.limit += 1
                self._streak = 0
                log.info("platform keeps up: concurrency raised to %d", self.limit)
                self._cond.notify_all()

    def throttled(self, retry_after: float | None) -> None:
        """The platform asked to slow down (429, or 503 with `Retry-After`)."""
        wait = 1.0 if retry_after is None else min(60.0, max(0.0, retry_after))
        with self._cond:
            self.throttles += 1
            self._streak = 0
            now = self._clock()
            if now < self._quiet_until:
                return  # the same burst: already halved for this window
            before = self.limit
            self.limit = max(1, self.limit // 2)
            self.lowest = min(self.lowest, self.limit)
            self.decreases += 1
            self._quiet_until = now + wait
            log.warning(
                "platform throttled (429/Retry-After %.1f s): concurrency %d -> %d",
                wait,
                before,
                self.limit,
            )

    def stats(self) -> dict[str, Any]:
        return {
            "ceiling": self.ceiling,
            "limit": self.limit,
            "lowest": self.lowest,
            "throttled": self.throttles,
            "decreases": self.decreases,
        }
