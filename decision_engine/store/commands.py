"""`decision-engine profiles …`: import and generate customer profiles."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping
from datetime import date
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
    from decision_engine.ruleset.load import load_schema

    try:
        schema = load_schema(rules)
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
                _import(redis_url, file, schema, fmt, lambda n: bar.update(task, completed=n))
            )
            bar.update(task, completed=total)
    except (RulesetError, ProfileImportError, StoreError) as exc:
        raise click.ClickException(str(exc)) from exc
    _summarize(file, report)
    if report.errors:
        sys.exit(1)


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
def generate_command(count: int, seed: int, out: IO[str], rules: Path) -> None:
    """Write synthetic customers as JSON Lines (ready for `profiles import`)."""
    from decision_engine.ruleset.load import load_schema

    try:
        schema = load_schema(rules)
    except RulesetError as exc:
        raise click.ClickException(str(exc)) from exc
    for profile in generate_profiles(count, seed=seed, today=date.today(), schema=schema):
        out.write(json.dumps(profile) + "\n")


async def _import(
    url: str,
    path: Path,
    schema: Mapping[str, FieldSpec],
    fmt: str,
    progress: ProgressCallback,
) -> ImportReport:
    store = ProfileStore.from_url(url, socket_timeout=10.0)
    try:
        return await import_file(store, path, schema=schema, fmt=fmt, progress=progress)
    finally:
        await store.aclose()


def _count_records(path: Path, fmt: str) -> int:
    # Lines, not records: close enough for a progress bar, and one fast pass.
    with path.open("rb") as handle:
        lines = sum(1 for _ in handle)
    return max(lines - 1, 0) if fmt == "csv" else lines


def _summarize(path: Path, report: ImportReport) -> None:
    click.echo(f"imported {_plural(report.imported, 'profile')} from {path}")
    for line, reason in report.errors[:MAX_LISTED_ERRORS]:
        click.echo(f"{path}:{line}: {reason}", err=True)
    if len(report.errors) > MAX_LISTED_ERRORS:
        more = len(report.errors) - MAX_LISTED_ERRORS
        click.echo(f"… and {_plural(more, 'more bad line')}", err=True)
    if report.errors:
        click.echo(f"{_plural(len(report.errors), 'bad line')} skipped", err=True)
    if report.extra_fields:
        click.echo(
            "warning: fields not in the schema, stored unvalidated: "
            + ", ".join(report.extra_fields),
            err=True,
        )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
