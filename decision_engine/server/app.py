"""Build a gRPC server (service, health, reflection) apart from running it."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.decide.experiment import Experiment
from decision_engine.server.admission import Admission
from decision_engine.server.auth import Authenticator
from decision_engine.server.decision_ids import DecisionIds
from decision_engine.server.gate import Gate
from decision_engine.server.guidance_follow import GuidanceFollower
from decision_engine.server.guidance_service import GuidanceService
from decision_engine.server.limits import DEFAULT_LIMITS, ServerLimits
from decision_engine.server.notice_service import NoticeService
from decision_engine.server.recording import OutcomeRecorder
from decision_engine.server.service import (
    ActiveRuleset,
    AdminService,
    DecisionService,
    LearnedState,
)
from decision_engine.server.session import DecisionSession
from decision_engine.server.tls import ServerTls
from decision_engine.store.connection import Connection
from decision_engine.store.outcomes import DEFAULT_OUTCOMES_TIMEOUT_S
from decision_engine.store.profiles import ProfileStore

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DecisionService"].full_name
ADMIN_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AdminService"].full_name
GUIDANCE_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GuidanceService"].full_name
NOTICE_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["NoticeService"].full_name
_SERVING = ("", SERVICE_NAME, GUIDANCE_SERVICE_NAME, NOTICE_SERVICE_NAME)


_NEEDS_PLAIN_REDIS = (
    "live guidance and notices need a plain Redis (redis://); this deployment's is a Redis Cluster"
)


async def create_server(
    *,
    address: str,
    rules: ActiveRuleset,
    store: ProfileStore,
    store_timeout_s: float,
    reuse_port: bool,
    rules_dir: str = "",
    ids: DecisionIds,
    learned: LearnedState | None = None,
    challenger: ActiveRuleset | None = None,
    experiment: Experiment | None = None,
    outcomes: Connection | None = None,
    authenticator: Authenticator | None = None,
    tls: ServerTls | None = None,
    reflection_on: bool = True,
    outcomes_timeout_s: float = DEFAULT_OUTCOMES_TIMEOUT_S,
    outcomes_wait_replicas: int = 0,
    limits: ServerLimits = DEFAULT_LIMITS,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """A server bound to `address` (port 0 picks one), health NOT_SERVING until started.

    Every call passes admission (the worker's bounds, the caller's deadline), then the
    gate (parse, authenticate, authorize); without an authenticator every caller is
    allowed, which config.py permits on loopback only.
    """
    # Admission first: a call it sheds costs nothing more.
    admission = Admission(
        max_in_flight=limits.max_in_flight,
        min_deadline_s=limits.min_deadline_s,
        services=(SERVICE_NAME, GUIDANCE_SERVICE_NAME, NOTICE_SERVICE_NAME),
    )
    # Their scripts span slots (an interaction's keys with the moment shards; a customer's
    # notices with the outbox): on a Redis Cluster they are refused with the reason.
    closed = (
        {f"/{name}/": _NEEDS_PLAIN_REDIS for name in (GUIDANCE_SERVICE_NAME, NOTICE_SERVICE_NAME)}
        if store.cluster
        else {}
    )
    gate = Gate(authenticator or Authenticator(), reflection_open=reflection_on, closed=closed)
    server = grpc.aio.server(
        interceptors=[admission, gate],
        options=[("grpc.so_reuseport", 1 if reuse_port else 0), *limits.grpc_options()],
    )
    session = DecisionSession(
        rules,
        store,
        store_timeout_s=store_timeout_s,
        ids=ids,
        learned=learned,
        challenger=challenger,
        experiment=experiment,
    )
    recorder = OutcomeRecorder(
        session,
        store,
        ids=ids,
        outcomes=outcomes,
        timeout_s=outcomes_timeout_s,
        wait_replicas=outcomes_wait_replicas,
    )
    pb_grpc.add_DecisionServiceServicer_to_server(DecisionService(session, recorder), server)
    # Live guidance on the same Redis: events in, guidance out (the moment processes,
    # apart from this server, detect the moments).
    pb_grpc.add_GuidanceServiceServicer_to_server(
        GuidanceService(
            store.connection,
            GuidanceFollower(store.url, store.connection),
            max_watches=limits.max_watches,
        ),
        server,
    )
    # Business events onto the durable Redis (the outcome log's), which the outbox is on.
    pb_grpc.add_NoticeServiceServicer_to_server(
        NoticeService(rules, decision=store.connection, durable=outcomes or store.connection),
        server,
    )
    pb_grpc.add_AdminServiceServicer_to_server(AdminService(rules, rules_dir=rules_dir), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in _SERVING:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    if reflection_on:
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                GUIDANCE_SERVICE_NAME,
                NOTICE_SERVICE_NAME,
                ADMIN_SERVICE_NAME,
                health.SERVICE_NAME,
                reflection.SERVICE_NAME,
            ),
            server,
        )
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, tls.credentials())
    return server, port, health_servicer


async def mark_serving(health_servicer: health.aio.HealthServicer) -> None:
    """Rules are loaded and the server started: tell load balancers."""
    for name in _SERVING:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
