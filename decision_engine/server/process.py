"""The process model: a supervisor and N worker processes sharing one port.

gRPC Python cannot fork once a server or channel exists, so the supervisor
reserves the port (SO_REUSEPORT), prepares the metrics directory and forks the
workers before any gRPC object is made; each worker builds its own server on
the same port and the kernel spreads connections over them. The supervisor
serves /metrics for all of them and restarts a worker that dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING

from decision_engine.config import Settings, is_loopback, setting_option
from decision_engine.errors import ConfigError, RulesetError
from decision_engine.ruleset.compiled import load_compiled
from decision_engine.ruleset.load import load_schema

if TYPE_CHECKING:
    # Imported lazily at run time: it creates metrics, which must wait for the
    # multiprocess directory to be set.
    from decision_engine.server.auth import Authenticator
    from decision_engine.server.service import ActiveRuleset
    from decision_engine.server.tls import ServerTls

log = logging.getLogger("decision_engine.serve")

_RESTART_BACKOFF_S = 1.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Rule changes are noticed within one poll, go live after the next (files settled).
_POLL_S = 0.15


def serve(settings: Settings) -> int:
    """Run until SIGINT/SIGTERM; returns the process exit code."""
    try:
        _check_credentials(settings)
    except ConfigError as exc:
        log.error("%s; not starting", exc)
        return 2
    try:
        ruleset = load_compiled(settings.rules_dir)
        if settings.challenger_rules is not None:
            challenger = load_compiled(settings.challenger_rules)
            log.info(
                "experiment: challenger ruleset %s from %s for %.0f%% of customers, "
                "control group (no offers) %.0f%%",
                challenger.version,
                settings.challenger_rules,
                settings.challenger_share * 100,
                settings.control_share * 100,
            )
    except RulesetError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        log.error("a ruleset cannot go live; not starting")
        return 2
    log.info(
        "ruleset %s (%s) from %s: %d offers, %d routing rules, %d policies",
        ruleset.version,
        ruleset.source.label or "no label",
        settings.rules_dir,
        len(ruleset.offers),
        len(ruleset.routes),
        len(ruleset.policies),
    )
    with contextlib.ExitStack() as stack:
        if settings.redis_url:
            redis_url = settings.redis_url
            outcomes_url = settings.outcomes_redis_url or redis_url
        else:
            redis_url, outcomes_url = stack.enter_context(_embedded_redis(settings))
        settings = dataclasses.replace(
            settings, redis_url=redis_url, outcomes_redis_url=outcomes_url
        )
        _warn_if_not_durable(outcomes_url)
        if not settings.decision_secret:
            settings = dataclasses.replace(settings, decision_secret=_shared_secret(redis_url))
        metrics_dir = tempfile.mkdtemp(prefix="decision-engine-metrics-")
        stack.callback(shutil.rmtree, metrics_dir, True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        with _reserved_port(settings.host, settings.port) as port:
            return _supervise(settings, redis_url, port, ruleset.version)
    return 0


def _check_credentials(settings: Settings) -> None:
    """Fail at start, not at the first call, on credentials that cannot work; say what
    is open."""
    import ssl

    authenticator(settings)  # parses the token file and the JWT keys
    if settings.tls_cert is not None and settings.tls_key is not None:
        try:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(settings.tls_cert, settings.tls_key)
            if settings.tls_client_ca is not None:
                context.load_verify_locations(settings.tls_client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS certificate, key or client CA unusable: {exc}") from None
    where = f"{settings.host}:{settings.port}"
    if not settings.auth_enabled:
        log.warning(
            "no authentication (no --auth-tokens or --jwt-key): every process that reaches "
            "%s may call every method, explanations included",
            where,
        )
    if not settings.tls_enabled:
        log.warning("plaintext gRPC (no --tls-cert/--tls-key) on %s", where)
    if settings.insecure and not is_loopback(settings.host):
        log.warning("--insecure: serving %s beyond loopback as configured above", where)


@contextlib.contextmanager
def _embedded_redis(settings: Settings) -> Iterator[tuple[str, str]]:
    """Embedded Redis servers: the decision path's (fsync every second) and, unless
    one is given, the outcome log's (fsync before every reply)."""
    with contextlib.ExitStack() as stack:
        profiles = stack.enter_context(_embedded_profiles(settings))
        if settings.outcomes_redis_url:
            yield profiles, settings.outcomes_redis_url
            return
        from decision_engine.store.embedded import EmbeddedRedis

        data_dir = settings.data_dir / "redis-outcomes"
        outcomes = stack.enter_context(EmbeddedRedis(data_dir=data_dir, fsync="always"))
        log.info("outcome log: embedded Redis at %s (data in %s)", outcomes.address, data_dir)
        yield profiles, outcomes.url


