"""Quiescence (consul-template's `wait {min, max}`): act once a burst has gone quiet.

The first tick arms `min` and a `max` deadline; each later tick re-arms `min` but never
past the deadline. So a steady stream of writes still gets applied at most `max` after it
started, and a burst of 100 writes ends in one apply of the last one.
"""

from __future__ import annotations

import time


class Quiescence:
    __slots__ = ("_deadline", "_fire_at", "wait_max", "wait_min")

    def __init__(self, wait_min: float, wait_max: float) -> None:
        self.wait_min = wait_min
        self.wait_max = max(wait_max, wait_min)
        self._deadline: float | None = None
        self._fire_at: float | None = None

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._deadline is None:
            self._deadline = now + self.wait_max
        self._fire_at = min(now + self.wait_min, self._deadline)

    @property
    def fire_at(self) -> float:
        """When it should fire (time.monotonic()); call only after `tick`."""
        assert self._fire_at is not None, "tick() first"
        return self._fire_at

    def remaining(self, now: float | None = None) -> float:
        """Seconds until it should fire (0 when due); call only after `tick`."""
        now = time.monotonic() if now is None else now
        assert self._fire_at is not None, "tick() first"
        return max(0.0, self._fire_at - now)

    def reset(self) -> None:
        self._deadline = self._fire_at = None
