"""`serve`: check, prepare, then supervise a set of worker processes.

The steps live in their own modules, in the order they run:
bootstrap.py (in the supervisor, before any fork: credentials, rulesets, Redis,
the shared decision secret, the metrics directory), supervisor.py (reserve the
port, fork and keep the workers, watch the rules, serve /metrics) and worker.py
(in each forked child: the gRPC server and its background tasks). gRPC Python
cannot fork once a server or channel exists, so none is made before worker.py.
"""

from __future__ import annotations

import logging

from decision_engine.config import Settings
from decision_engine.errors import ConfigError, RulesetError
from decision_engine.server.bootstrap import (
    check_credentials,
    load_rulesets,
    moment_processes,
    prepared,
)
from decision_engine.server.notice_worker import check_senders
from decision_engine.server.supervisor import reserved_port, supervise

log = logging.getLogger("decision_engine.serve")


def serve(settings: Settings) -> int:
    """Run until SIGINT/SIGTERM; returns the process exit code."""
    try:
        check_credentials(settings)
        moment_workers = moment_processes(settings)
    except ConfigError as exc:
        log.error("%s; not starting", exc)
        return 2
    try:
        ruleset = load_rulesets(settings)
        check_senders(settings, ruleset)
    except ConfigError as exc:
        log.error("%s; not starting", exc)
        return 2
    except RulesetError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        log.error("a ruleset cannot go live; not starting")
        return 2
    with (
        prepared(settings) as (ready, redis_url),
        reserved_port(ready.host, ready.port) as port,
    ):
        return supervise(
            ready, redis_url, port, ruleset.version,
            moment_workers=moment_workers, notice_workers=settings.notice_workers,
        )  # fmt: skip