@contextlib.contextmanager
def _embedded_profiles(settings: Settings) -> Iterator[str]:
    from decision_engine.store.demo import ensure_demo_data
    from decision_engine.store.embedded import EmbeddedRedis
    from decision_engine.store.profiles import ProfileStore

    data_dir = settings.data_dir / "redis"
    with EmbeddedRedis(data_dir=data_dir, fsync="everysec") as redis:
        log.info(
            "no --redis-url given: started an embedded Redis at %s (data in %s, password in %s)",
            redis.address,
            data_dir,
            redis.password_file,
        )

        async def load_demo() -> bool:
            store = ProfileStore.from_url(redis.url)
            try:
                now = time.time()
                return await ensure_demo_data(
                    store,
                    schema=load_schema(settings.rules_dir),
                    today=datetime.fromtimestamp(now, UTC).date(),
                    now=now,
                    generated=settings.demo_profiles,
                )
            finally:
                await store.aclose()

        if asyncio.run(load_demo()):
            log.info(
                "first start: loaded demo customers C-1001..C-1007 and %d synthetic ones "
                "(C-000001...)",
                settings.demo_profiles,
            )
        else:
            log.info("demo data already present in %s; named demo customers refreshed", data_dir)
        yield redis.url


def _shared_secret(url: str) -> str:
    """The key decision ids are signed with, shared by every replica through Redis."""
    import redis

    from decision_engine.server.decision_ids import SECRET_KEY, new_secret

    try:
        with redis.Redis.from_url(url, socket_timeout=2, decode_responses=True) as client:
            client.set(SECRET_KEY, new_secret(), nx=True)
            secret = client.get(SECRET_KEY)
    except redis.RedisError as exc:
        secret = None
        log.warning("could not read the shared decision secret from Redis (%s)", exc)
    if not secret:
        log.warning(
            "signing decision ids with a key of this process only: outcomes for them will "
            "be refused by other replicas and after a restart (set %s)",
            setting_option("decision_secret").env,
        )
        return new_secret()
    return str(secret)


def _warn_if_not_durable(url: str) -> None:
    """Outcomes are acknowledged once Redis has them: say so when a crash could lose them."""
    import redis

    try:
        with redis.Redis.from_url(url, socket_timeout=2) as client:
            config = client.config_get("append*")
    except redis.RedisError as exc:
        log.warning("could not read the Redis persistence settings (%s)", exc)
        return
    if config.get("appendonly") != "yes" or config.get("appendfsync") != "always":
        log.warning(
            "Redis at %s runs with appendonly=%s appendfsync=%s: acknowledged outcomes may be "
            "lost if it crashes; use appendonly yes and appendfsync always",
            url.split("@")[-1],
            config.get("appendonly"),
            config.get("appendfsync"),
        )


@contextlib.contextmanager
def _reserved_port(host: str, port: int) -> Iterator[int]:
    """Hold the port with SO_REUSEPORT so the workers can share it (and port 0 gets one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        yield sock.getsockname()[1]
    finally:
        sock.close()


def _supervise(settings: Settings, redis_url: str, port: int, version: str) -> int:
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    from decision_engine.server.reload import RulesWatcher

    ctx = multiprocessing.get_context("fork")
    stopping = False

    def spawn(index: int) -> BaseProcess:
        process = ctx.Process(
            target=_worker_main,
            args=(settings, redis_url, port, index, os.getpid()),
            name=f"decision-engine-worker-{index}",
            daemon=True,
        )
        process.start()
        return process

    workers = [spawn(i) for i in range(settings.workers)]
    if settings.metrics_port:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)
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
        if [w for w in watchers if w.poll() is not None]:
            for process in workers:
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
    for process in workers:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    for process in workers:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
    return 0


def _worker_main(
    settings: Settings, redis_url: str, port: int, index: int, supervisor: int
) -> None:
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
                _reconcile(settings, redis_url, outcomes_url, rules), name="outcome reconciler"
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
    settings: Settings, redis_url: str, outcomes_url: str, rules: ActiveRuleset
) -> None:
    """Apply what reached the outcome log but not the decision Redis (store/reconcile.py)."""
    from decision_engine.server import metrics
    from decision_engine.server.reconcile import run_reconciler
    from decision_engine.store.connection import PipelinedConnection
    from decision_engine.store.reconcile import Reconciler

    # Connections of its own: a replay must not queue ahead of Decide's reads.
    log_connection = PipelinedConnection(outcomes_url)
    apply_connection = PipelinedConnection(redis_url)
    reconciler = Reconciler(
        log_connection,
        apply_connection,
        learning=lambda: rules.current.source.learning,
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
    from decision_engine.server import metrics

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


def authenticator(settings: Settings) -> Authenticator:
    """The credentials `serve` accepts (none configured: every caller, on loopback)."""
    from decision_engine.server.auth import Authenticator, JwtVerifier, TokenFile

    tokens = TokenFile(settings.auth_tokens) if settings.auth_tokens else None
    jwts = None
    if settings.jwt_key is not None:
        jwts = JwtVerifier(
            settings.jwt_key,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer or None,
            role_claim=settings.jwt_role_claim,
        )
    return Authenticator(tokens=tokens, jwts=jwts)


def server_tls(settings: Settings) -> ServerTls | None:
    from decision_engine.server.tls import ServerTls

    if settings.tls_cert is None or settings.tls_key is None:
        return None
    return ServerTls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
