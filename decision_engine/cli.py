"""The `decision-engine` command: serve, decide, rules, profiles."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from decision_engine.config import SettingOption, Settings, env_var, setting_options
from decision_engine.errors import ConfigError
from decision_engine.vocabulary import CHANNELS

if TYPE_CHECKING:
    from decision_engine.client import Connection

F = TypeVar("F", bound=Callable[..., Any])


def _settings_options(command: F) -> F:
    """`serve`'s options, one for each Settings field."""
    for setting in reversed(setting_options()):
        command = click.option(*_param_decls(setting), **_option_attrs(setting))(command)
    return command


def _param_decls(setting: SettingOption) -> tuple[str, ...]:
    flag = setting.flag
    if setting.annotation is bool and setting.default is True:
        flag += "/--no-" + flag.removeprefix("--")  # on by default: it needs a way off
    return (flag, setting.name)


def _option_attrs(setting: SettingOption) -> dict[str, Any]:
    attrs: dict[str, Any] = {"envvar": setting.env, "show_envvar": True, "hidden": setting.hidden}
    if setting.help:
        attrs["help"] = setting.help
    if setting.machine_default is not None:
        attrs["help"] += f" [default: {setting.machine_default}]."
        attrs["default"] = None  # unset: the field's default applies
    elif setting.default is not None:
        attrs["default"] = setting.default
        if setting.default != "" and setting.default is not False:
            attrs["show_default"] = True
    annotation = setting.annotation
    if annotation is bool:
        attrs["is_flag"] = True
    elif annotation in (Path, Path | None):
        attrs["type"] = click.Path(path_type=Path, dir_okay=not setting.file)
    elif annotation in (int, float):
        attrs["type"] = annotation
    elif annotation not in (str, str | None):
        raise TypeError(f"Settings.{setting.name}: no CLI type for {annotation}")
    return attrs


def _client_options(command: F) -> F:
    """How the CLI reaches a server: address, TLS, bearer token."""
    for option in reversed(
        [
            click.option("--target", default="localhost:50051", envvar=env_var("TARGET"),
                         show_default=True, show_envvar=True, help="Server address."),
            click.option("--tls-ca", type=click.Path(path_type=Path, dir_okay=False),
                         envvar=env_var("TLS_CA"), show_envvar=True,
                         help="Use TLS, trusting this CA (PEM)."),
            click.option("--tls", "use_tls", is_flag=True, envvar=env_var("TLS"), show_envvar=True,
                         help="Use TLS with the system's trusted CAs."),
            click.option("--client-cert", type=click.Path(path_type=Path, dir_okay=False),
                         envvar=env_var("CLIENT_CERT"), show_envvar=True,
                         help="Client certificate (PEM), for mTLS."),
            click.option("--client-key", type=click.Path(path_type=Path, dir_okay=False),
                         envvar=env_var("CLIENT_KEY"), show_envvar=True,
                         help="Key of --client-cert (PEM)."),
            click.option("--token", default="", envvar=env_var("TOKEN"), show_envvar=True,
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
@_settings_options
def serve(**options: Any) -> None:  # fmt: skip
    """Serve Decide over gRPC (health, reflection, Prometheus metrics)."""
    from decision_engine.server.process import serve as run

    try:  # an option left unset (None) leaves the field's default, e.g. --workers
        settings = Settings(**{name: value for name, value in options.items() if value is not None})
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

    attributes = dict(_pair(item, "--attr") for item in options.pop("attributes"))
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
def event() -> None:
    """Business events: what makes the engine send customers notices."""


@event.command("publish")
@click.option("--type", "event_type", required=True, help="An event type the rules declare.")
@click.option("--customer", default="", help="The customer it is about.")
@click.option(
    "--audience",
    default="",
    metavar="FIELD=VALUE",
    help="Instead of --customer: every customer with this profile value.",
)
@click.option(
    "--attr", "attributes", multiple=True, metavar="KEY=VALUE", help="Attribute; repeatable."
)
@click.option("--id", "event_id", default="", help="Event id [default: a new one].")
@_client_options
def event_publish(
    event_type: str,
    customer: str,
    audience: str,
    attributes: tuple[str, ...],
    event_id: str,
    **options: Any,
) -> None:
    """Publish a business event; the notice rules decide who is told what."""
    import uuid

    from decision_engine.client import call_publish_event

    pairs = dict(_pair(item, "--attr") for item in attributes)
    reply = call_publish_event(
        _connection(options),
        event_id=event_id or f"cli-{uuid.uuid4()}",
        event_type=event_type,
        customer=customer,
        audience=_pair(audience, "--audience") if audience else None,
        attributes=pairs,
    )
    status = reply["status"].removeprefix("EVENT_STATUS_").lower()
    click.echo(f"event {reply['event_id']}: {status}")


def _pair(item: str, hint: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep:
        raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=hint)
    return key, value


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
def interaction() -> None:
    """Live guidance: replay a recorded interaction, watch one's guidance."""


@interaction.command("replay")
@click.argument("path", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--fast", is_flag=True, help="Send every event at once (the last one now).")
@click.option(
    "--as",
    "interaction_id",
    default="",
    help="Interaction id to replay as [default: the recorded one, with -r<time>].",
)
@_client_options
def interaction_replay(path: Path, fast: bool, interaction_id: str, **options: Any) -> None:
    """Send a recorded interaction's events (JSON Lines of InteractionEvent), timed as
    recorded from now on, and print the guidance timeline as the agent sees it."""
    import time

    from decision_engine.client.interaction import read_recording, replay

    try:
        recorded = read_recording(path)[0].interaction_id
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    as_id = interaction_id or f"{recorded}-r{int(time.time())}"
    guidance = replay(_connection(options), path, fast=fast, interaction_id=as_id)
    click.echo(f"{len(guidance)} guidance item(s); interaction {as_id} ended")


@interaction.command("watch")
@click.argument("interaction_id")
@click.option("--after", "after_seq", type=int, default=0, help="Only guidance after this seq.")
@_client_options
def interaction_watch(interaction_id: str, after_seq: int, **options: Any) -> None:  # fmt: skip
    """Print an interaction's guidance (what it has, then live) until it ends."""
    from decision_engine.client.interaction import follow

    follow(_connection(options), interaction_id, after_seq=after_seq)


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
@click.option(
    "--role", type=click.Choice(["publisher", "desktop", "analyst", "admin"]), required=True
)
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
    from decision_engine.analytics.report import report_command
    from decision_engine.authoring.cases import test_command
    from decision_engine.authoring.check import check_command
    from decision_engine.authoring.simulate_command import simulate_command
    from decision_engine.store.commands import profiles
    from decision_engine.store.notice_commands import notices

    rules.add_command(check_command)
    rules.add_command(test_command)
    main.add_command(profiles)
    main.add_command(notices)
    main.add_command(simulate_command)
    main.add_command(report_command)


_add_commands()


if __name__ == "__main__":
    main()
