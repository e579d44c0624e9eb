"""Settings from flags and environment, validated once at start."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import click

from decision_engine.decide.experiment import Experiment
from decision_engine.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

ENV_PREFIX = "DECISION_ENGINE_"
REDIS_CLUSTER_SCHEME = "redis+cluster://"
"""A --redis-url of this scheme names the startup nodes of a Redis Cluster."""

T = TypeVar("T")

_OPTION = "decision_engine.option"
DEFAULT_MOMENT_DETECTOR = "decision_engine.moments.engine:MomentEngine"
MAX_MOMENT_WORKERS = 16
"""One shard each at least: store/interactions.py MOMENT_SHARDS (a test keeps them equal)."""


def env_var(name: str) -> str:
    """The environment variable of a setting or a client option: DECISION_ENGINE_<NAME>."""
    return ENV_PREFIX + name.upper()


@dataclass(frozen=True, slots=True)
class _Declared:
    help: str
    flag: str | None
    env: str | None
    file: bool
    hidden: bool
    machine_default: str | None


def setting(
    default: T,
    *,
    help: str,
    flag: str | None = None,
    env: str | None = None,
    file: bool = False,
    hidden: bool = False,
    secret: bool = False,
    machine_default: str | None = None,
) -> T:
    """A Settings field with how it is given: `--field-name` and DECISION_ENGINE_FIELD_NAME
    unless `flag` or `env` (the part after the prefix) say otherwise.

    `file`: a path that must not be a directory. `secret`: kept out of repr. `hidden`: kept
    out of `--help`. `machine_default`: the default depends on the machine (the text says
    how); the CLI then passes nothing and the field's default applies.
    """
    declared = _Declared(help, flag, env, file, hidden, machine_default)
    return field(default=default, repr=not secret, metadata={_OPTION: declared})


@dataclass(frozen=True, slots=True)
class Settings:
    """How one `serve` runs; every field has a flag and a DECISION_ENGINE_* variable.

    Each field is declared once, with `setting(…)`; `setting_options()` derives the flags
    and variables from it, and the CLI its `serve` options from those.
    """

    rules_dir: Path = setting(Path("rules"), flag="--rules", env="RULES", help="Rules directory.")
    """Directory of rule files (the one exception to the naming: --rules, …_RULES)."""
    redis_url: str | None = setting(
        None, help="Profile store. Without it an embedded Redis is started under --data-dir."
    )
    """Profile store; None starts an embedded Redis under data_dir."""
    outcomes_redis_url: str | None = setting(
        None,
        help="Redis for the outcome log (durable: appendfsync always). Default: --redis-url, "
        "or a second embedded Redis.",
    )
    """Outcome log; None: the profile Redis, or a 2nd embedded one."""
    host: str = setting(
        "127.0.0.1",
        help="gRPC interface; beyond loopback it needs TLS and auth (or --insecure).",
    )
    """Interface the gRPC server listens on; beyond loopback it needs TLS and auth."""
    metrics_host: str = setting("127.0.0.1", help="Interface of the Prometheus /metrics server.")
    """Interface of the Prometheus metrics server."""
    port: int = setting(50051, help="gRPC port, shared by all workers.")
    """gRPC port shared by all workers."""
    metrics_port: int = setting(9464, help="Prometheus /metrics port (0: off).")
    """Prometheus metrics HTTP port; 0 disables."""
    workers: int = setting(
        os.cpu_count() or 1, help="Worker processes", machine_default="number of CPUs"
    )
    """Worker processes serving gRPC."""
    redis_timeout_ms: float = setting(
        50.0, help="Profile read budget; past it Decide answers from context (degraded)."
    )
    """Profile read budget; past it, decide from context alone."""
    outcomes_timeout_ms: float = setting(
        1000.0,
        help="RecordOutcome's budget for writing the outcome; past it the answer is UNAVAILABLE.",
    )
    """RecordOutcome's budget for logging and applying; past it, UNAVAILABLE."""
    outcomes_wait_replicas: int = setting(
        0,
        help="Replicas of the outcome log that must have an outcome before it is "
        "acknowledged (Redis WAIT); 1 on a Redis Cluster, so that a failover keeps it.",
    )
    """Replicas that must have an outcome before RecordOutcome acknowledges it."""
    max_in_flight: int = setting(
        128,
        help="Calls one worker serves at once; more are answered RESOURCE_EXHAUSTED at once.",
    )
    """Calls a worker serves at once; past it, RESOURCE_EXHAUSTED at once."""
    max_queued: int = setting(
        64, help="Calls of one method a worker lets wait for its event loop; gRPC refuses more."
    )
    """Calls of one method a worker lets wait for its event loop; gRPC refuses more."""
    min_deadline_ms: float = setting(
        1.0, help="Calls reaching the server with less of their deadline left are not served."
    )
    """Calls reaching the server with less time left are not served."""
    max_connection_age_s: float = setting(
        300.0, help="Close client connections (GOAWAY) after this long, so clients rebalance."
    )
    """A connection is closed (GOAWAY) after this long, so clients rebalance over the
    workers and replicas."""
    moment_workers: int = setting(
        1,
        help="Moment processes (live guidance), apart from the gRPC workers; 0: none here.",
    )
    """Moment processes detecting moments in live interactions; each owns some of the
    shards the interactions are spread over."""
    moment_detector: str = setting(
        DEFAULT_MOMENT_DETECTOR,
        help="What moment processes detect moments with: module:attribute, a callable of the "
        "compiled ruleset.",
    )
    """What the moment processes detect moments with: a callable taking the compiled
    ruleset (server/detector.py says what it must do)."""
    notice_workers: int = setting(
        1,
        help="Notice processes (business events → notices → delivery, and the daily "
        "key-date sweep), apart from the gRPC workers; 0: none here.",
    )
    """Notice processes: each decides the notices of business events, delivers the
    outbox through the senders, and takes its turn at the key-date sweep."""
    notice_senders: str = setting(
        "*=file:notices.jsonl",
        help="Where notices go, per channel: `sms=https://…,email=smtp://host:25?from=…,"
        "*=file:notices.jsonl` (a webhook URL, an SMTP server, or a JSON Lines file under "
        "--data-dir; `*` for every other channel).",
    )
    """The sender of each notice channel (delivery/senders.py reads the URIs)."""
    webhook_secret: str = setting(
        "",
        secret=True,
        help="Key of the HMAC-SHA256 signature (X-Signature-256) on notice webhooks.",
    )
    """Signs every webhook call, so the receiver knows it came from us."""
    max_watches: int = setting(
        1000,
        help="Guidance streams (WatchGuidance, Guide) one worker keeps open; more are "
        "answered RESOURCE_EXHAUSTED.",
    )
    """Guidance streams a worker keeps open at once."""
    data_dir: Path = setting(Path("var"), help="Data of the embedded Redis.")
    """Where the embedded Redis keeps its data."""
    demo_profiles: int = setting(
        1000, help="Synthetic customers loaded on the embedded Redis's first start."
    )
    """Synthetic customers loaded on the embedded Redis's first start."""
    log_level: str = setting("INFO", help="")
    """Logging level."""
    decision_ttl_days: float = setting(
        7.0, help="How long decisions are kept for outcomes to be checked against them."
    )
    """How long decisions are kept to check outcomes against."""
    challenger_rules: Path | None = setting(
        None, help="Rules served to the challenger arm of a champion/challenger experiment."
    )
    """A second rules directory served to a share of customers."""
    challenger_share: float = setting(0.0, help="Share of customers in the challenger arm.")
    """Share of customers decided by the challenger rules."""
    control_share: float = setting(
        0.0, help="Share of customers who get no offer (holdout for uplift)."
    )
    """Share of customers who get no offer, to measure uplift against."""
    decision_secret: str = setting(
        "",
        secret=True,
        hidden=True,
        help="Key that signs decision ids (default: one shared by all replicas through Redis).",
    )
    """Key that signs decision ids; shared through Redis when empty."""
    tls_cert: Path | None = setting(
        None, file=True, help="Server certificate chain (PEM): gRPC over TLS."
    )
    """Server certificate chain (PEM); with tls_key, gRPC speaks TLS only."""
    tls_key: Path | None = setting(None, file=True, help="Private key of --tls-cert (PEM).")
    """Private key of tls_cert (PEM)."""
    tls_client_ca: Path | None = setting(
        None, file=True, help="CA for client certificates: clients must show one (mTLS)."
    )
    """CA that client certificates must be signed by; set, clients need one."""
    auth_tokens: Path | None = setting(
        None, file=True, help="File of token hashes and roles (see `tokens add`)."
    )
    """File of token hashes and roles; re-read when it changes."""
    jwt_key: Path | None = setting(
        None, file=True, help="PEM public key or JWKS file to verify JWT bearer tokens."
    )
    """PEM public key or JWKS file that JWT bearer tokens are verified with."""
    jwt_audience: str = setting("", help="The aud claim a JWT must carry.")
    """The `aud` a JWT must carry."""
    jwt_issuer: str = setting("", help="The iss claim a JWT must carry.")
    """The `iss` a JWT must carry, when set."""
    jwt_role_claim: str = setting("role", help="JWT claim with the caller's role.")
    """The JWT claim that holds the caller's role."""
    reflection: bool = setting(True, help="Serve gRPC reflection.")
    """Serve gRPC reflection (`--no-reflection` turns it off)."""
    insecure: bool = setting(
        False, help="Allow a non-loopback --host without TLS and authentication."
    )
    """Allow a non-loopback host without TLS and authentication."""

    @property
    def auth_enabled(self) -> bool:
        return self.auth_tokens is not None or self.jwt_key is not None

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert is not None

    def _check_cluster(self) -> None:
        """On a Redis Cluster, only what keeps each script in one slot runs (README: Running
        at scale): live guidance and notices need a plain Redis for now."""
        urls = (self.redis_url, self.outcomes_redis_url)
        if not any(url and url.startswith(REDIS_CLUSTER_SCHEME) for url in urls):
            return
        if self.redis_url is None or not self.redis_url.startswith(REDIS_CLUSTER_SCHEME):
            raise ConfigError("a Redis Cluster outcome log needs a Redis Cluster --redis-url too")
        if self.moment_workers or self.notice_workers:
            raise ConfigError(
                "on a Redis Cluster (redis+cluster://) live guidance and notices do not run yet: "
                "give --moment-workers 0 --notice-workers 0"
            )

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
        if not 0 <= self.outcomes_wait_replicas <= 16:
            raise ConfigError(
                f"outcomes_wait_replicas must be 0..16, got {self.outcomes_wait_replicas}"
            )
        self._check_cluster()
        if not 0 <= self.moment_workers <= MAX_MOMENT_WORKERS:
            raise ConfigError(
                f"moment_workers must be 0..{MAX_MOMENT_WORKERS}, got {self.moment_workers}"
            )
        if not 0 <= self.notice_workers <= 16:
            raise ConfigError(f"notice_workers must be 0..16, got {self.notice_workers}")
        sender_uris(self.notice_senders)
        if not 1 <= self.max_watches <= 100_000:
            raise ConfigError(f"max_watches must be 1..100000, got {self.max_watches}")
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


