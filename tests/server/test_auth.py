"""Authentication, roles and TLS on a real server: fail closed, with a clear status."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.channels import ClientTls
from decision_engine.store.embedded import EmbeddedRedis
from tests.server.conftest import RULES, Server, load_demo, start_server
from tests.server.credentials import (
    JwtIssuer,
    bearer,
    make_jwt_issuer,
    make_pki,
    token_line,
)

DESKTOP, ANALYST, ADMIN = "desk-token-1", "analyst-token-1", "admin-token-1"
DECIDE = pb.DecideRequest(
    customer_id="C-1001", context=pb.InteractionContext(channel=pb.CHANNEL_VOICE, intent="cancel")
)


def fresh_demo(url: str) -> None:
    """The demo customers alone: what an earlier test left (a notice sent to C-1001
    routes her to card security) must not change these answers."""
    with redis.Redis.from_url(url) as client:
        client.flushall()
    load_demo(url)


@pytest.fixture(scope="module")
def secured(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path, JwtIssuer]]:
    """A server that takes tokens from a file and JWTs, on plaintext loopback."""
    tmp = tmp_path_factory.mktemp("auth")
    fresh_demo(redis_server.url)
    tokens = tmp / "tokens"
    tokens.write_text(
        "# test tokens\n"
        + token_line(DESKTOP, "desktop")
        + token_line(ANALYST, "analyst")
        + token_line(ADMIN, "admin")
    )
    issuer = make_jwt_issuer(tmp)
    server = start_server(
        tmp,
        "--rules", str(RULES), "--redis-url", redis_server.url, "--auth-tokens", str(tokens),
        "--jwt-key", str(issuer.public_key), "--jwt-audience", "decision-engine",
        workers=1,
    )  # fmt: skip
    yield server, tokens, issuer
    assert server.stop() == 0, server.log()


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def test_no_credential_is_refused_on_every_method(secured: tuple[Server, Path, JwtIssuer]) -> None:
    server, _, _ = secured
    with server.channel() as channel:
        stub = pb_grpc.DecisionServiceStub(channel)
        admin = pb_grpc.AdminServiceStub(channel)
        for call in (
            lambda: stub.Decide(DECIDE, timeout=5),
            lambda: stub.Ping(pb.PingRequest(), timeout=5),
            lambda: stub.RecordOutcome(pb.RecordOutcomeRequest(decision_id="x"), timeout=5),
            lambda: admin.GetRuleset(pb.GetRulesetRequest(), timeout=5),
        ):
            code, message = _code(call)
            assert code == grpc.StatusCode.UNAUTHENTICATED
            assert "authorization: Bearer" in message
        for bad in ("Bearer nope", "Basic abc", "Bearer ", "bearer a.b.c"):
            metadata = (("authorization", bad),)
            code, _ = _code(lambda m=metadata: stub.Decide(DECIDE, timeout=5, metadata=m))  # type: ignore[misc]
            assert code == grpc.StatusCode.UNAUTHENTICATED, bad


def test_roles(secured: tuple[Server, Path, JwtIssuer]) -> None:
    server, _, _ = secured
    explain = pb.DecideRequest()
    explain.CopyFrom(DECIDE)
    explain.explain = True
    with server.channel() as channel:
        stub = pb_grpc.DecisionServiceStub(channel)
        admin = pb_grpc.AdminServiceStub(channel)
        reply = stub.Decide(DECIDE, timeout=5, metadata=bearer(DESKTOP))
        assert reply.profile_found and not reply.explanations
        code, message = _code(lambda: stub.Decide(explain, timeout=5, metadata=bearer(DESKTOP)))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "explanations" in message and "desktop" in message
        code, _ = _code(lambda: admin.GetRuleset(pb.GetRulesetRequest(), timeout=5,
                                                 metadata=bearer(DESKTOP)))  # fmt: skip
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert stub.Decide(explain, timeout=5, metadata=bearer(ANALYST)).explanations
        code, _ = _code(lambda: admin.GetRuleset(pb.GetRulesetRequest(), timeout=5,
                                                 metadata=bearer(ANALYST)))  # fmt: skip
        assert code == grpc.StatusCode.PERMISSION_DENIED
        status = admin.GetRuleset(pb.GetRulesetRequest(), timeout=5, metadata=bearer(ADMIN))
        assert status.version
        # Health stays open for probes.
        health = health_pb2_grpc.HealthStub(channel)
        reply_h = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply_h.status == health_pb2.HealthCheckResponse.SERVING


def test_jwt(secured: tuple[Server, Path, JwtIssuer], tmp_path: Path) -> None:
    server, _, issuer = secured
    stranger = make_jwt_issuer(tmp_path)
    with server.channel() as channel:
        stub = pb_grpc.DecisionServiceStub(channel)

        def code_of(token: str) -> tuple[grpc.StatusCode, str]:
            return _code(lambda: stub.Decide(DECIDE, timeout=5, metadata=bearer(token)))

        assert code_of(issuer.token())[0] == grpc.StatusCode.OK
        code, message = code_of(issuer.token(expires_in=-60))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "expired" in message
        code, message = code_of(issuer.token(audience="someone-else"))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "audience" in message
        assert code_of(stranger.token())[0] == grpc.StatusCode.UNAUTHENTICATED
        code, message = code_of(issuer.token(role=None))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "role" in message
        assert code_of(issuer.token(role="root"))[0] == grpc.StatusCode.PERMISSION_DENIED


def _wait_for(code: grpc.StatusCode, call: Callable[[], object], deadline_s: float = 15) -> None:
    deadline = time.monotonic() + deadline_s
    while (got := _code(call)[0]) != code:
        assert time.monotonic() < deadline, f"still {got}, wanted {code}"
        time.sleep(0.2)


def test_tokens_rotate_without_restart(secured: tuple[Server, Path, JwtIssuer]) -> None:
    server, tokens, _ = secured
    before = tokens.read_text()
    with server.channel() as channel:
        stub = pb_grpc.DecisionServiceStub(channel)

        def call_with(token: str) -> Callable[[], object]:
            return lambda: stub.Ping(pb.PingRequest(), timeout=5, metadata=bearer(token))

        assert _code(call_with("desk-token-2"))[0] == grpc.StatusCode.UNAUTHENTICATED
        try:
            tokens.write_text(before + token_line("desk-token-2", "desktop", "rotated"))
            _wait_for(grpc.StatusCode.OK, call_with("desk-token-2"))
            # A broken file keeps the last good credentials.
            tokens.write_text(before + "garbage line\n")
            time.sleep(1.5)
            assert _code(call_with("desk-token-2"))[0] == grpc.StatusCode.OK
            tokens.write_text(before.replace(token_line(DESKTOP, "desktop"), ""))
            _wait_for(grpc.StatusCode.UNAUTHENTICATED, call_with(DESKTOP))
        finally:
            tokens.write_text(before)
        _wait_for(grpc.StatusCode.OK, call_with(DESKTOP))
    assert "not reloaded" in server.log()


def test_auth_failures_are_counted_without_the_token(
    secured: tuple[Server, Path, JwtIssuer],
) -> None:
    server, _, _ = secured
    with server.channel() as channel:
        stub = pb_grpc.DecisionServiceStub(channel)
        _code(lambda: stub.Decide(DECIDE, timeout=5, metadata=bearer("secret-guess-42")))
    text = server.metrics()
    assert 'auth_failures_total{method="Decide",reason="unknown"}' in text
    assert "secret-guess-42" not in text and "secret-guess-42" not in server.log()


@pytest.fixture(scope="module")
def mtls(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path]]:
    tmp = tmp_path_factory.mktemp("mtls")
    fresh_demo(redis_server.url)
    pki = make_pki(tmp)
    tokens = tmp / "tokens"
    tokens.write_text(token_line(DESKTOP, "desktop"))
    client = ClientTls(pki.ca, pki.client_cert, pki.client_key)
    server = start_server(
        tmp,
        "--rules", str(RULES), "--redis-url", redis_server.url,
        "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
        "--tls-client-ca", str(pki.ca), "--auth-tokens", str(tokens), "--no-reflection",
        workers=1, tls=client,
    )  # fmt: skip
    yield server, tmp
    assert server.stop() == 0, server.log()


def test_mtls_needs_a_client_certificate(mtls: tuple[Server, Path]) -> None:
    server, tmp = mtls
    assert server.tls is not None
    with server.channel() as channel:
        reply = pb_grpc.DecisionServiceStub(channel).Decide(
            DECIDE, timeout=5, metadata=bearer(DESKTOP)
        )
        assert reply.routing.queue
    other = make_pki(tmp, name="other")
    for tls in (
        ClientTls(server.tls.ca),  # no client certificate
        ClientTls(server.tls.ca, other.client_cert, other.client_key),  # signed by another CA
        ClientTls(other.ca, server.tls.cert, server.tls.key),  # does not trust the server
        None,  # plaintext
    ):
        probe = Server(server.process, server.target, server.metrics_port, server.log_path, tls)
        with probe.channel() as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            code, _ = _code(lambda: stub.Decide(DECIDE, timeout=3, metadata=bearer(DESKTOP)))  # noqa: B023
            assert code == grpc.StatusCode.UNAVAILABLE, tls


def test_cli_sends_the_token_and_uses_tls(mtls: tuple[Server, Path]) -> None:
    server, _ = mtls
    assert server.tls is not None and server.tls.cert and server.tls.key and server.tls.ca
    command = [
        sys.executable, "-m", "decision_engine.cli", "decide", "--target", server.target,
        "--customer", "C-1001", "--intent", "cancel", "--json",
        "--tls-ca", str(server.tls.ca), "--client-cert", str(server.tls.cert),
        "--client-key", str(server.tls.key),
    ]  # fmt: skip
    env = {**os.environ, "DECISION_ENGINE_TOKEN": DESKTOP}
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["routing"]["queue"] == "retention_specialists"
    env["DECISION_ENGINE_TOKEN"] = "wrong"
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 1 and "UNAUTHENTICATED" in out.stderr


def test_tokens_add_writes_a_private_file_the_server_accepts(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    out = subprocess.run(
        [sys.executable, "-m", "decision_engine.cli", "tokens", "add", "--file", str(path),
         "--role", "analyst", "--name", "floor-2"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    token = out.stdout.strip()
    assert (path.stat().st_mode & 0o777) == 0o600
    assert token not in path.read_text()
    from decision_engine.server.auth import TokenFile

    caller = TokenFile(path).caller(token)
    assert caller is not None and caller.role == "analyst"


def test_a_renewed_certificate_is_served_without_a_restart(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    old, new = make_pki(tmp_path, name="old"), make_pki(tmp_path, name="new")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(old.server_cert, cert)
    shutil.copy(old.server_key, key)
    server = start_server(
        tmp_path, "--rules", str(RULES), "--redis-url", redis_server.url,
        "--tls-cert", str(cert), "--tls-key", str(key), workers=1, tls=ClientTls(old.ca),
    )  # fmt: skip
    try:

        def ping(ca: Path) -> Callable[[], object]:
            def call() -> object:
                probe = Server(server.process, server.target, 0, server.log_path, ClientTls(ca))
                with probe.channel() as channel:
                    return pb_grpc.DecisionServiceStub(channel).Ping(pb.PingRequest(), timeout=3)

            return call

        assert _code(ping(old.ca))[0] == grpc.StatusCode.OK
        assert _code(ping(new.ca))[0] == grpc.StatusCode.UNAVAILABLE
        for source, target in ((new.server_key, key), (new.server_cert, cert)):
            staged = target.with_suffix(".tmp")
            shutil.copy(source, staged)
            staged.replace(target)  # renamed over: never a half-written file
        _wait_for(grpc.StatusCode.OK, ping(new.ca))
        assert _code(ping(old.ca))[0] == grpc.StatusCode.UNAVAILABLE
        assert "TLS certificate reloaded" in server.log()
    finally:
        assert server.stop() == 0, server.log()


def _reflection(channel: grpc.Channel) -> grpc.StatusCode:
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    return _code(lambda: list(stub.ServerReflectionInfo(iter([request]), timeout=5)))[0]


def test_reflection_is_open_or_off(
    secured: tuple[Server, Path, JwtIssuer], mtls: tuple[Server, Path]
) -> None:
    with secured[0].channel() as channel:
        assert _reflection(channel) == grpc.StatusCode.OK  # no token needed, like health
    with mtls[0].channel() as channel:
        assert _reflection(channel) == grpc.StatusCode.UNIMPLEMENTED  # --no-reflection
