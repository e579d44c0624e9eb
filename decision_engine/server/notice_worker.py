"""A notice process: business events → notices → delivery, forked by the supervisor.

Apart from the gRPC workers, so a slow webhook or an audience of a million never holds
up a Decide. Process `index` of `--notice-workers` runs three loops on one event loop:
the notice processor (consumer `notices-<index>` of the events stream), a delivery
worker (consumer `delivery-<index>` of the outbox) with the senders of
`--notice-senders`, and the key-date sweep, which every process tries each hour and one
runs per day (a lock in Redis). It reloads the rules on SIGHUP, stops on SIGTERM, and
dies with the supervisor, which restarts it; what it held is claimed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Mapping

from decision_engine.config import Settings, sender_uris
from decision_engine.delivery.senders import Sender, sender_for
from decision_engine.errors import ConfigError
from decision_engine.ruleset.compiled import CompiledRuleset
from decision_engine.server import metrics
from decision_engine.server.rulesets import ActiveRuleset
from decision_engine.server.serving import (
    die_with,
    log_if_crashed,
    reload_on_signal,
    served_rulesets,
)
from decision_engine.store.connection import Connection, PipelinedConnection

log = logging.getLogger("decision_engine.serve")

SWEEP_EVERY_S = 3600.0


def build_senders(settings: Settings, ruleset: CompiledRuleset) -> dict[str, Sender]:
    """The sender of every channel the ruleset declares; ConfigError for a bad URI or a
    channel with none (and no `*`)."""
    uris = sender_uris(settings.notice_senders)
    rules = ruleset.source.notices
    channels = sorted(rules.channels) if rules is not None else []
    senders: dict[str, Sender] = {}
    made: dict[str, Sender] = {}  # one sender per URI, shared by its channels
    for channel in sorted({*channels, *(c for c in uris if c != "*")}):
        uri = uris.get(channel) or uris.get("*")
        if uri is None:
            raise ConfigError(
                f"notice_senders: no sender for channel {channel!r} (add {channel}=URI or *=URI)"
            )
        if uri not in made:
            made[uri] = sender_for(
                uri, webhook_secret=settings.webhook_secret or None, base_dir=settings.data_dir
            )
        senders[channel] = made[uri]
    return senders


def check_senders(settings: Settings, ruleset: CompiledRuleset) -> None:
    """ConfigError now (before any fork) rather than in every notice process."""
    if settings.notice_workers:
        build_senders(settings, ruleset)


def notice_worker_main(
    settings: Settings, redis_url: str, port: int, index: int, supervisor: int
) -> None:
    """The forked process's entry point: work until SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when to stop
    die_with(supervisor, name=f"notices-{index}")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(settings, redis_url, consumer_suffix(port, index)))


def consumer_suffix(port: int, index: int) -> str:
    """Names this process's consumers: the same after a restart (it takes back what it
    left pending), different for every replica and process (none takes another's)."""
    return f"{socket.gethostname()}:{port}:{index}"


async def _run(settings: Settings, redis_url: str, suffix: str) -> None:
    from decision_engine.server.delivery_loop import DeliveryWorker
    from decision_engine.server.notice_loop import NoticeProcessor

    metrics.init_metrics()
    served = served_rulesets(settings)
    senders = build_senders(settings, served.rules.current)
    durable_url = settings.outcomes_redis_url or redis_url
    decision, durable = PipelinedConnection(redis_url), PipelinedConnection(durable_url)
    events_reader = PipelinedConnection(durable_url)
    outbox_reader = PipelinedConnection(durable_url)
    events_reader, outbox_reader = (
        PipelinedConnection(durable_url),
        PipelinedConnection(durable_url),
    )
    processor = NoticeProcessor(
        served.rules, decision=decision, durable=durable, reader=events_reader,
        consumer=f"notices-{suffix}",
    )  # fmt: skip
    delivery = DeliveryWorker(
        senders, durable=durable, reader=outbox_reader, decision=decision,
        consumer=f"delivery-{suffix}",
    )  # fmt: skip
    log.info(
        "notice process %s (pid %d): senders %s",
        suffix,
        os.getpid(),
        ", ".join(f"{c}={s.name}" for c, s in sorted(senders.items())),
    )
    stopped = asyncio.Event()
    reload_wanted = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    loop.add_signal_handler(signal.SIGHUP, reload_wanted.set)
    tasks = [
        asyncio.create_task(reload_on_signal(served, reload_wanted, f"notice process {suffix}")),
        asyncio.create_task(
            _sweep_daily(served.rules, decision, durable, stopped), name="key-date sweep"
        ),
        asyncio.create_task(delivery.run(stopped), name="notice delivery"),
    ]
    for task in tasks:
        task.add_done_callback(log_if_crashed)
    try:
        await processor.run(stopped)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await _close(senders)
        for conn in (decision, durable, events_reader, outbox_reader):
            await conn.aclose()


async def _sweep_daily(
    rules: ActiveRuleset,
    decision: Connection,
    durable: Connection,
    stopped: asyncio.Event,
) -> None:
    """Try the key-date sweep now and every hour; the lock lets one process run it a day."""
    from decision_engine.store.key_dates import run_sweep

    owner = f"{socket.gethostname()}:{os.getpid()}"
    while not stopped.is_set():
        try:
            report = await run_sweep(decision, durable, rules.current, owner=owner, now=time.time())
            if report is not None:
                log.info(
                    "key-date sweep of %s: %d profiles, %d events raised, %d already raised",
                    report.day, report.profiles, report.raised, report.duplicates,
                )  # fmt: skip
        except Exception:
            log.exception("key-date sweep failed; trying again within the hour")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopped.wait(), SWEEP_EVERY_S)


async def _close(senders: Mapping[str, Sender]) -> None:
    for sender in {id(s): s for s in senders.values()}.values():
        await sender.aclose()
