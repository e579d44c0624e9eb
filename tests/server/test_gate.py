"""The gate on methods the demo services do not have yet: streams, and unknown methods
(they need `admin`), on a real in-process gRPC server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine.server.auth import Authenticator, TokenFile
from decision_engine.server.gate import Gate
from tests.server.credentials import token_line

ADMIN, DESKTOP = "admin-token", "desktop-token"


async def _echo(messages: AsyncIterator[pb.PingRequest], context: Any) -> AsyncIterator[Any]:
    async for message in messages:
        yield pb.PingResponse()
        del message


def _handlers() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        "test.v1.Streams",
        {
            "Echo": grpc.stream_stream_rpc_method_handler(
                _echo,
                request_deserializer=pb.PingRequest.FromString,
                response_serializer=pb.PingResponse.SerializeToString,
            ),
        },
    )


def test_streams_and_unknown_methods_fail_closed(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(token_line(ADMIN, "admin") + token_line(DESKTOP, "desktop"))

    async def scenario() -> dict[str, grpc.StatusCode]:
        gate = Gate(Authenticator(tokens=TokenFile(tokens)))
        server = grpc.aio.server(interceptors=[gate])
        server.add_generic_rpc_handlers((_handlers(),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        codes: dict[str, grpc.StatusCode] = {}
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                echo = channel.stream_stream("/test.v1.Streams/Echo")

                async def run(name: str, token: str | None, messages: list[bytes]) -> None:
                    metadata = (("authorization", f"Bearer {token}"),) if token else None
                    call = echo(iter(messages), metadata=metadata, timeout=5)
                    try:
                        async for _ in call:
                            pass
                        codes[name] = grpc.StatusCode.OK
                    except grpc.aio.AioRpcError as exc:
                        codes[name] = exc.code()

                good = pb.PingRequest().SerializeToString()
                await run("no token", None, [good])
                await run("desktop", DESKTOP, [good])
                await run("admin", ADMIN, [good, good])
                await run("admin, garbage", ADMIN, [good, b"\xff\xff\xff"])
        finally:
            await server.stop(0)
        return codes

    codes = asyncio.run(scenario())
    assert codes == {
        "no token": grpc.StatusCode.UNAUTHENTICATED,
        "desktop": grpc.StatusCode.PERMISSION_DENIED,  # unknown to the gate: admin only
        "admin": grpc.StatusCode.OK,
        "admin, garbage": grpc.StatusCode.INVALID_ARGUMENT,
    }
