"""The supervisor: N forked workers sharing one port, and the moment processes, kept
running.

gRPC Python cannot fork once a server or channel exists, so the supervisor never
makes one: it holds the port with SO_REUSEPORT (which also resolves port 0), forks
the workers (worker.py), each of which builds its own server on that port, and the
kernel spreads connections over them; and it forks `--moment-workers` moment processes
(moment_worker.py), which detect the moments of live interactions apart from any gRPC
worker. It then restarts a worker or a moment process that dies (a restarted moment
process replays its live interactions), tells them all (SIGHUP) when the rules on disk
change and check, serves /metrics for all of them from the multiprocess directory, and
stops them on SIGINT/SIGTERM.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Iterator
from multiprocessing.process import BaseProcess

from decision_engine.config import Settings
from decision_engine.ruleset.compiled import load_compiled
from decision_engine.server import metrics
from decision_engine.server.moment_worker import moment_worker_main
from decision_engine.server.reload import RulesWatcher
from decision_engine.server.worker import worker_main

log = logging.getLogger("decision_engine.serve")

_RESTART_BACKOFF_S = 1.0
# Rule changes are noticed within one poll, go live after the next (files settled).
_POLL_S = 0.15


@contextlib.contextmanager
def reserved_port(host: str, port: int) -> Iterator[int]:
    """Hold the port with SO_REUSEPORT so the workers can share it (and port 0 gets one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        yield sock.getsockname()[1]
    finally:
        sock.close()


def supervise(
    settings: Settings, redis_url: str, port: int, version: str, *, moment_workers: int = 0
) -> int:
    """Fork the workers (and `moment_workers` moment processes) and keep them running
    until SIGINT/SIGTERM; the exit code."""
    from prometheus_client import multiprocess

    ctx = multiprocessing.get_context("fork")
    stopping = False

    def spawn(index: int) -> BaseProcess:
        process = ctx.Process(
            target=worker_main,
            args=(settings, redis_url, port, index, os.getpid()),
            name=f"decision-engine-worker-{index}",
            daemon=True,
        )
        process.start()
        return process

    def spawn_moments(index: int) -> BaseProcess:
        process = ctx.Process(
            target=moment_worker_main,
            args=(settings, redis_url, index, os.getpid()),
            name=f"decision-engine-moments-{index}",
            daemon=True,
        )
        process.start()
        return process

    workers = [spawn(i) for i in range(settings.workers)]
    moments = [spawn_moments(i) for i in range(moment_workers)]
    if settings.metrics_port:
        _serve_metrics(settings.metrics_host, settings.metrics_port)
    log.info(
        "gRPC DecisionService on %s:%d (%s) with %d workers",
        settings.host,
        port,
        "TLS"
        if settings.tls_client_ca is None and settings.tls_enabled
        else "mTLS"
        if settings.tls_enabled
        else "plaintext",
        len(workers),
    )
    if moments:
        log.info("live guidance: %d moment process(es)", len(moments))

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        log.info("received %s; stopping workers", signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    watchers = [RulesWatcher(settings.rules_dir, version)]
    if settings.challenger_rules is not None:
        challenger = load_compiled(settings.challenger_rules)
        watchers.append(RulesWatcher(settings.challenger_rules, challenger.version))
    while not stopping:
        time.sleep(_POLL_S)
        # Every watcher polls each time (no short-circuit), so none misses a change.
        if changed := [w for w in watchers if w.poll() is not None]:
            # Once per change that goes live, here: every worker swapping would count it
            # once per worker.
            metrics.RELOADS.inc(len(changed))
            for process in [*workers, *moments]:
                if process.is_alive() and process.pid is not None:
                    os.kill(process.pid, signal.SIGHUP)
        for i, process in enumerate(workers):
            if process.is_alive() or stopping:
                continue
            log.error(
                "worker %d (pid %s) exited with %s; restarting", i, process.pid, process.exitcode
            )
            multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]
            time.sleep(_RESTART_BACKOFF_S)
            workers[i] = spawn(i)
        for i, process in enumerate(moments):
            if process.is_alive() or stopping:
                continue
            log.error(
                "moment process %d (pid %s) exited with %s; restarting (it replays its live "
                "interactions)",
                i,
                process.pid,
                process.exitcode,
            )
            metrics.MOMENT_RESTARTS.inc()
            multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]
            time.sleep(_RESTART_BACKOFF_S)
            moments[i] = spawn_moments(i)
    _stop([*workers, *moments])
    return 0


def _serve_metrics(host: str, port: int) -> None:
    """/metrics over HTTP, summed over every worker's files in the multiprocess directory."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%d/metrics", host, port)


def _stop(workers: list[BaseProcess]) -> None:
    """SIGTERM every worker, give them five seconds each to drain, then kill."""
    for process in workers:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    for process in workers:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
