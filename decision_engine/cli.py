"""The `decision-engine` command: serve, decide, rules, profiles."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from decision_engine.config import ENV_PREFIX, Settings
from decision_engine.decide.model import CHANNELS
from decision_engine.errors import ConfigError


def _env(name: str) -> str:
    return ENV_PREFIX + name


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
@click.option("--host", default="0.0.0.0", envvar=_env("HOST"), show_default=True, show_envvar=True)
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
@click.option(
    "--target",
    default="localhost:50051",
    envvar=_env("TARGET"),
    show_default=True,
    show_envvar=True,
    help="Server address.",
)
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
    response = call_decide(attributes=attributes, **options)
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
@click.option(
    "--target",
    default="localhost:50051",
    envvar=_env("TARGET"),
    show_default=True,
    show_envvar=True,
    help="Server address.",
)
def outcome_command(**options: Any) -> None:
    """Record what happened to an offer (or to the interaction)."""
    from decision_engine.client import call_record_outcome

    reply = call_record_outcome(**options)
    if reply["duplicate"]:
        click.echo("already recorded (counted once)")
    else:
        click.echo(f"recorded as {reply['outcome_id']}")


@main.group()
def rules() -> None:
    """Check and inspect rule files."""


@rules.command("show")
@click.option(
    "--target",
    default="localhost:50051",
    envvar=_env("TARGET"),
    show_default=True,
    show_envvar=True,
    help="Server address.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def rules_show(target: str, as_json: bool) -> None:  # fmt: skip
    """Show the ruleset a running server is serving (version, when loaded, rule counts)."""
    from decision_engine.client import call_ruleset_status

    status = call_ruleset_status(target=target)
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
