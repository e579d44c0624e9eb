"""`simulate`: read the rulesets and the population, run them with a progress bar, and
print or write the report."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from decision_engine.authoring.contexts import read_contexts
from decision_engine.authoring.population import (
    Population,
    build_population,
    declared_intents,
    generated_profiles,
    profile_schema,
    read_profiles,
)
from decision_engine.authoring.render_html import render_html
from decision_engine.authoring.render_json import report_json
from decision_engine.authoring.render_text import print_report
from decision_engine.authoring.results import SimulationReport
from decision_engine.authoring.simulation import simulate
from decision_engine.config import setting_option
from decision_engine.errors import ProfileImportError, RulesetError, tally
from decision_engine.ruleset.compiled import CompiledRuleset, load_compiled
from decision_engine.store.commands import parse_now

DEFAULT_COUNT = 10_000
MAX_LISTED_ERRORS = 50


def _load(directory: Path, what: str) -> CompiledRuleset:
    try:
        return load_compiled(directory)
    except RulesetError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(
            f"{tally(exc.problems)} in the {what} ruleset {directory}; cannot simulate",
            err=True,
        )
        sys.exit(2)


def _population(ruleset: CompiledRuleset, options: Mapping[str, Any], now: float) -> Population:
    schema = profile_schema(ruleset)
    intents = declared_intents(ruleset)
    seed: int = options["seed"]
    path: Path | None = options["profiles"]
    try:
        if path is not None:
            profiles = read_profiles(path, schema)
        else:
            count = DEFAULT_COUNT if options["count"] is None else options["count"]
            today = datetime.fromtimestamp(now, UTC).date()
            profiles = generated_profiles(count, seed=seed, today=today, schema=schema)
        contexts_path: Path | None = options["contexts"]
        contexts = read_contexts(contexts_path, intents, now=now) if contexts_path else None
    except ProfileImportError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    return build_population(
        profiles, intents, now=now, seed=seed, contexts=contexts, declared=ruleset.source.fields
    )


def _report_problems(population: Population) -> None:
    for bad in population.bad_lines[:MAX_LISTED_ERRORS]:
        click.echo(str(bad), err=True)
    extra = len(population.bad_lines) - MAX_LISTED_ERRORS
    if extra > 0:
        click.echo(f"… and {extra:,} more bad line(s)", err=True)
    if population.bad_lines:
        click.echo(f"{len(population.bad_lines):,} bad line(s) skipped", err=True)
    for warning in population.warnings:
        click.echo(f"warning: {warning}", err=True)


def _run_with_progress(
    ruleset: CompiledRuleset,
    baseline: CompiledRuleset | None,
    population: Population,
    now: float,
    options: Mapping[str, Any],
) -> SimulationReport:
    with Progress(
        TextColumn("{task.description:>8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as bar:
        tasks = {"new": bar.add_task("new", total=len(population))}
        if baseline is not None:
            tasks["baseline"] = bar.add_task("baseline", total=len(population))
        return simulate(
            ruleset,
            population,
            now=now,
            rules_dir=str(options["rules"]),
            baseline=baseline,
            baseline_dir=str(options["baseline"] or ""),
            progress=lambda label, done: bar.update(tasks[label], completed=done),
        )


@click.command("simulate")
@click.option(
    "--rules",
    type=click.Path(path_type=Path),
    default=Path("rules"),
    envvar=setting_option("rules_dir").env,
    show_default=True,
    show_envvar=True,
    help="Rules directory to simulate.",
)
@click.option(
    "--profiles",
    "--population",
    "profiles",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Customers as JSON Lines or CSV (the import format). Default: generated for "
    "the ruleset's schema.",
)
@click.option(
    "--contexts",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON Lines contexts (channel, intent, sentiment, attributes, customer_id).",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    help=f"Customers to generate when no --profiles [default: {DEFAULT_COUNT}].",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of generated data.")
@click.option(
    "--now",
    "now_text",
    metavar="ISO",
    help="Instant of the decisions; generated dates are relative to its day [default: now].",
)
@click.option(
    "--baseline",
    type=click.Path(path_type=Path),
    help="Rules directory to compare with (the one live today).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--html",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also write a self-contained HTML report with charts.",
)
def simulate_command(**options: Any) -> None:
    """What-if: run a population through a ruleset (and compare with a baseline)."""
    # Read the clock once: the core reads none, and both rulesets see the same instant.
    now = parse_now(options["now_text"])
    if options["profiles"] is not None and options["count"] is not None:
        raise click.UsageError("--count applies only to generated customers (no --profiles)")
    ruleset = _load(options["rules"], "new")
    baseline = _load(options["baseline"], "baseline") if options["baseline"] else None
    population = _population(ruleset, options, now)
    _report_problems(population)
    if not len(population):
        click.echo("error: no customers to simulate", err=True)
        sys.exit(1)
    report = _run_with_progress(ruleset, baseline, population, now, options)
    if options["as_json"]:
        click.echo(json.dumps(report_json(report), indent=2))
    else:
        print_report(report, Console())
    if options["html"] is not None:
        options["html"].write_text(render_html(report), encoding="utf-8")
        click.echo(f"wrote {options['html']}", err=True)
