"""A worker process: one gRPC server on the shared port, forked by the supervisor.

Runs in the child after the fork, so this is where gRPC objects may first be made:
the server, the Redis connections, the background tasks (learning refresh, and on
worker 0 the outcome reconciler). It swaps in new rules on SIGHUP, stops on SIGTERM,
and asks the kernel for SIGTERM when the supervisor dies.

The metrics are made here, first thing (`init_metrics`), so they go to the
multiprocess directory the supervisor serves. The gRPC modules are imported inside
the functions, so that the supervisor, which imports this module, loads no gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from decision_engine.config import Settings
from decision_engine.errors import RulesetError
from decision_engine.ruleset.compiled import load_compiled
from decision_engine.server import metrics
from decision_engine.server.bootstrap import authenticator, server_tls

if TYPE_CHECKING:
    from decision_engine.server.service import ActiveRuleset

log = logging.getLogger("decision_engine.serve")

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def worker_main(settings: Settings, redis_url: str, port: int, index: int, supervisor: int) -> None:
    """The forked process's entry point: serve until SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when to stop
    _die_with(supervisor)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run_worker(settings, redis_url, port, index))


def _die_with(supervisor: int) -> None:
    """Have the kernel send SIGTERM when the supervisor dies, however it dies.

    An orphaned worker would keep serving without metrics, restarts or reloads, and
    hold the port so that a restarted service shares it with a stale one.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("worker cannot follow its supervisor: prctl errno %d", ctypes.get_errno())
    if os.getppid() != supervisor:  # died before prctl took effect
        os._exit(1)


async def _run_worker(settings: Settings, redis_url: str, port: int, index: int) -> None:
    from decision_engine.server.app import create_server, mark_serving
    from decision_engine.server.decision_ids import DecisionIds
    from decision_engine.server.limits import ServerLimits
    from decision_engine.server.service import ActiveRuleset, LearnedState
    from decision_engine.store.connection import PipelinedConnection
    from decision_engine.store.profiles import ProfileStore

    metrics.init_metrics()
    ruleset = load_compiled(settings.rules_dir)
    rules = ActiveRuleset(ruleset, loaded_at=time.time())
    served = [(settings.rules_dir, rules)]
    challenger = None
    if settings.challenger_rules is not None:
        challenger = ActiveRuleset(
            load_compiled(settings.challenger_rules), loaded_at=time.time(), arm="challenger"
        )
        served.append((settings.challenger_rules, challenger))
    timeout_s = settings.redis_timeout_ms / 1000
    store = ProfileStore.from_url(redis_url, socket_timeout=max(timeout_s * 4, 0.5))
    outcomes_url = settings.outcomes_redis_url or redis_url
    outcomes = PipelinedConnection(outcomes_url) if outcomes_url != redis_url else None
    learned = LearnedState(rules, store)
    background = [asyncio.create_task(learned.run(), name="learning refresh")]
    if index == 0:
        # One candidate per replica; the reconciler's lease picks one in the deployment.
        background.append(
            asyncio.create_task(
                _reconcile(settings, redis_url, outcomes_url, rules, challenger),
                name="outcome reconciler",
            )
        )
    for task in background:
        task.add_done_callback(_log_if_crashed)
    server, _, health_servicer = await create_server(
        address=f"{_bracket(settings.host)}:{port}",
        rules=rules,
        store=store,
        store_timeout_s=timeout_s,
        reuse_port=True,
        rules_dir=str(settings.rules_dir),
        ids=DecisionIds(
            settings.decision_secret.encode(), ttl_s=settings.decision_ttl_days * 86_400
        ),
        learned=learned,
        challenger=challenger,
        experiment=settings.experiment,
        outcomes=outcomes,
        authenticator=authenticator(settings),
        tls=server_tls(settings),
        reflection_on=settings.reflection,
        outcomes_timeout_s=settings.outcomes_timeout_ms / 1000,
        limits=ServerLimits(
            max_in_flight=settings.max_in_flight,
            max_queued=settings.max_queued,
            min_deadline_s=settings.min_deadline_ms / 1000,
            max_connection_age_s=settings.max_connection_age_s,
        ),
    )
    await server.start()
    await mark_serving(health_servicer)
    log.debug("worker %d (pid %d) serving ruleset %s", index, os.getpid(), ruleset.version)
    stopped = asyncio.Event()
    reload_wanted = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    loop.add_signal_handler(signal.SIGHUP, reload_wanted.set)
    reloader = asyncio.create_task(_reload_on_signal(served, reload_wanted, index))
    await stopped.wait()
    reloader.cancel()
    for task in background:
        task.cancel()
    # The reconciler gives its lease up on the way out.
    await asyncio.gather(*background, return_exceptions=True)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace=2.0)
    await store.aclose()
    if outcomes is not None:
        await outcomes.aclose()


async def _reconcile(
    settings: Settings,
    redis_url: str,
    outcomes_url: str,
    rules: ActiveRuleset,
    challenger: ActiveRuleset | None,
) -> None:
    """Apply what reached the outcome log but not the decision Redis (store/reconcile.py)."""
    from decision_engine.decide.experiment import CHALLENGER
    from decision_engine.server.reconcile import run_reconciler
    from decision_engine.store.connection import PipelinedConnection
    from decision_engine.store.reconcile import Reconciler

    # Connections of its own: a replay must not queue ahead of Decide's reads.
    log_connection = PipelinedConnection(outcomes_url)
    apply_connection = PipelinedConnection(redis_url)
    reconciler = Reconciler(
        log_connection,
        apply_connection,
        # Applied with the learning settings of the arm the decision was made in, as
        # RecordOutcome does.
        learning=lambda arm: (
            (
                challenger if arm == CHALLENGER and challenger is not None else rules
            ).current.source.learning
        ),
        decision_ttl_s=settings.decision_ttl_days * 86_400,
        # Younger entries are still being applied by their own call.
        settle_s=settings.outcomes_timeout_ms / 1000 + 1.0,
        on_applied=metrics.OUTCOMES_RECONCILED.inc,
    )
    try:
        await run_reconciler(reconciler)
    finally:
        await log_connection.aclose()
        await apply_connection.aclose()


def _log_if_crashed(task: asyncio.Task[None]) -> None:
    """A background loop that ends other than by cancellation is a bug: say so loudly."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s stopped", task.get_name(), exc_info=task.exception())


async def _reload_on_signal(
    served: list[tuple[Path, ActiveRuleset]], wanted: asyncio.Event, index: int
) -> None:
    """Swap in the checked rulesets the supervisor announced; compile in a thread."""
    while True:
        await wanted.wait()
        wanted.clear()
        for directory, rules in served:
            try:
                ruleset = await asyncio.to_thread(load_compiled, directory)
            except RulesetError as exc:
                # Changed again since the supervisor checked it; the next signal brings the fix.
                log.warning("worker %d: rules changed under reload, keeping %s: %s",
                            index, rules.current.version, exc.problems[0])  # fmt: skip
                continue
            if ruleset.version != rules.current.version:
                rules.swap(ruleset, loaded_at=time.time())
                metrics.RELOADS.inc()
                log.info("worker %d now serves ruleset %s", index, ruleset.version)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
