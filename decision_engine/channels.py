"""Channels to a Decision Engine server, plain or TLS (and mTLS), for the CLI, the tests
and the benchmark.

Client-side only: the server's TLS (`server/tls.py`) is not imported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from decision_engine.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ClientTls:
    """How a client (CLI, benchmark) trusts the server and, for mTLS, proves who it is."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            raise ConfigError("a client certificate needs both --tls-cert and --tls-key")
        try:
            return grpc.ssl_channel_credentials(
                root_certificates=self.ca.read_bytes() if self.ca else None,
                private_key=self.key.read_bytes() if self.key else None,
                certificate_chain=self.cert.read_bytes() if self.cert else None,
            )
        except OSError as exc:
            raise ConfigError(f"TLS file: {exc}") from None


def channel(target: str, tls: ClientTls | None, options: list[tuple[str, object]] | None = None
            ) -> grpc.Channel:  # fmt: skip
    """A blocking channel, secure when `tls` is given."""
    if tls is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, tls.credentials(), options=options)


def aio_channel(
    target: str, tls: ClientTls | None, options: list[tuple[str, object]] | None = None
) -> grpc.aio.Channel:
    """An asyncio channel, secure when `tls` is given."""
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, tls.credentials(), options=options)
