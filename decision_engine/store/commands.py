"""`decision-engine profiles …`: import and generate customer profiles."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from decision_engine.config import setting_option
from decision_engine.errors import ProfileImportError, RulesetError, StoreError
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.store.generate import generate_profiles
from decision_engine.store.importer import (
    FORMATS,
    ImportReport,
    ProgressCallback,
    detect_format,
    import_file,
)
from decision_engine.store.profiles import ProfileStore

MAX_LISTED_ERRORS = 50
MISMATCH_LINES = 20
"""When this many leading lines (or all, if fewer) fail on one field, the file was written
for another schema: said once instead of once per line."""
_MISMATCH_MIN = 3


@click.group()
def profiles() -> None:
    """Import and generate customer profiles."""


@profiles.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--redis-url", envvar=setting_option("redis_url").env, required=True, help="redis://…"
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Default: from the extension.")
@click.option(
    "--rules",
    envvar=setting_option("rules_dir").env,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("rules"),
    show_default=True,
    help="Ruleset whose schema validates the fields.",
)
def import_command(file: Path, redis_url: str, fmt: str | None, rules: Path) -> None:
    """Import profiles from JSON Lines or CSV; bad lines are listed and skipped."""
    # Imported here: the ruleset loader is only needed by this command.
    from decision_engine.ruleset.load import load_profile_rules

    try:
        schema, audiences = load_profile_rules(rules)
        fmt = fmt or detect_format(file)
        total = _count_records(file, fmt)
        with Progress(
            TextColumn("importing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        ) as bar:
            task = bar.add_task("import", total=total)
            report = asyncio.run(
                _import(
                    redis_url,
                    file,
                    schema,
                    audiences,
                    fmt,
                    lambda n: bar.update(task, completed=n),
                )
            )
            bar.update(task, completed=total)
    except (RulesetError, ProfileImportError, StoreError) as exc:
        raise click.ClickException(str(exc)) from exc
    _summarize(file, report, rules, fmt)
    if report.errors:
        sys.exit(1)


def parse_now(text: str | None) -> float:
    """Epoch seconds of an ISO date or time (UTC when no offset); now when not given."""
    if not text:
        return time.time()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"not an ISO date or time: {text!r}", param_hint="--now") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@profiles.command("generate")
@click.option("--count", type=click.IntRange(min=0), required=True, help="How many customers.")
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed, same customers.")
@click.option("--out", type=click.File("w"), default="-", help="JSON Lines file (default stdout).")
@click.option(
    "--rules",
    envvar=setting_option("rules_dir").env,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=setting_option("rules_dir").default,
    show_default=True,
    help="Ruleset whose schema the customers follow.",
)
@click.option(
    "--now",
    "now_text",
    metavar="ISO",
    help="Day the generated dates are relative to [default: today]; as simulate's --now.",
)
def generate_command(
    count: int, seed: int, out: IO[str], rules: Path, now_text: str | None
) -> None:
    """Write synthetic customers as JSON Lines (ready for `profiles import`)."""
    from decision_engine.ruleset.load import load_schema

    try:
        schema = load_schema(rules)
    except RulesetError as exc:
        raise click.ClickException(str(exc)) from exc
    today = datetime.fromtimestamp(parse_now(now_text), UTC).date()
    for profile in generate_profiles(count, seed=seed, today=today, schema=schema):
        out.write(json.dumps(profile) + "\n")


async def _import(
    url: str,
    path: Path,
    schema: Mapping[str, FieldSpec],
    audiences: tuple[str, ...],
    fmt: str,
    progress: ProgressCallback,
) -> ImportReport:
    store = ProfileStore.from_url(url, socket_timeout=10.0)
    try:
        return await import_file(
            store, path, schema=schema, audiences=audiences, fmt=fmt, progress=progress
        )
    finally:
        await store.aclose()


def _count_records(path: Path, fmt: str) -> int:
    # Lines, not records: close enough for a progress bar, and one fast pass.
    with path.open("rb") as handle:
        lines = sum(1 for _ in handle)
    return max(lines - 1, 0) if fmt == "csv" else lines


def _summarize(path: Path, report: ImportReport, rules: Path, fmt: str) -> None:
    click.echo(f"imported {_plural(report.imported, 'profile')} from {path}")
    errors = list(report.errors)
    field = _mismatched_field(report, first_line=2 if fmt == "csv" else 1)
    if field is not None:
        on_field = [e for e in errors if _field_of(e[1]) == field]
        click.echo(
            f"{path}: the profiles do not match the schema of {rules}/: {on_field[0][1]} "
            f"({len(on_field)} of {report.imported + len(errors)} lines fail on {field}); "
            "pass --rules with the ruleset they were written for",
            err=True,
        )
        errors = [e for e in errors if _field_of(e[1]) != field]
    for line, reason in errors[:MAX_LISTED_ERRORS]:
        click.echo(f"{path}:{line}: {reason}", err=True)
    if len(errors) > MAX_LISTED_ERRORS:
        more = len(errors) - MAX_LISTED_ERRORS
        click.echo(f"… and {_plural(more, 'more bad line')}", err=True)
    if report.errors:
        click.echo(f"{_plural(len(report.errors), 'bad line')} skipped", err=True)
    if report.extra_fields:
        click.echo(
            "warning: fields not in the schema, stored unvalidated: "
            + ", ".join(report.extra_fields),
            err=True,
        )


def _mismatched_field(report: ImportReport, *, first_line: int) -> str | None:
    """The field every one of the leading lines fails on, if they all fail on one."""
    count = min(MISMATCH_LINES, report.imported + len(report.errors))
    leading = report.errors[:count]
    if count < _MISMATCH_MIN or len(leading) < count:
        return None
    # The first lines of the file, one after another.
    first, last = leading[0][0], leading[-1][0]
    if first != first_line or last - first != count - 1:
        return None
    fields = {_field_of(reason) for _, reason in leading}
    field = fields.pop() if len(fields) == 1 else None
    return field or None


def _field_of(reason: str) -> str:
    """The field a validation reason names ("segment: …"), or ""."""
    name, colon, _ = reason.partition(":")
    return name if colon and name.isidentifier() else ""


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
