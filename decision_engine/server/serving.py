"""What every forked process of `serve` sets up alike: the gRPC workers (worker.py) and
the moment processes (moment_worker.py).

The rulesets served (champion, challenger) and their live reload on SIGHUP, the signed
decision ids, following the supervisor to its death, and logging a background loop that
crashed. Nothing here imports gRPC: the supervisor imports the modules that use it.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from decision_engine.config import Settings
from decision_engine.errors import RulesetError
from decision_engine.ruleset.compiled import load_compiled
from decision_engine.server import heap
from decision_engine.server.decision_ids import DecisionIds
from decision_engine.server.rulesets import ActiveRuleset

log = logging.getLogger("decision_engine.serve")

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_PR_SET_NAME = 15


@dataclass(frozen=True, slots=True)
class Served:
    """The rulesets a process serves, and the directory each reloads from."""

    rules: ActiveRuleset
    challenger: ActiveRuleset | None
    directories: tuple[tuple[Path, ActiveRuleset], ...]


def served_rulesets(settings: Settings) -> Served:
    rules = ActiveRuleset(load_compiled(settings.rules_dir), loaded_at=time.time())
    directories = [(settings.rules_dir, rules)]
    challenger = None
    if settings.challenger_rules is not None:
        challenger = ActiveRuleset(
            load_compiled(settings.challenger_rules), loaded_at=time.time(), arm="challenger"
        )
        directories.append((settings.challenger_rules, challenger))
    heap.settle()
    return Served(rules, challenger, tuple(directories))


def decision_ids(settings: Settings) -> DecisionIds:
    """Ids signed with the key every replica shares (bootstrap.py made sure of one)."""
    return DecisionIds(settings.decision_secret.encode(), ttl_s=settings.decision_ttl_days * 86_400)


def die_with(supervisor: int, *, name: str = "") -> None:
    """Have the kernel send SIGTERM when the supervisor dies, however it dies (and name
    the process, as `ps -o comm` shows it).

    An orphaned worker would keep serving without metrics, restarts or reloads, and
    hold the port so that a restarted service shares it with a stale one.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("worker cannot follow its supervisor: prctl errno %d", ctypes.get_errno())
    if name:
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    if os.getppid() != supervisor:  # died before prctl took effect
        os._exit(1)


def log_if_crashed(task: asyncio.Task[None]) -> None:
    """A background loop that ends other than by cancellation is a bug: say so loudly."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped", task.get_name(), exc_info=task.exception())


async def reload_on_signal(served: Served, wanted: asyncio.Event, who: str) -> None:
    """Swap in the checked rulesets the supervisor announced; compile in a thread."""
    while True:
        await wanted.wait()
        wanted.clear()
        for directory, rules in served.directories:
            try:
                ruleset = await asyncio.to_thread(load_compiled, directory)
            except RulesetError as exc:
                # Changed again since the supervisor checked it; the next signal brings the fix.
                log.warning("%s: rules changed under reload, keeping %s: %s",
                            who, rules.current.version, exc.problems[0])  # fmt: skip
                continue
            if ruleset.version != rules.current.version:
                rules.swap(ruleset, loaded_at=time.time())
                heap.freeze_new()
                log.info("%s now serves ruleset %s", who, ruleset.version)
