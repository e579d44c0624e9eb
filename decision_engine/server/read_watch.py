"""How long a profile read may take: the store's fault or this worker's (CPU starvation)."""

from __future__ import annotations

import asyncio

from decision_engine.store.connection import Connection, Fate, Mark

# Event-loop turns a read whose reply has arrived gets to read it, past its grace.
_TURNS_FOR_A_REPLY = 3


class ReadWatch:
    """Ends a profile read that runs out of time, unless the time went to this worker.

    At `budget` it asks the connection where the read is. Written to Redis at least
    half the budget ago and not answered: Redis is slow or gone, the read ends (the
    `asyncio.timeout` given to `start` raises TimeoutError). Answered, not yet
    written, or written late: the delay is this worker's own (CPU starvation), and the
    read may go on until `grace` before it is ended all the same, unless its reply
    has arrived by then.
    """

    def __init__(
        self, connection: Connection, mark: Mark | None, *, budget: float, grace: float
    ) -> None:
        self._connection = connection
        self._mark = mark
        self._budget = budget
        self._grace = grace
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.time()
        self._due = self._started + budget
        self._timer: asyncio.Timeout | None = None
        self._handle: asyncio.Handle | None = None
        self._turns = 0
        self.ours = False
        """At the last look, the read was late because of this worker, not Redis."""
        self.fate = Fate.WAITING
        """Where the read was when it was last looked at."""
        self.late = 0.0
        """How long after it was due the look that ended the read came."""

    def start(self, timer: asyncio.Timeout) -> None:
        self._timer = timer
        self._handle = self._loop.call_at(self._due, self._check)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def _check(self) -> None:
        now = self._loop.time()
        self.fate, held = self._connection.fate(self._mark)
        self.ours = self.fate is not Fate.WAITING or held < self._budget / 2
        end = self._started + self._grace
        if self.fate is Fate.ANSWERED and now >= end and self._turns < _TURNS_FOR_A_REPLY:
            # The reply is here: reading it takes the event loop a turn or two.
            self._turns += 1
            self._handle = self._loop.call_soon(self._check)
        elif not self.ours or now >= end:
            self.late = now - self._due
            assert self._timer is not None
            self._timer.reschedule(now)  # ends the read: TimeoutError
        else:
            self._due = end
            self._handle = self._loop.call_at(end, self._check)
