"""The gRPC server's limits on a real server: streams per connection, connection age.

A well-behaved gRPC client never opens more streams than the server allows (it
queues them), so the stream limit is checked with a bare HTTP/2 client that ignores
it, the way a misbehaving one would.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from decision_engine._proto.decision.v1 import decision_pb2 as pb
from decision_engine._proto.decision.v1 import decision_pb2_grpc as pb_grpc
from decision_engine.server.limits import DEFAULT_LIMITS
from decision_engine.store.embedded import EmbeddedRedis
from tests.server.conftest import RULES, Server, start_server

# HTTP/2 (RFC 9113): frame types, flags, settings and error codes used here.
HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x1, 0x3, 0x4, 0x6, 0x7
END_HEADERS, ACK = 0x4, 0x1
MAX_CONCURRENT_STREAMS = 0x3
NO_ERROR, REFUSED_STREAM = 0x0, 0x7


class BareHttp2:
    """Just enough HTTP/2 to open streams and read what the server sends back."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)

    def close(self) -> None:
        self.sock.close()

    def send(self, kind: int, flags: int, stream: int, payload: bytes = b"") -> None:
        header = len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big")
        self.sock.sendall(header + payload)

    def read(self) -> tuple[int, int, int, bytes] | None:
        """The next frame (type, flags, stream, payload); None once the server closed.

        Pings are answered, as every HTTP/2 peer must (a graceful GOAWAY waits for it).
        """
        header = self._exactly(9)
        if header is None:
            return None
        length = int.from_bytes(header[:3], "big")
        payload = (self._exactly(length) if length else b"") or b""
        kind, flags = header[3], header[4]
        if kind == PING and not flags & ACK:
            self.send(PING, ACK, 0, payload)
        return kind, flags, int.from_bytes(header[5:9], "big") & 0x7FFFFFFF, payload

    def _exactly(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def handshake(self) -> dict[int, int]:
        """Preface and settings both ways; the server's settings."""
        self.sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        self.send(SETTINGS, 0, 0)
        while (frame := self.read()) is not None:
            kind, flags, _, payload = frame
            if kind == SETTINGS and not flags & ACK:
                self.send(SETTINGS, ACK, 0)  # from here on the server holds us to them
                return {
                    int.from_bytes(payload[i : i + 2], "big"): int.from_bytes(
                        payload[i + 2 : i + 6], "big"
                    )
                    for i in range(0, len(payload), 6)
                }
        raise AssertionError("the server closed the connection during the handshake")

    def open_stream(self, stream: int, path: str) -> None:
        """A call's headers without its message: the stream stays open, waiting."""
        headers = [
            (":method", "POST"), (":scheme", "http"), (":path", path),
            (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers"),
        ]  # fmt: skip
        self.send(HEADERS, END_HEADERS, stream, b"".join(_literal(n, v) for n, v in headers))


def _literal(name: str, value: str) -> bytes:
    """An HPACK literal header field, not indexed, new name (RFC 7541 6.2.2)."""

    def string(text: str) -> bytes:
        data = text.encode()
        assert len(data) < 127
        return bytes([len(data)]) + data

    return b"\x00" + string(name) + string(value)


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(data_dir=tmp_path_factory.mktemp("redis")) as store:
        yield store


def test_streams_beyond_the_limit_on_one_connection_are_refused(
    tmp_path: Path, redis: EmbeddedRedis
) -> None:
    # The queue bound is lifted so that it does not refuse part of this burst itself.
    server = start_server(tmp_path, "--rules", str(RULES), "--redis-url", redis.url,
                          "--max-queued", "10000", workers=1)  # fmt: skip
    try:
        limit = DEFAULT_LIMITS.max_concurrent_streams
        extra = 10
        client = BareHttp2(server.target)
        try:
            assert client.handshake()[MAX_CONCURRENT_STREAMS] == limit
            streams = [1 + 2 * i for i in range(limit + extra)]  # client streams are odd
            for stream in streams:
                client.open_stream(stream, "/decision.v1.DecisionService/Ping")
            refused: dict[int, int] = {}
            while len(refused) < extra and (frame := client.read()) is not None:
                kind, _, stream, payload = frame
                if kind == RST_STREAM:
                    refused[stream] = int.from_bytes(payload, "big")
            assert refused == dict.fromkeys(streams[limit:], REFUSED_STREAM)
        finally:
            client.close()
        # The server is fine afterwards, and so are well-behaved clients.
        with grpc.insecure_channel(server.target) as channel:
            pb_grpc.DecisionServiceStub(channel).Ping(pb.PingRequest(), timeout=30)
    finally:
        assert server.stop() == 0, server.log()


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory, redis: EmbeddedRedis) -> Iterator[Server]:
    """Connections to this server are closed after a second."""
    tmp = tmp_path_factory.mktemp("short-lived")
    server = start_server(tmp, "--rules", str(RULES), "--redis-url", redis.url,
                          "--max-connection-age-s", "1", workers=1)  # fmt: skip
    yield server
    assert server.stop() == 0, server.log()


def test_a_connection_is_closed_once_it_is_older_than_the_max_age(short_lived: Server) -> None:
    client = BareHttp2(short_lived.target)
    try:
        client.handshake()
        goaway = None
        while (frame := client.read()) is not None:  # until the server closes
            if frame[0] == GOAWAY:
                goaway = frame[3]
    finally:
        client.close()
    assert goaway is not None, "closed without GOAWAY"
    assert int.from_bytes(goaway[4:8], "big") == NO_ERROR


def test_a_client_reconnects_by_itself_after_the_server_closed_its_connection(
    short_lived: Server,
) -> None:
    states: list[grpc.ChannelConnectivity] = []
    with grpc.insecure_channel(short_lived.target) as channel:
        stub = pb_grpc.DecisionServiceStub(channel)
        stub.Ping(pb.PingRequest(), timeout=30)
        channel.subscribe(states.append)
        deadline = time.monotonic() + 30
        while grpc.ChannelConnectivity.IDLE not in states:  # the server sent GOAWAY
            assert time.monotonic() < deadline, f"connection never closed: {states}"
            time.sleep(0.05)
        # A call after that opens a new connection, without an error for the caller.
        for _ in range(3):
            stub.Ping(pb.PingRequest(), timeout=30)
        # Connectivity callbacks arrive on gRPC's own thread, possibly after the calls
        # returned: wait for the new connection's READY rather than expect it already.
        closed_at = states.index(grpc.ChannelConnectivity.IDLE)
        while grpc.ChannelConnectivity.READY not in states[closed_at:]:
            assert time.monotonic() < deadline + 30, f"no new connection: {states}"
            time.sleep(0.05)


def test_a_request_larger_than_the_limit_is_refused(tmp_path: Path, redis: EmbeddedRedis) -> None:
    # Its own server with the default connection age: on a busy machine, sending
    # several MiB to the short-lived one could outlast its connection (GOAWAY).
    server = start_server(tmp_path, "--rules", str(RULES), "--redis-url", redis.url, workers=1)
    too_big = DEFAULT_LIMITS.max_receive_message_bytes + 1
    request = pb.DecideRequest(
        customer_id="C-1001",
        context=pb.InteractionContext(channel=pb.CHANNEL_VOICE, attributes={"note": "x" * too_big}),
    )
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.Decide(request, timeout=30)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert str(DEFAULT_LIMITS.max_receive_message_bytes) in refused.value.details()
            stub.Ping(pb.PingRequest(), timeout=30)
    finally:
        assert server.stop() == 0, server.log()
