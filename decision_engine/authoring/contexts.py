"""A contexts file for a simulation: live contexts, bound to customers or free, and each
customer's earlier contacts in the window."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from decision_engine.authoring.results import BadLine
from decision_engine.decide.values import Contact, Context
from decision_engine.errors import ProfileImportError
from decision_engine.store.importer import _jsonl
from decision_engine.vocabulary import CHANNELS

DAY = 86_400.0
"""Seconds in a day: `days_ago` and the contact window are in days."""
_CONTEXT_KEYS = frozenset(
    {"customer_id", "channel", "intent", "sentiment", "attributes", "queue", "recent_contacts"}
)


@dataclass(frozen=True, slots=True)
class Interaction:
    """One live context and the customer's earlier contacts in the window."""

    context: Context
    contacts: tuple[Contact, ...] = ()


@dataclass(frozen=True, slots=True)
class Contexts:
    """A contexts file: contexts bound to customers, and free ones dealt to the rest."""

    paired: Mapping[str, Interaction]
    free: tuple[Interaction, ...]
    bad_lines: tuple[BadLine, ...] = ()


def read_contexts(path: Path, intents: Sequence[str], *, now: float) -> Contexts:
    """A JSON Lines contexts file; ProfileImportError if it cannot be read."""
    paired: dict[str, Interaction] = {}
    free: list[Interaction] = []
    bad: list[BadLine] = []
    try:
        with path.open(encoding="utf-8-sig") as handle:
            for line, record in _jsonl(handle):
                try:
                    if isinstance(record, str):
                        raise ValueError(record)
                    customer_id, interaction = _interaction(record, intents, now, line)
                    if customer_id and customer_id in paired:
                        raise ValueError(f"a second context for customer {customer_id}")
                except ValueError as exc:
                    bad.append(BadLine(str(path), line, str(exc)))
                    continue
                if customer_id:
                    paired[customer_id] = interaction
                else:
                    free.append(interaction)
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileImportError(f"{path}: {exc}") from exc
    return Contexts(paired, tuple(free), tuple(bad))


def _interaction(
    record: Mapping[str, object], intents: Sequence[str], now: float, line: int
) -> tuple[str, Interaction]:
    unknown = sorted(set(record) - _CONTEXT_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}")
    customer_id = record.get("customer_id", "")
    if isinstance(customer_id, int) and not isinstance(customer_id, bool):
        customer_id = str(customer_id)
    if not isinstance(customer_id, str):
        raise ValueError("customer_id must be text")
    channel = _channel(record.get("channel"))
    intent = _intent(record.get("intent", ""), intents)
    queue = record.get("queue", "")
    if not isinstance(queue, str):
        raise ValueError("queue must be text")
    context = Context(
        channel=channel,
        intent=intent,
        queue=queue,
        sentiment=_sentiment(record.get("sentiment")),
        attributes=_attributes(record.get("attributes", {})),
    )
    contacts = _recent_contacts(record.get("recent_contacts", []), intents, now, line)
    return customer_id.strip(), Interaction(context, contacts)


def _channel(raw: object) -> str:
    if raw not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}, got {raw!r}")
    assert isinstance(raw, str)
    return raw


def _intent(raw: object, intents: Sequence[str]) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise ValueError("intent must be text")
    # A misspelt intent would silently match nothing and skew every figure.
    if raw and intents and raw not in intents:
        raise ValueError(f"intent {raw!r} is not one of {', '.join(intents)}")
    return raw


def _sentiment(raw: object) -> float | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not -1 <= raw <= 1:
        raise ValueError(f"sentiment must be a number -1..1, got {raw!r}")
    return float(raw)


def _attributes(raw: object) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise ValueError("attributes must be an object")
    out: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            out[key] = str(value)
        elif value is not None:
            raise ValueError(f"attribute {key} must be text or a number")
    return out


def _recent_contacts(
    raw: object, intents: Sequence[str], now: float, line: int
) -> tuple[Contact, ...]:
    if not isinstance(raw, list):
        raise ValueError("recent_contacts must be a list")
    contacts = []
    for n, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ValueError("recent_contacts items must be objects")
        days_ago = item.get("days_ago", 1)
        if isinstance(days_ago, bool) or not isinstance(days_ago, int | float) or days_ago < 0:
            raise ValueError("recent_contacts days_ago must be a number >= 0")
        channel = _channel(item.get("channel"))
        intent = _intent(item.get("intent", ""), intents)
        contacts.append(Contact(f"sim-{line}-{n}", channel, intent, now - days_ago * DAY))
    return tuple(contacts)
