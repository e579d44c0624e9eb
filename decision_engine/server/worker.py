"""A worker process: one gRPC server on the shared port, forked by the supervisor.

Runs in the child after the fork, so this is where gRPC objects may first be made:
the server, the Redis connections, the background tasks (learning refresh, and on
worker 0 the outcome reconciler and the cap budget gauge). It swaps in new rules on
SIGHUP, stops on SIGTERM, and asks the kernel for SIGTERM when the supervisor dies.

The metrics are made here, first thing (`init_metrics`), so they go to the
multiprocess directory the supervisor serves. The gRPC modules are imported inside
the functions, so that the supervisor, which imports this module, loads no gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from decision_engine.config import Settings
from decision_engine.server import metrics
from decision_engine.server.bootstrap import authenticator, server_tls
from decision_engine.server.rulesets import ActiveRuleset
from decision_engine.server.serving import (
    decision_ids,
    die_with,
    log_if_crashed,
    reload_on_signal,
    served_rulesets,
)

log = logging.getLogger("decision_engine.serve")


def worker_main(settings: Settings, redis_url: str, port: int, index: int, supervisor: int) -> None:
    """The forked process's entry point: serve until SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when to stop
    die_with(supervisor)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run_worker(settings, redis_url, port, index))


async def _run_worker(settings: Settings, redis_url: str, port: int, index: int) -> None:
    from decision_engine.server.app import create_server, mark_serving
    from decision_engine.server.budgets import run_budget_gauge
    from decision_engine.server.limits import ServerLimits
    from decision_engine.server.service import LearnedState
    from decision_engine.store.cluster import connect
    from decision_engine.store.profiles import ProfileStore

    metrics.init_metrics()
    served = served_rulesets(settings)
    rules, challenger = served.rules, served.challenger
    ruleset = rules.current
    timeout_s = settings.redis_timeout_ms / 1000
    store = ProfileStore.from_url(redis_url, socket_timeout=max(timeout_s * 4, 0.5))
    outcomes_url = settings.outcomes_redis_url or redis_url
    # A connection of its own for the log when it waits for replicas: WAIT holds up
    # whatever follows it on a connection.
    apart = outcomes_url != redis_url or settings.outcomes_wait_replicas > 0
    outcomes = connect(outcomes_url) if apart else None
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
        arms = [rules] if challenger is None else [rules, challenger]
        background.append(
            asyncio.create_task(run_budget_gauge(store.connection, arms), name="cap budgets")
        )
    for task in background:
        task.add_done_callback(log_if_crashed)
    server, _, health_servicer = await create_server(
        address=f"{_bracket(settings.host)}:{port}",
        rules=rules,
        store=store,
        store_timeout_s=timeout_s,
        reuse_port=True,
        rules_dir=str(settings.rules_dir),
        ids=decision_ids(settings),
        learned=learned,
        challenger=challenger,
        experiment=settings.experiment,
        outcomes=outcomes,
        authenticator=authenticator(settings),
        tls=server_tls(settings),
        reflection_on=settings.reflection,
        outcomes_timeout_s=settings.outcomes_timeout_ms / 1000,
        outcomes_wait_replicas=settings.outcomes_wait_replicas,
        limits=ServerLimits(
            max_in_flight=settings.max_in_flight,
            max_queued=settings.max_queued,
            min_deadline_s=settings.min_deadline_ms / 1000,
            max_connection_age_s=settings.max_connection_age_s,
            max_watches=settings.max_watches,
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
    reloader = asyncio.create_task(reload_on_signal(served, reload_wanted, f"worker {index}"))
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
    from decision_engine.store.cluster import connect
    from decision_engine.store.reconcile import Reconciler

    # Connections of its own: a replay must not queue ahead of Decide's reads.
    log_connection = connect(outcomes_url)
    apply_connection = connect(redis_url)
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


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
