"""A moment process: live guidance for the shards it owns, forked by the supervisor.

Never inside a gRPC worker: the moment detector (durable_rules, in C) can crash the
process it runs in, and must be alone on its thread. The supervisor forks
`--moment-workers` of these; process `index` owns the shards `s` with
`s % moment_workers == index`, reads their work as consumer `moments-<index>`, and
decides (for moments that ask) with its own DecisionSession on the same Redis, rules,
learning and experiment as the gRPC workers. It reloads the rules on SIGHUP, stops on
SIGTERM, and dies with the supervisor, which restarts it if it dies; on every start it
replays its shards' live interactions (moment_loop.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from decision_engine.config import Settings
from decision_engine.server import metrics
from decision_engine.server.serving import (
    decision_ids,
    die_with,
    log_if_crashed,
    reload_on_signal,
    served_rulesets,
)

log = logging.getLogger("decision_engine.serve")


def owned_shards(index: int, processes: int, shards: int) -> list[int]:
    """The shards moment process `index` of `processes` owns."""
    return [shard for shard in range(shards) if shard % processes == index]


def moment_worker_main(settings: Settings, redis_url: str, index: int, supervisor: int) -> None:
    """The forked process's entry point: work until SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when to stop
    die_with(supervisor, name=f"moments-{index}")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(settings, redis_url, index))


async def _run(settings: Settings, redis_url: str, index: int) -> None:
    from decision_engine.server.detector import load_factory
    from decision_engine.server.learning import LearnedState
    from decision_engine.server.moment_loop import MomentLoop
    from decision_engine.server.session import DecisionSession
    from decision_engine.store.connection import PipelinedConnection
    from decision_engine.store.interactions import MOMENT_SHARDS
    from decision_engine.store.profiles import ProfileStore
    from decision_engine.store.work_queue import consumer_name

    metrics.init_metrics()
    factory = load_factory(settings.moment_detector)
    served = served_rulesets(settings)
    timeout_s = settings.redis_timeout_ms / 1000
    store = ProfileStore.from_url(redis_url, socket_timeout=max(timeout_s * 4, 0.5))
    learned = LearnedState(served.rules, store)
    learning = asyncio.create_task(learned.run(), name="learning refresh")
    learning.add_done_callback(log_if_crashed)
    session = DecisionSession(
        served.rules,
        store,
        store_timeout_s=timeout_s,
        ids=decision_ids(settings),
        learned=learned,
        challenger=served.challenger,
        experiment=settings.experiment,
    )
    shards = owned_shards(index, settings.moment_workers, MOMENT_SHARDS)
    connection, reader = PipelinedConnection(redis_url), PipelinedConnection(redis_url)
    moments = MomentLoop(
        connection=connection,
        reader=reader,
        shards=shards,
        consumer=consumer_name(index),
        factory=factory,
        rules=served.rules,
        session=session,
        store=store,
    )
    log.info(
        "moment process %d (pid %d) owns shards %s", index, os.getpid(), ",".join(map(str, shards))
    )
    stopped = asyncio.Event()
    reload_wanted = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    loop.add_signal_handler(signal.SIGHUP, reload_wanted.set)
    reloader = asyncio.create_task(
        reload_on_signal(served, reload_wanted, f"moment process {index}")
    )
    try:
        await moments.run(stopped)
    finally:
        reloader.cancel()
        learning.cancel()
        await asyncio.gather(reloader, learning, return_exceptions=True)
        moments.close()
        for conn in (connection, reader):
            await conn.aclose()
        await store.aclose()
