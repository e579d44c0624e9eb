"""What one worker takes on: calls queued and served, streams, messages, connections.

Without bounds an overload queued calls for seconds, and a client could hold memory
the server never gets back (10 connections of 1,000 streams that never read held
~120 MB more per worker), keep a connection on one worker forever (a restarted
worker got no share of the load), or send a request of any size. The figures are
in README, "Under load"; admission.py says how the two call bounds work together.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Per-worker limits of the gRPC server; defaults are what `serve` uses."""

    max_in_flight: int = 128
    """Calls of DecisionService served at once; more are shed (admission.py)."""
    max_queued: int = 64
    """Calls of one method waiting for the event loop; the gRPC core refuses more
    (CANCELLED), some from half of it, all from there on."""
    min_deadline_s: float = 0.001
    """A call reaching the servicer with less time left than this is not served."""
    max_watches: int = 1000
    """Guidance streams (WatchGuidance, Guide) open at once in a worker; more are
    RESOURCE_EXHAUSTED. They share one blocked Redis read (guidance_follow.py)."""
    max_concurrent_streams: int = 100
    """Streams open at once on one connection (HTTP/2 SETTINGS); more are refused."""
    max_receive_message_bytes: int = 1 * MIB
    """Largest request accepted (a DecideRequest is well under 1 KiB)."""
    max_send_message_bytes: int = 4 * MIB
    """Largest response sent (with `explain`: ~70 KiB at 1,000 offers, ~320 KiB at 5,000)."""
    keepalive_time_s: float = 60.0
    """The server pings a connection idle this long, to find dead peers."""
    keepalive_timeout_s: float = 20.0
    """…and closes it when the ping is not answered within this."""
    min_client_ping_interval_s: float = 10.0
    """Clients may ping at most this often (more often: GOAWAY too_many_pings)."""
    max_connection_idle_s: float = 300.0
    """A connection without calls this long is closed (clients reconnect on demand)."""
    max_connection_age_s: float = 300.0
    """Any connection is closed after this long (±10 % jitter), so clients rebalance."""
    max_connection_age_grace_s: float = 10.0
    """…after letting the calls in flight on it finish for this long."""

    def grpc_options(self) -> list[tuple[str, int]]:
        """The limits as gRPC channel arguments for `grpc.aio.server(options=...)`."""

        def ms(seconds: float) -> int:
            return max(1, round(seconds * 1000))

        return [
            ("grpc.server.max_pending_requests", max(1, self.max_queued // 2)),
            ("grpc.server.max_pending_requests_hard_limit", self.max_queued),
            ("grpc.max_concurrent_streams", self.max_concurrent_streams),
            ("grpc.max_receive_message_length", self.max_receive_message_bytes),
            ("grpc.max_send_message_length", self.max_send_message_bytes),
            ("grpc.keepalive_time_ms", ms(self.keepalive_time_s)),
            ("grpc.keepalive_timeout_ms", ms(self.keepalive_timeout_s)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", ms(self.min_client_ping_interval_s)),
            ("grpc.max_connection_idle_ms", ms(self.max_connection_idle_s)),
            ("grpc.max_connection_age_ms", ms(self.max_connection_age_s)),
            ("grpc.max_connection_age_grace_ms", ms(self.max_connection_age_grace_s)),
        ]


DEFAULT_LIMITS = ServerLimits()
