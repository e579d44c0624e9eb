"""Before any worker exists: what `serve` checks and prepares, in the supervisor.

Everything here runs before the workers are forked, so it must not create a gRPC
server or channel (gRPC Python cannot fork once one exists): Redis is reached with
redis-py, and credentials are parsed, not served. What it prepares is handed to
every worker: Redis URLs (an embedded Redis when none is given, with demo data),
the shared key decision ids are signed with, and the metrics directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from decision_engine.config import Settings, is_loopback, setting_option
from decision_engine.errors import ConfigError
from decision_engine.ruleset.compiled import CompiledRuleset
from decision_engine.ruleset.load import load_profile_rules
from decision_engine.server.reload import load_for_serving

if TYPE_CHECKING:
    from decision_engine.server.auth import Authenticator
    from decision_engine.server.tls import ServerTls

log = logging.getLogger("decision_engine.serve")


def check_credentials(settings: Settings) -> None:
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


def moment_processes(settings: Settings) -> int:
    """How many moment processes to start: `--moment-workers`, once the detector they
    need imports. Without the moment engine installed, none (events are still stored and
    queued, and are replayed once moment processes run); a detector named with
    `--moment-detector` that does not import is a ConfigError."""
    from decision_engine.server.detector import DEFAULT_DETECTOR, load_factory

    if settings.moment_workers == 0:
        log.info("live guidance: no moment process here (--moment-workers 0)")
        return 0
    try:
        load_factory(settings.moment_detector)
    except ConfigError as exc:
        if settings.moment_detector != DEFAULT_DETECTOR:
            raise
        log.warning(
            "live guidance: %s; no moment process started (events are stored and queued)", exc
        )
        return 0
    return settings.moment_workers


def load_rulesets(settings: Settings) -> CompiledRuleset:
    """The champion ruleset (and the challenger, checked); RulesetError if one does not
    check."""
    ruleset = load_for_serving(settings.rules_dir)
    if settings.challenger_rules is not None:
        challenger = load_for_serving(settings.challenger_rules)
        log.info(
            "experiment: challenger ruleset %s from %s for %.0f%% of customers, "
            "control group (no offers) %.0f%%",
            challenger.version,
            settings.challenger_rules,
            settings.challenger_share * 100,
            settings.control_share * 100,
        )
    log.info(
        "ruleset %s (%s) from %s: %d offers, %d routing rules, %d policies",
        ruleset.version,
        ruleset.source.label or "no label",
        settings.rules_dir,
        len(ruleset.offers),
        len(ruleset.routes),
        len(ruleset.policies),
    )
    return ruleset


@contextlib.contextmanager
def prepared(settings: Settings) -> Iterator[tuple[Settings, str]]:
    """The settings the workers run with and the decision Redis URL, for as long as the
    embedded Redis and the metrics directory last."""
    with contextlib.ExitStack() as stack:
        if settings.redis_url:
            redis_url = settings.redis_url
            outcomes_url = settings.outcomes_redis_url or redis_url
            _check_cluster_urls(redis_url, outcomes_url)
        else:
            redis_url, outcomes_url = stack.enter_context(_embedded_redis(settings))
        settings = dataclasses.replace(
            settings, redis_url=redis_url, outcomes_redis_url=outcomes_url
        )
        _warn_if_not_durable(outcomes_url)
        if not settings.decision_secret:
            settings = dataclasses.replace(settings, decision_secret=_shared_secret(redis_url))
        stack.enter_context(_metrics_dir())
        yield settings, redis_url


def _check_cluster_urls(*urls: str) -> None:
    from decision_engine.store.cluster import is_cluster_url, startup_nodes

    for url in urls:
        if is_cluster_url(url):
            try:
                startup_nodes(url)
            except ValueError as exc:
                raise ConfigError(f"--redis-url: {exc}") from None


@contextlib.contextmanager
def _metrics_dir() -> Iterator[str]:
    """The directory every worker writes its metrics to, for the supervisor to serve."""
    metrics_dir = tempfile.mkdtemp(prefix="decision-engine-metrics-")
    try:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        yield metrics_dir
    finally:
        shutil.rmtree(metrics_dir, True)


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
    from decision_engine.store.demo import ensure_demo_data, named_customers_fit
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
                schema, audiences = load_profile_rules(settings.rules_dir)
                return await ensure_demo_data(
                    store,
                    schema=schema,
                    audiences=audiences,
                    today=datetime.fromtimestamp(now, UTC).date(),
                    now=now,
                    generated=settings.demo_profiles,
                )
            finally:
                await store.aclose()

        first = asyncio.run(load_demo())
        named = named_customers_fit(
            load_profile_rules(settings.rules_dir)[0], datetime.now(UTC).date()
        )
        if first:
            log.info(
                "first start: loaded %s%d synthetic customers (C-000001...) for the schema of %s",
                "demo customers C-1001..C-1007 and " if named else "",
                settings.demo_profiles,
                settings.rules_dir,
            )
        elif named:
            log.info("demo data already present in %s; named demo customers refreshed", data_dir)
        else:
            log.info("demo data already present in %s", data_dir)
        if not named:
            log.info(
                "the named demo customers (C-1001...) do not fit the schema of %s; not loaded",
                settings.rules_dir,
            )
        yield redis.url


def _shared_secret(url: str) -> str:
    """The key decision ids are signed with, shared by every replica through Redis."""
    import redis

    from decision_engine.server.decision_ids import SECRET_KEY, new_secret
    from decision_engine.store.cluster import sync_redis

    try:
        with sync_redis(url, socket_timeout=2, decode_responses=True) as client:
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

    from decision_engine.store.cluster import persistence

    try:
        servers = persistence(url, socket_timeout=2)
    except redis.RedisError as exc:
        log.warning("could not read the Redis persistence settings (%s)", exc)
        return
    for address, config in servers.items():
        if config.get("appendonly") != "yes" or config.get("appendfsync") != "always":
            log.warning(
                "Redis at %s runs with appendonly=%s appendfsync=%s: acknowledged outcomes may "
                "be lost if it crashes; use appendonly yes and appendfsync always",
                address,
                config.get("appendonly"),
                config.get("appendfsync"),
            )


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
    """The certificate a worker serves with, or None for plaintext."""
    from decision_engine.server.tls import ServerTls

    if settings.tls_cert is None or settings.tls_key is None:
        return None
    return ServerTls(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
