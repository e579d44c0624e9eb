"""Settings from flags and environment, validated once at start."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from decision_engine.decide.experiment import Experiment
from decision_engine.errors import ConfigError

ENV_PREFIX = "DECISION_ENGINE_"


@dataclass(frozen=True, slots=True)
class Settings:
    """How one `serve` runs; every field has a flag and a DECISION_ENGINE_* variable."""

    rules_dir: Path = Path("rules")
    """Directory of rule files (RULES)."""
    redis_url: str | None = None
    """Profile store; None starts an embedded Redis under data_dir (REDIS_URL)."""
    outcomes_redis_url: str | None = None
    """Outcome log; None: the profile Redis, or a 2nd embedded one (OUTCOMES_REDIS_URL)."""
    host: str = "127.0.0.1"
    """Interface the gRPC server listens on (HOST); beyond loopback it needs TLS and auth."""
    metrics_host: str = "127.0.0.1"
    """Interface of the Prometheus metrics server (METRICS_HOST)."""
    port: int = 50051
    """gRPC port shared by all workers (PORT)."""
    metrics_port: int = 9464
    """Prometheus metrics HTTP port; 0 disables (METRICS_PORT)."""
    workers: int = os.cpu_count() or 1
    """Worker processes serving gRPC (WORKERS)."""
    redis_timeout_ms: float = 50.0
    """Profile read budget; past it, decide from context alone (REDIS_TIMEOUT_MS)."""
    outcomes_timeout_ms: float = 1000.0
    """RecordOutcome's budget for logging and applying; past it, UNAVAILABLE
    (OUTCOMES_TIMEOUT_MS)."""
    max_in_flight: int = 128
    """Calls a worker serves at once; past it, RESOURCE_EXHAUSTED at once (MAX_IN_FLIGHT)."""
    max_queued: int = 64
    """Calls of one method a worker lets wait for its event loop; gRPC refuses more
    (MAX_QUEUED)."""
    min_deadline_ms: float = 1.0
    """Calls reaching the server with less time left are not served (MIN_DEADLINE_MS)."""
    max_connection_age_s: float = 300.0
    """A connection is closed (GOAWAY) after this long, so clients rebalance over the
    workers and replicas (MAX_CONNECTION_AGE_S)."""
    data_dir: Path = Path("var")
    """Where the embedded Redis keeps its data (DATA_DIR)."""
    demo_profiles: int = 1000
    """Synthetic customers loaded on the embedded Redis's first start (DEMO_PROFILES)."""
    log_level: str = "INFO"
    """Logging level (LOG_LEVEL)."""
    decision_ttl_days: float = 7.0
    """How long decisions are kept to check outcomes against (DECISION_TTL_DAYS)."""
    challenger_rules: Path | None = None
    """A second rules directory served to a share of customers (CHALLENGER_RULES)."""
    challenger_share: float = 0.0
    """Share of customers decided by the challenger rules (CHALLENGER_SHARE)."""
    control_share: float = 0.0
    """Share of customers who get no offer, to measure uplift against (CONTROL_SHARE)."""
    decision_secret: str = field(default="", repr=False)
    """Key that signs decision ids; shared through Redis when empty (DECISION_SECRET)."""
    tls_cert: Path | None = None
    """Server certificate chain (PEM); with tls_key, gRPC speaks TLS only (TLS_CERT)."""
    tls_key: Path | None = None
    """Private key of tls_cert (PEM) (TLS_KEY)."""
    tls_client_ca: Path | None = None
    """CA that client certificates must be signed by; set, clients need one (TLS_CLIENT_CA)."""
    auth_tokens: Path | None = None
    """File of token hashes and roles; re-read when it changes (AUTH_TOKENS)."""
    jwt_key: Path | None = None
    """PEM public key or JWKS file that JWT bearer tokens are verified with (JWT_KEY)."""
    jwt_audience: str = ""
    """The `aud` a JWT must carry (JWT_AUDIENCE)."""
    jwt_issuer: str = ""
    """The `iss` a JWT must carry, when set (JWT_ISSUER)."""
    jwt_role_claim: str = "role"
    """The JWT claim that holds the caller's role (JWT_ROLE_CLAIM)."""
    reflection: bool = True
    """Serve gRPC reflection (REFLECTION)."""
    insecure: bool = False
    """Allow a non-loopback host without TLS and authentication (INSECURE)."""

    @property
    def auth_enabled(self) -> bool:
        return self.auth_tokens is not None or self.jwt_key is not None

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None

    @property
    def experiment(self) -> Experiment:
        return Experiment(self.control_share, self.challenger_share)

    def __post_init__(self) -> None:
        for name in ("port", "metrics_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise ConfigError(f"{name} must be 0..65535, got {value}")
        if not 1 <= self.workers <= 256:
            raise ConfigError(f"workers must be 1..256, got {self.workers}")
        if not 0 < self.redis_timeout_ms <= 60_000:
            raise ConfigError(
                f"redis_timeout_ms must be in (0, 60000], got {self.redis_timeout_ms}"
            )
        if not 0 < self.outcomes_timeout_ms <= 60_000:
            raise ConfigError(
                f"outcomes_timeout_ms must be in (0, 60000], got {self.outcomes_timeout_ms}"
            )
        if not 1 <= self.max_in_flight <= 100_000:
            raise ConfigError(f"max_in_flight must be 1..100000, got {self.max_in_flight}")
        if not 2 <= self.max_queued <= 100_000:
            raise ConfigError(f"max_queued must be 2..100000, got {self.max_queued}")
        if not 0 <= self.min_deadline_ms <= 60_000:
            raise ConfigError(f"min_deadline_ms must be 0..60000, got {self.min_deadline_ms}")
        if not 0 < self.max_connection_age_s <= 86_400 * 365:
            raise ConfigError(
                f"max_connection_age_s must be > 0 s and at most a year, "
                f"got {self.max_connection_age_s}"
            )
        if not self.rules_dir.is_dir():
            raise ConfigError(f"rules directory {self.rules_dir} does not exist")
        if self.challenger_rules is not None and not self.challenger_rules.is_dir():
            raise ConfigError(f"challenger rules directory {self.challenger_rules} does not exist")
        if self.challenger_share and self.challenger_rules is None:
            raise ConfigError("challenger_share needs challenger_rules")
        try:
            Experiment(self.control_share, self.challenger_share)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if not 0 < self.decision_ttl_days <= 365:
            raise ConfigError(
                f"decision_ttl_days must be in (0, 365], got {self.decision_ttl_days}"
            )
        self._check_security()
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(
                f"log_level must be DEBUG, INFO, WARNING or ERROR, got {self.log_level}"
            )

    def _check_security(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("tls_client_ca (mTLS) needs tls_cert and tls_key")
        if self.jwt_key is not None and not self.jwt_audience:
            raise ConfigError("jwt_key needs jwt_audience (the aud claim tokens must carry)")
        for name in ("tls_cert", "tls_key", "tls_client_ca", "auth_tokens", "jwt_key"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ConfigError(f"{name}: {path} is not a file")
        exposed = not is_loopback(self.host)
        if exposed and not self.insecure and not (self.tls_enabled and self.auth_enabled):
            missing = " and ".join(
                what
                for what, ok in (("TLS (--tls-cert/--tls-key)", self.tls_enabled),
                                 ("authentication (--auth-tokens or --jwt-key)",
                                  self.auth_enabled))
                if not ok
            )  # fmt: skip
            raise ConfigError(
                f"refusing to serve on {self.host} without {missing}: anyone who reaches "
                f"the port could read profile values and record outcomes; configure them, "
                f"bind 127.0.0.1, or pass --insecure if a trusted network stands in for them"
            )


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
