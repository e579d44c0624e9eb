"""TLS for the gRPC server, its certificates re-read when they change.

The client side (`ClientTls`, `channel`, `aio_channel`) is in `decision_engine/channels.py`."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from decision_engine.errors import ConfigError

log = logging.getLogger(__name__)

_CHECK_EVERY_S = 1.0


@dataclass(frozen=True, slots=True)
class ServerTls:
    """The server's certificate and key; with `client_ca`, clients must show a certificate
    signed by it (mTLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def files(self) -> tuple[Path, ...]:
        return (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())

    def credentials(self) -> grpc.ServerCredentials:
        """Credentials that pick up renewed files on the next handshake, without a restart."""
        watcher = _CertWatcher(self)
        return grpc.dynamic_ssl_server_credentials(
            watcher.configuration(),
            watcher.fetch,
            require_client_authentication=self.client_ca is not None,
        )


class _CertWatcher:
    def __init__(self, tls: ServerTls) -> None:
        self._tls = tls
        self._lock = threading.Lock()
        self._checked = 0.0
        self._stamp = self._stamps()

    def _stamps(self) -> tuple[tuple[int, int], ...]:
        try:
            return tuple((st.st_mtime_ns, st.st_size) for st in map(os.stat, self._tls.files()))
        except OSError as exc:
            raise ConfigError(f"TLS file: {exc}") from None

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        tls = self._tls
        try:
            pair = (tls.key.read_bytes(), tls.cert.read_bytes())
            ca = tls.client_ca.read_bytes() if tls.client_ca else None
        except OSError as exc:
            raise ConfigError(f"TLS file: {exc}") from None
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each handshake: a new configuration, or None to keep it."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked < _CHECK_EVERY_S:
                return None
            self._checked = now
            try:
                stamp = self._stamps()
                if stamp == self._stamp:
                    return None
                config = self.configuration()
            except ConfigError as exc:
                log.error("TLS files not reloaded, keeping the current ones: %s", exc)
                return None
            self._stamp = stamp
            log.info("TLS certificate reloaded from %s", self._tls.cert)
            return config