def sender_uris(text: str) -> dict[str, str]:
    """`sms=https://…,*=file:notices.jsonl` as {channel: URI}; ConfigError if malformed."""
    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        channel, eq, uri = item.partition("=")
        channel, uri = channel.strip(), uri.strip()
        if not eq or not channel or not uri:
            raise ConfigError(f"notice_senders: {item!r} is not channel=URI")
        if channel in out:
            raise ConfigError(f"notice_senders: channel {channel!r} is given twice")
        out[channel] = uri
    return out


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@dataclass(frozen=True, slots=True)
class SettingOption:
    """How one Settings field is given on the command line and in the environment."""

    name: str
    """The Settings field."""
    flag: str
    """`--rules`; a bool that defaults to True also has `--no-…`."""
    env: str
    """DECISION_ENGINE_RULES."""
    help: str
    default: object
    annotation: object
    """The field's type: Path, Path | None, int, float, str, str | None or bool."""
    file: bool
    hidden: bool
    machine_default: str | None


@cache
def setting_options() -> tuple[SettingOption, ...]:
    """Every Settings field's option, in field order."""
    types = get_type_hints(Settings)
    options = []
    for f in fields(Settings):
        declared = f.metadata.get(_OPTION)
        if not isinstance(declared, _Declared):
            raise TypeError(f"Settings.{f.name} has no flag: declare it with setting(…)")
        options.append(
            SettingOption(
                name=f.name,
                flag=declared.flag or "--" + f.name.replace("_", "-"),
                env=env_var(declared.env or f.name),
                help=declared.help,
                default=f.default,
                annotation=types[f.name],
                file=declared.file,
                hidden=declared.hidden,
                machine_default=declared.machine_default,
            )
        )
    return tuple(options)


def setting_option(name: str) -> SettingOption:
    """The option of one Settings field, e.g. for another command's `--rules`."""
    for option in setting_options():
        if option.name == name:
            return option
    raise KeyError(name)


def rules_dir_argument() -> Callable[[F], F]:
    """The rules directory as `rules check` and `rules test` take it: an argument with the
    serve default and environment variable."""
    return click.argument(
        "directory",
        type=click.Path(path_type=Path),
        default=Path("rules"),
        envvar=setting_option("rules_dir").env,
    )
