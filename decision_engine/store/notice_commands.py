"""`decision-engine notices …`: the outbox, dead letters and notice logs, for operators.

They talk to Redis directly: the embedded Redis servers `serve` runs under --data-dir,
or the ones given with --redis-url / --outcomes-redis-url. No customer data is printed
beyond what the operator asks for (`list --customer`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from decision_engine.config import setting_option
from decision_engine.errors import RulesetError, StoreUnavailableError
from decision_engine.store.connection import Connection, PipelinedConnection
from decision_engine.store.embedded import running_url
from decision_engine.store.keys import NOTICE_DEAD, NOTICE_HELD, NOTICE_OUTBOX, notice_log_key
from decision_engine.store.outbox import dead_letters, oldest_age, revive
from decision_engine.store.replies import pairs

T = TypeVar("T")


def _urls(options: dict[str, Any]) -> tuple[str, str]:
    """The decision and the durable (outcome log) Redis URLs."""
    data_dir: Path = options["data_dir"]
    decision = options["redis_url"] or running_url(data_dir / "redis")
    if decision is None:
        raise click.ClickException(
            f"no --redis-url given and no embedded Redis of serve running in "
            f"{data_dir / 'redis'}: start serve (make run), or pass --redis-url"
        )
    durable = options["outcomes_redis_url"] or running_url(data_dir / "redis-outcomes") or decision
    return decision, durable


def _redis_options(command: Callable[..., None]) -> Callable[..., None]:
    for name, text in (
        ("redis_url", "The decision Redis (notice logs); default: serve's embedded one."),
        ("outcomes_redis_url", "The durable Redis (the outbox); default: serve's embedded one."),
    ):
        option = setting_option(name)
        command = click.option(option.flag, name, envvar=option.env, help=text)(command)
    data_dir = setting_option("data_dir")
    return click.option(
        data_dir.flag, "data_dir", type=click.Path(path_type=Path), default=data_dir.default,
        envvar=data_dir.env, show_default=True, help="Where serve keeps its embedded Redis.",
    )(command)  # fmt: skip


def _run(url: str, work: Callable[[Connection], Awaitable[T]]) -> T:
    async def main() -> T:
        connection = PipelinedConnection(url)
        try:
            return await work(connection)
        finally:
            await connection.aclose()

    try:
        return asyncio.run(main())
    except StoreUnavailableError as exc:
        raise click.ClickException(f"Redis is not available: {exc}") from exc


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if at else "-"


@click.group()
def notices() -> None:
    """The notice outbox, dead letters, the key-date sweep and customers' notice logs."""


@notices.command("status")
@_redis_options
def status_command(**options: Any) -> None:
    """How far delivery is: notices waiting, held for later, dead-lettered."""
    _, durable = _urls(options)

    async def read(conn: Connection) -> tuple[int, int, int, float]:
        waiting, held, dead, lag = await asyncio.gather(
            conn.call("XLEN", NOTICE_OUTBOX), conn.call("ZCARD", NOTICE_HELD),
            conn.call("XLEN", NOTICE_DEAD), oldest_age(conn, now=time.time()),
        )  # fmt: skip
        return int(waiting), int(held), int(dead), lag

    waiting, held, dead, lag = _run(durable, read)
    click.echo(f"outbox: {waiting} waiting (oldest {lag:.1f} s), {held} held for later, "
               f"{dead} dead letters")  # fmt: skip


@notices.command("list")
@click.option("--customer", required=True, help="The customer whose notice log to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@_redis_options
def list_command(customer: str, as_json: bool, **options: Any) -> None:
    """The notices a customer was sent (what Decide and the agent see)."""
    decision, _ = _urls(options)

    async def read(conn: Connection) -> dict[str, str]:
        return pairs([str(p) for p in await conn.call("HGETALL", notice_log_key(customer))])

    records = {k: json.loads(v) for k, v in sorted(_run(decision, read).items())}
    if as_json:
        click.echo(json.dumps(records, indent=2, sort_keys=True))
        return
    if not records:
        click.echo(f"no notices for {customer}")
    for notice_id, r in records.items():
        click.echo(f"{notice_id:<28} {r.get('status', ''):<14} {r.get('channel', ''):<6} "
                   f"{_when(float(r.get('at') or 0))}  {r.get('text', '')}")  # fmt: skip


@notices.command("dead-letters")
@click.option("--count", default=50, show_default=True, help="How many, oldest first.")
@_redis_options
def dead_letters_command(count: int, **options: Any) -> None:
    """Notices that could not be delivered, with why (retry them with `notices retry`)."""
    _, durable = _urls(options)
    letters = _run(durable, lambda conn: dead_letters(conn, count=count))
    if not letters:
        click.echo("no dead letters")
    for entry_id, entry in letters:
        decided = _when(entry.decided_at)
        click.echo(f"{entry_id}  {entry.notice_id} via {entry.channel}, {entry.attempt} "
                   f"attempt(s), decided {decided}: {entry.last_error}")  # fmt: skip


@notices.command("retry")
@click.argument("entry_ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every dead letter.")
@_redis_options
def retry_command(entry_ids: tuple[str, ...], every: bool, **options: Any) -> None:
    """Put dead letters back on the outbox (attempts reset), by id or --all."""
    if not entry_ids and not every:
        raise click.UsageError("name the dead letters (ids from `notices dead-letters`) or --all")
    _, durable = _urls(options)

    async def move(conn: Connection) -> tuple[int, list[str]]:
        letters = await dead_letters(conn, count=1_000_000 if every else 100_000)
        wanted = {e: entry for e, entry in letters if every or e in entry_ids}
        moved = [e for e in wanted if await revive(conn, e, wanted[e])]
        return len(moved), [e for e in entry_ids if e not in wanted]

    moved, unknown = _run(durable, move)
    click.echo(f"{moved} notice(s) back on the outbox")
    if unknown:
        raise click.ClickException(f"no dead letter with id {', '.join(unknown)}")


@notices.command("sweep")
@click.option(
    "--rules", "rules_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=setting_option("rules_dir").default, envvar=setting_option("rules_dir").env,
    show_default=True, help="The ruleset whose key-date events to raise.",
)  # fmt: skip
@click.option("--force", is_flag=True, help="Sweep even if today's sweep has run.")
@_redis_options
def sweep_command(rules_dir: Path, force: bool, **options: Any) -> None:
    """Raise today's key-date events (e.g. contracts ending in 60 days) now."""
    from decision_engine.ruleset.compiled import load_compiled
    from decision_engine.store.key_dates import sweep

    try:
        ruleset = load_compiled(rules_dir)
    except RulesetError as exc:
        raise click.ClickException(f"{rules_dir}: {exc.problems[0]}") from exc
    decision_url, durable_url = _urls(options)

    async def work(decision: Connection) -> str:
        from decision_engine.store.key_dates import run_sweep

        durable = PipelinedConnection(durable_url)
        try:
            now = time.time()
            report = (
                await sweep(decision, durable, ruleset, now=now)
                if force
                else await run_sweep(decision, durable, ruleset, owner="cli", now=now)
            )
        finally:
            await durable.aclose()
        if report is None:
            return "today's sweep has run (or is running); --force to sweep again"
        return (f"swept {report.profiles} profiles: {report.raised} events raised, "
                f"{report.duplicates} raised before")  # fmt: skip

    click.echo(_run(decision_url, work))
