"""A warning that repeats at most every few seconds, for background loops that retry."""

from __future__ import annotations

import logging
import time


class Throttle:
    """`ready()` is True the first time, then at most once every `every_s`."""

    def __init__(self, *, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self._last = -float("inf")

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return False
        self._last = now
        return True


class Outage:
    """A run of failures of a background loop or a dependency, logged when it starts, then
    at most every `every_s`, then when it ends.

    At a thousand requests a second (or a retry a second), a warning per failure would
    bury the log; the counts are in metrics anyway. `failing` is a %-template of the
    reason and the failures so far, `back` of the failures.
    """

    def __init__(
        self, log: logging.Logger, *, failing: str, back: str, every_s: float = 10.0
    ) -> None:
        self._log = log
        self.failing = failing
        self.back = back
        self.failures = 0
        self._throttle = Throttle(every_s=every_s)

    def failed(self, reason: str) -> None:
        self.failures += 1
        if self._throttle.ready():
            self._log.warning(self.failing, reason, self.failures)

    def recovered(self) -> None:
        if self.failures:
            self._log.warning(self.back, self.failures)
            self.failures = 0
            self._throttle = Throttle(every_s=self._throttle.every_s)
