"""A warning that repeats at most every few seconds, for background loops that retry."""

from __future__ import annotations

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
