"""durable_rules, held on a short leash: no threads, fixed session names, copies of the
ruleset for more than 1,023 live interactions, and its errors translated.

What this module relies on (durable_rules 2.0.28, read in its source and measured):

- `Host.__init__` calls `_run`, which starts two `threading.Timer` loops that poke every
  ruleset (its timers and queued actions) from other threads. The C core is not thread
  safe and this engine uses neither durable timers nor queued actions, so `_QuietHost`
  starts nothing. Actions are pumped by the call that makes them due: `assert_fact` and
  `retract_fact` without a callback run `do_actions` for that session
  (`start_action_for_state`), which starts each action, runs it, and asks the C core for
  the next one of the session until none is left (none ever is, measured).
- Nothing here calls `start_action` or `assert_timers` (what that dispatcher calls): they
  walk every session of the ruleset through an index that `delete_state` leaves
  pointing at freed memory (a use-after-free, found with an AddressSanitizer build), so
  once a session has been deleted, they read freed memory and crash.
- A ruleset holds at most 1,023 live sessions (then MemoryError, for good); a session's
  slot is free again after `delete_state`. Sessions are named by slot (`s0` … `s1022`),
  never by interaction id: the C core tells sids apart by a 32-bit FNV-1a hash, and the
  slot names are checked to hash apart (as are the fact ids of one session).
- Deleting a session whose facts were all unhandled (no rule matched any) crashes the
  process (SIGSEGV, measured). Every session therefore opens with a `$session` fact that
  a rule of its own handles, so every session is deleted the same, safe way.
- A fact no rule matches raises MessageNotHandledException and is not stored; asserting
  a fact id twice raises MessageObservedException; C errors (303: alpha stack, 302:
  properties, ...) raise `durable_rules_engine.error`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import durable_rules_engine
from durable import engine as durable

from decision_engine.errors import MomentCapacityError, MomentError
from decision_engine.moments.definitions import OPEN

SLOTS_PER_RULESET = 1023
"""Live sessions one durable_rules ruleset takes (its MAX_STATE_INDEX_LENGTH is 1,024)."""
FACT_IDS = 64
"""Ids of the facts one session may hold at once: `f0` … `f63` (and `d`, `open`)."""
DEADLINE_ID = "d"
OPEN_ID = "open"


def fnv1a32(text: str) -> int:
    """durable_rules' hash of sids and fact ids (FNV-1a, 32 bits, over the bytes)."""
    value = 0x811C9DC5
    for byte in text.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def distinct_hashes(names: list[str]) -> bool:
    return len({fnv1a32(n) for n in names}) == len(names)


FACT_ID_NAMES = [f"f{n}" for n in range(FACT_IDS)]
SLOT_NAMES = [f"s{n}" for n in range(SLOTS_PER_RULESET)]
# Checked once at import: two names with one hash would share a session or a fact.
if not distinct_hashes([*FACT_ID_NAMES, DEADLINE_ID, OPEN_ID]) or not distinct_hashes(SLOT_NAMES):
    raise AssertionError("durable_rules would confuse two session or fact names")


class _QuietHost(durable.Host):  # type: ignore[misc]
    """durable_rules' Host without its dispatcher threads (see the module docstring)."""

    def _run(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Slot:
    """Where one interaction lives: a copy of the ruleset and a session in it."""

    ruleset: str
    sid: str


class Sessions:
    """The copies of the moment ruleset and their session slots; owned by one thread."""

    def __init__(
        self,
        definition: Callable[[], dict[str, dict[str, Any]]],
        *,
        max_live: int,
        slots_per_ruleset: int = SLOTS_PER_RULESET,
    ) -> None:
        if not 1 <= slots_per_ruleset <= SLOTS_PER_RULESET:
            raise ValueError(f"slots_per_ruleset is 1..{SLOTS_PER_RULESET}")
        if max_live < 1:
            raise ValueError("max_live must be at least 1")
        self._definition = definition
        self._per_ruleset = slots_per_ruleset
        self.max_live = max_live
        self._host = _QuietHost()
        self._free: list[list[str]] = []
        """Free sids per copy, the lowest slot last (popped first)."""
        self.live = 0

    @property
    def copies(self) -> int:
        return len(self._free)

    def acquire(self) -> Slot:
        """A free session: in the first copy with room, registering a new copy if needed."""
        if self.live >= self.max_live:
            raise MomentCapacityError(
                f"{self.live} interactions are live, the most this engine takes "
                f"(max_live={self.max_live}); end finished interactions or raise max_live"
            )
        for index, free in enumerate(self._free):
            if free:
                return self._open(Slot(self._name(index), free.pop()))
        index = len(self._free)
        self._host.register_rulesets({self._name(index): self._definition()})
        self._free.append(SLOT_NAMES[: self._per_ruleset][::-1])
        return self._open(Slot(self._name(index), self._free[index].pop()))

    def release(self, slot: Slot) -> None:
        """Delete the session (its facts and joins) and free its slot."""
        self._call(self._host.delete_state, slot.ruleset, slot.sid)
        self._free[int(slot.ruleset.removeprefix("moments"))].append(slot.sid)
        self.live -= 1

    def assert_fact(self, slot: Slot, fact: dict[str, Any]) -> bool:
        """Assert one fact (its actions run before this returns); False when no rule took it."""
        try:
            self._call(self._host.assert_fact, slot.ruleset, {"sid": slot.sid, **fact})
        except durable.MessageNotHandledException:
            return False
        return True

    def retract_fact(self, slot: Slot, fact: dict[str, Any]) -> None:
        try:
            self._call(self._host.retract_fact, slot.ruleset, {"sid": slot.sid, **fact})
        except durable.MessageNotHandledException:
            return

    def close(self) -> None:
        """Free the C memory of every copy; the Sessions cannot be used afterwards."""
        for index in range(len(self._free)):
            ruleset = self._host.get_ruleset(self._name(index))
            durable_rules_engine.delete_ruleset(ruleset._handle)
        self._free = []
        self.live = 0

    def _open(self, slot: Slot) -> Slot:
        self.assert_fact(slot, {"id": OPEN_ID, "kind": OPEN})
        self.live += 1
        return slot

    @staticmethod
    def _name(index: int) -> str:
        return f"moments{index}"

    @staticmethod
    def _call(function: Callable[..., Any], *args: Any) -> Any:
        try:
            return function(*args)
        except durable.MessageObservedException as exc:
            raise MomentError(f"durable_rules saw a fact twice: {exc.message}") from exc
        except durable_rules_engine.error as exc:
            raise MomentError(f"durable_rules failed: {exc}") from exc
