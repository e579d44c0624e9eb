"""The engine's own timers: absence deadlines, in event time, across interactions.

durable_rules' timers read the wall clock with one-second resolution and fire from its
dispatcher threads; here a deadline is a number of event time, due when an interaction's
next event (or `advance(now)`) reaches it. One heap orders every live interaction's
deadlines (by due time, then by when they were set, so replays fire in the same order);
each interaction also keeps its own, so that its next event fires its deadlines first.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, order=True)
class Deadline:
    """An absence moment's anchor, waiting for its window to pass."""

    due: float
    order: int
    """When it was set: breaks ties between equal due times, the same on every replay."""
    interaction_id: str = field(compare=False)
    rule: str = field(compare=False)
    """The durable_rules rule the deadline fact completes."""
    moment: int = field(compare=False)
    anchor_seq: int = field(compare=False)


class Deadlines:
    """Pending deadlines, by interaction and overall."""

    def __init__(self) -> None:
        self._all: list[Deadline] = []
        self._by_interaction: dict[str, list[Deadline]] = {}
        self._pending: set[int] = set()
        """Orders of the deadlines not yet fired or dropped (the heap keeps stale ones)."""
        self._next_order = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, due: float, interaction_id: str, rule: str, moment: int, anchor_seq: int) -> None:
        deadline = Deadline(due, self._next_order, interaction_id, rule, moment, anchor_seq)
        self._next_order += 1
        heapq.heappush(self._all, deadline)
        heapq.heappush(self._by_interaction.setdefault(interaction_id, []), deadline)
        self._pending.add(deadline.order)

    def pop_for(self, interaction_id: str, now: float) -> Deadline | None:
        """The interaction's earliest deadline if it is due by `now` (removed)."""
        own = self._by_interaction.get(interaction_id)
        if not own or own[0].due > now:
            return None
        deadline = heapq.heappop(own)
        self._pending.discard(deadline.order)
        return deadline

    def pop_any(self, now: float) -> Deadline | None:
        """The earliest deadline of any interaction if it is due by `now` (removed)."""
        self._skip_stale()
        if not self._all or self._all[0].due > now:
            return None
        deadline = heapq.heappop(self._all)
        # The earliest pending deadline overall is its interaction's earliest too.
        own = self._by_interaction[deadline.interaction_id]
        heapq.heappop(own)
        self._pending.discard(deadline.order)
        return deadline

    def next_due(self) -> float | None:
        self._skip_stale()
        return self._all[0].due if self._all else None

    def drop(self, interaction_id: str) -> None:
        """Forget an interaction's deadlines (it ended)."""
        for deadline in self._by_interaction.pop(interaction_id, ()):
            self._pending.discard(deadline.order)

    def _skip_stale(self) -> None:
        while self._all and self._all[0].order not in self._pending:
            heapq.heappop(self._all)
