"""The `decision-engine` command: serve, decide, rules, profiles."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from decision_engine.config import ENV_PREFIX, Settings
from decision_engine.errors import ConfigError
from decision_engine.vocabulary import CHANNELS

if TYPE_CHECKING:
    from decision_engine.client import Connection

F = TypeVar("F", bound=Callable[..., Any])


def _env(name: str) -> str:
    return ENV_PREFIX + name


def _file_option(flag: str, help: str) -> Callable[[F], F]:
    name = flag.removeprefix("--").replace("-", "_").upper()
    return click.option(
        flag,
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        envvar=_env(name),
        show_envvar=True,
        help=help,
    )


def _client_options(command: F) -> F:
    """How the CLI reaches a server: address, TLS, bearer token."""
    for option in reversed(
        [
            click.option("--target", default="localhost:50051", envvar=_env("TARGET"),
                         show_default=True, show_envvar=True, help="Server address."),
            click.option("--tls-ca", type=click.Path(path_type=Path, dir_okay=False),
                         envvar=_env("TLS_CA"), show_envvar=True,
                         help="Use TLS, trusting this CA (PEM)."),
            click.option("--tls", "use_tls", is_flag=True, envvar=_env("TLS"), show_envvar=True,
                         help="Use TLS with the system's trusted CAs."),
            click.option("--client-cert", type=click.Path(path_type=Path, dir_okay=False),
                         envvar=_env("CLIENT_CERT"), show_envvar=True,
                         help="Client certificate (PEM), for mTLS."),
            click.option("--client-key", type=click.Path(path_type=Path, dir_okay=False),
                         envvar=_env("CLIENT_KEY"), show_envvar=True,
                         help="Key of --client-cert (PEM)."),
            click.option("--token", default="", envvar=_env("TOKEN"), show_envvar=True,
                         help="Bearer token (better from the environment than the command "
                         "line, which other users can see)."),
        ]
    ):  # fmt: skip
        command = option(command)
    return command


def _connection(options: dict[str, Any]) -> Connection:
    """Pops the client options into a Connection."""
    from decision_engine.channels import ClientTls
    from decision_engine.client import Connection

    ca, use_tls = options.pop("tls_ca"), options.pop("use_tls")
    cert, key = options.pop("client_cert"), options.pop("client_key")
    tls = ClientTls(ca, cert, key) if ca or use_tls or cert or key else None
    return Connection(options.pop("target"), tls=tls, token=options.pop("token"))


@click.group()
@click.version_option(package_name="decision-engine")
def main() -> None:
    """Real-time next-best-action decisioning for contact centers."""


@main.command()
@click.option(
    "--rules",
    "rules_dir",
    type=click.Path(path_type=Path),
    default=Path("rules"),
    envvar=_env("RULES"),
    show_default=True,
    show_envvar=True,
    help="Rules directory.",
)
@click.option(
    "--redis-url",
    envvar=_env("REDIS_URL"),
    show_envvar=True,
    help="Profile store. Without it an embedded Redis is started under --data-dir.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    envvar=_env("HOST"),
    show_default=True,
    show_envvar=True,
    help="gRPC interface; beyond loopback it needs TLS and auth (or --insecure).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    envvar=_env("METRICS_HOST"),
    show_default=True,
    show_envvar=True,
    help="Interface of the Prometheus /metrics server.",
)
@click.option(
    "--port",
    type=int,
    default=50051,
    envvar=_env("PORT"),
    show_default=True,
    show_envvar=True,
    help="gRPC port, shared by all workers.",
)
@click.option(
    "--metrics-port",
    type=int,
    default=9464,
    envvar=_env("METRICS_PORT"),
    show_default=True,
    show_envvar=True,
    help="Prometheus /metrics port (0: off).",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    envvar=_env("WORKERS"),
    show_envvar=True,
    help="Worker processes [default: number of CPUs].",
)
@click.option(
    "--redis-timeout-ms",
    type=float,
    default=50.0,
    envvar=_env("REDIS_TIMEOUT_MS"),
    show_default=True,
    show_envvar=True,
    help="Profile read budget; past it Decide answers from context (degraded).",
)
@click.option(
    "--outcomes-timeout-ms",
    type=float,
    default=1000.0,
    envvar=_env("OUTCOMES_TIMEOUT_MS"),
    show_default=True,
    show_envvar=True,
    help="RecordOutcome's budget for writing the outcome; past it the answer is UNAVAILABLE.",
)
@click.option(
    "--max-in-flight",
    type=int,
    default=128,
    envvar=_env("MAX_IN_FLIGHT"),
    show_default=True,
    show_envvar=True,
    help="Calls one worker serves at once; more are answered RESOURCE_EXHAUSTED at once.",
)
@click.option(
    "--max-queued",
    type=int,
    default=64,
    envvar=_env("MAX_QUEUED"),
    show_default=True,
    show_envvar=True,
    help="Calls of one method a worker lets wait for its event loop; gRPC refuses more.",
)
@click.option(
    "--min-deadline-ms",
    type=float,
    default=1.0,
    envvar=_env("MIN_DEADLINE_MS"),
    show_default=True,
    show_envvar=True,
    help="Calls reaching the server with less of their deadline left are not served.",
)
@click.option(
    "--max-connection-age-s",
    type=float,
    default=300.0,
    envvar=_env("MAX_CONNECTION_AGE_S"),
    show_default=True,
    show_envvar=True,
    help="Close client connections (GOAWAY) after this long, so clients rebalance.",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=Path("var"),
    envvar=_env("DATA_DIR"),
    show_default=True,
    show_envvar=True,
    help="Data of the embedded Redis.",
)
@click.option(
    "--demo-profiles",
    type=int,
    default=1000,
    envvar=_env("DEMO_PROFILES"),
    show_default=True,
    show_envvar=True,
    help="Synthetic customers loaded on the embedded Redis's first start.",
)
@click.option(
    "--log-level", default="INFO", envvar=_env("LOG_LEVEL"), show_default=True, show_envvar=True
)
@click.option(
    "--challenger-rules",
    type=click.Path(path_type=Path),
    default=None,
    envvar=_env("CHALLENGER_RULES"),
    show_envvar=True,
    help="Rules served to the challenger arm of a champion/challenger experiment.",
)
@click.option(
    "--challenger-share",
    type=float,
    default=0.0,
    envvar=_env("CHALLENGER_SHARE"),
    show_default=True,
    show_envvar=True,
    help="Share of customers in the challenger arm.",
)
@click.option(
    "--control-share",
    type=float,
    default=0.0,
    envvar=_env("CONTROL_SHARE"),
    show_default=True,
    show_envvar=True,
    help="Share of customers who get no offer (holdout for uplift).",
)
@click.option(
    "--outcomes-redis-url",
    envvar=_env("OUTCOMES_REDIS_URL"),
    show_envvar=True,
    help="Redis for the outcome log (durable: appendfsync always). Default: --redis-url, or "
    "a second embedded Redis.",
)
@click.option(
    "--decision-secret",
    default="",
    envvar=_env("DECISION_SECRET"),
    show_envvar=True,
    hidden=True,
    help="Key that signs decision ids (default: one shared by all replicas through Redis).",
)
@click.option(
    "--decision-ttl-days",
    type=float,
    default=7.0,
    envvar=_env("DECISION_TTL_DAYS"),
    show_default=True,
    show_envvar=True,
    help="How long decisions are kept for outcomes to be checked against them.",
)
@_file_option("--tls-cert", "Server certificate chain (PEM): gRPC over TLS.")
@_file_option("--tls-key", "Private key of --tls-cert (PEM).")
@_file_option("--tls-client-ca", "CA for client certificates: clients must show one (mTLS).")
@_file_option("--auth-tokens", "File of token hashes and roles (see `tokens add`).")
@_file_option("--jwt-key", "PEM public key or JWKS file to verify JWT bearer tokens.")
@click.option(
    "--jwt-audience",
    default="",
    envvar=_env("JWT_AUDIENCE"),
    show_envvar=True,
    help="The aud claim a JWT must carry.",
)
@click.option(
    "--jwt-issuer",
    default="",
    envvar=_env("JWT_ISSUER"),
    show_envvar=True,
    help="The iss claim a JWT must carry.",
)
@click.option(
    "--jwt-role-claim",
    default="role",
    envvar=_env("JWT_ROLE_CLAIM"),
    show_default=True,
    show_envvar=True,
    help="JWT claim with the caller's role.",
)
@click.option(
    "--reflection/--no-reflection",
    default=True,
    envvar=_env("REFLECTION"),
    show_default=True,
    show_envvar=True,
    help="Serve gRPC reflection.",
)
@click.option(
    "--insecure",
    is_flag=True,
    default=False,
    envvar=_env("INSECURE"),
    show_envvar=True,
    help="Allow a non-loopback --host without TLS and authentication.",
)
def serve(**options: Any) -> None:  # fmt: skip
    """Serve Decide over gRPC (health, reflection, Prometheus metrics)."""
    from decision_engine.server.process import serve as run

    if options["workers"] is None:
        options.pop("workers")
    try:
        settings = Settings(**options)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
    )
    sys.exit(run(settings))


@main.command("decide")
@click.option("--customer", required=True, help="Customer id.")
@click.option("--channel", type=click.Choice(CHANNELS), default="voice", show_default=True)
@click.option("--intent", default="", help="Why the customer is in touch (e.g. cancel).")
@click.option("--queue", default="")
@click.option("--sentiment", type=click.FloatRange(-1, 1), default=None)
@click.option("--interaction", default="", help="Interaction id (records the contact).")
@click.option(
    "--attr",
    "attributes",
    multiple=True,
    metavar="KEY=VALUE",
    help="Context attribute; repeatable.",
)
@click.option("--max-offers", type=int, default=0)
@click.option("--explain", is_flag=True, help="Show why each rule applied or not.")
@click.option("--json", "as_json", is_flag=True, help="Print the response as JSON.")
@_client_options
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds.")
def decide_command(**options: Any) -> None:  # fmt: skip
    """Ask a running server for a decision and print it."""
    from decision_engine.client import call_decide, print_decision

    attributes: dict[str, str] = {}
    for item in options.pop("attributes"):
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--attr")
        attributes[key] = value
    as_json = options.pop("as_json")
    response = call_decide(_connection(options), attributes=attributes, **options)
    if as_json:
        click.echo(json.dumps(response, indent=2))
    else:
        print_decision(response)


@main.command("outcome")
@click.option("--decision", "decision_id", required=True, help="Decision id from Decide.")
@click.option("--offer", "offer_id", default="", help="Offer id (empty for resolved/not_resolved).")
@click.option(
    "--outcome",
    required=True,
    type=click.Choice(
        ["presented", "accepted", "declined", "no_response", "resolved", "not_resolved"]
    ),
)
@click.option("--channel", type=click.Choice(CHANNELS), default=None)
@click.option("--reason", default="")
@_client_options
def outcome_command(**options: Any) -> None:
    """Record what happened to an offer (or to the interaction)."""
    from decision_engine.client import call_record_outcome

    reply = call_record_outcome(_connection(options), **options)
    if reply["duplicate"]:
        click.echo("already recorded (counted once)")
    else:
        click.echo(f"recorded as {reply['outcome_id']}")


@main.group()
def rules() -> None:
    """Check and inspect rule files."""


@rules.command("show")
@_client_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def rules_show(as_json: bool, **options: Any) -> None:  # fmt: skip
    """Show the ruleset a running server is serving (version, when loaded, rule counts)."""
    from decision_engine.client import call_ruleset_status

    status = call_ruleset_status(_connection(options))
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    click.echo(
        f"ruleset {status['version']} ({status['label'] or 'no label'})"
        f" from {status['rules_dir']}\n"
        f"loaded at {status['loaded_at']} by worker pid {status['worker_pid']}\n"
        f"{status['offers']} offers, {status['routing_rules']} routing rules, "
        f"{status['policies']} policies"
    )


@main.group()
def tokens() -> None:
    """Bearer tokens for --auth-tokens files."""


@tokens.command("add")
@click.option(
    "--file",
    "path",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Token file (created 0600 if missing).",
)
@click.option("--role", type=click.Choice(["desktop", "analyst", "admin"]), required=True)
@click.option("--name", required=True, help="Who holds it (kept in the file, not logged).")
def tokens_add(path: Path, role: str, name: str) -> None:  # fmt: skip
    """Create a token, append its hash to the file and print the token (shown once).

    The server re-reads the file within a second: no restart. To revoke or rotate,
    delete the token's line (and add a new one).
    """
    import os

    from decision_engine.server.auth import hash_token, new_token

    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise click.BadParameter("letters, digits, '-', '_' and '.' only", param_hint="--name")
    token = new_token()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as out:
        out.write(f"{hash_token(token)} {role} {name}\n")
    click.echo(token)


@main.group()
def tls() -> None:
    """Certificates for trying TLS locally."""


@tls.command("dev-certs")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--host",
    "hosts",
    multiple=True,
    default=("localhost", "127.0.0.1"),
    show_default=True,
    help="Names and addresses the server certificate is for.",
)
def tls_dev_certs(directory: Path, hosts: tuple[str, ...]) -> None:  # fmt: skip
    """Write a throwaway CA, a server and a client certificate (not for production)."""
    from decision_engine.server.dev_pki import make_dev_pki

    pki = make_dev_pki(directory, hosts=hosts)
    click.echo(
        f"serve --tls-cert {pki.server_cert} --tls-key {pki.server_key} "
        f"--tls-client-ca {pki.ca}\n"
        f"decide --tls-ca {pki.ca} --client-cert {pki.client_cert} --client-key {pki.client_key}"
    )


def _add_commands() -> None:
    from decision_engine.authoring.cases import test_command
    from decision_engine.authoring.check import check_command
    from decision_engine.authoring.report import report_command
    from decision_engine.authoring.simulate import simulate_command
    from decision_engine.store.commands import profiles

    rules.add_command(check_command)
    rules.add_command(test_command)
    main.add_command(profiles)
    main.add_command(simulate_command)
    main.add_command(report_command)


_add_commands()


if __name__ == "__main__":
    main()
