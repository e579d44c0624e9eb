"""The supervisor: N forked workers sharing one port, and the moment and notice
processes, kept running.

gRPC Python cannot fork once a server or channel exists, so the supervisor never
makes one: it holds the port with SO_REUSEPORT (which also resolves port 0), forks
the workers (worker.py), each of which builds its own server on that port, and the
kernel spreads connections over them; and it forks `--moment-workers` moment processes
(moment_worker.py), which detect the moments of live interactions apart from any gRPC
worker, and `--notice-workers` notice processes (notice_worker.py), which turn business
events into notices and deliver them. It then restarts any of them that dies (a
restarted moment process replays its live interactions), tells them all (SIGHUP) when
the rules on disk change and check, serves /metrics for all of them from the
multiprocess directory, and stops them on SIGINT/SIGTERM.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess

from decision_engine._core import MODE as CORE_MODE
from decision_engine.config import Settings
from decision_engine.ruleset.compiled import load_compiled
from decision_engine.server import metrics
from decision_engine.server.moment_worker import moment_worker_main
from decision_engine.server.notice_worker import notice_worker_main
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


@dataclass
class _Pool:
    """Processes of one kind, kept at their number: restarted when one dies."""

    kind: str
    target: Callable[..., None]
    args: Callable[[int], tuple[object, ...]]
    count: int
    metric_kind: str
    restart_note: str = ""
    on_restart: Callable[[], None] | None = None
    processes: list[BaseProcess] = field(default_factory=list)

    def spawn(self, index: int) -> BaseProcess:
        ctx = multiprocessing.get_context("fork")
        process = ctx.Process(
            target=self.target,
            args=self.args(index),
            name=f"decision-engine-{self.kind.split()[0]}-{index}",
            daemon=True,
        )
        process.start()
        return process

    def start(self) -> None:
        metrics.PROCESS_RESTARTS.labels(self.metric_kind)  # at 0 from the start
        self.processes = [self.spawn(i) for i in range(self.count)]

    def keep(self) -> None:
        """Restart every process that died."""
        from prometheus_client import multiprocess

        for i, process in enumerate(self.processes):
            if process.is_alive():
                continue
            log.error("%s %d (pid %s) exited with %s; restarting%s",
                      self.kind, i, process.pid, process.exitcode, self.restart_note)  # fmt: skip
            metrics.PROCESS_RESTARTS.labels(self.metric_kind).inc()
            if self.on_restart is not None:
                self.on_restart()
            multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]
            time.sleep(_RESTART_BACKOFF_S)
            self.processes[i] = self.spawn(i)


def supervise(
    settings: Settings,
    redis_url: str,
    port: int,
    version: str,
    *,
    moment_workers: int = 0,
    notice_workers: int = 0,
) -> int:
    """Fork the workers (and `moment_workers` moment processes, `notice_workers` notice
    processes) and keep them running until SIGINT/SIGTERM; the exit code."""
    stopping = False
    supervisor = os.getpid()
    pools = [
        _Pool("worker", worker_main, lambda i: (settings, redis_url, port, i, supervisor),
              settings.workers, "worker"),
        _Pool("moment process", moment_worker_main,
              lambda i: (settings, redis_url, i, supervisor), moment_workers, "moment",
              " (it replays its live interactions)", metrics.MOMENT_RESTARTS.inc),
        _Pool("notice process", notice_worker_main,
              lambda i: (settings, redis_url, port, i, supervisor), notice_workers, "notice",
              " (its pending events and notices are claimed again)"),
    ]  # fmt: skip
    for pool in pools:
        pool.start()
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
        settings.workers,
    )
    log.info("decision core: %s", CORE_MODE)
    if moment_workers:
        log.info("live guidance: %d moment process(es)", moment_workers)
    if notice_workers:
        log.info("proactive notices: %d notice process(es)", notice_workers)

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
            for process in (p for pool in pools for p in pool.processes):
                if process.is_alive() and process.pid is not None:
                    os.kill(process.pid, signal.SIGHUP)
        for pool in pools:
            if not stopping:
                pool.keep()
    _stop([p for pool in pools for p in pool.processes])
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
