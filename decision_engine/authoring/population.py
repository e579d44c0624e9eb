"""The population a simulation decides for: profiles (read from an import file or
generated for the ruleset's schema), each paired with a context (from a contexts file, or
drawn from a realistic mix)."""

from __future__ import annotations

import csv
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from decision_engine.authoring.contexts import DAY, Contexts, Interaction
from decision_engine.authoring.results import BadLine
from decision_engine.decide.values import Contact, Context, CustomerState
from decision_engine.errors import ProfileImportError
from decision_engine.ruleset.compiled import CompiledRuleset
from decision_engine.ruleset.fields import CONTACT_WINDOW_DAYS
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.store.generate import declared_value, generate_profiles
from decision_engine.store.importer import _csv, _jsonl, canonical_profile, detect_format
from decision_engine.vocabulary import CHANNELS

# The realistic mix a context is drawn from when the contexts file does not give one.
_CHANNEL_MIX = {"voice": 38, "chat": 22, "app": 14, "web": 10, "email": 10, "sms": 3, "social": 3}
_INTENT_MIX = {
    "general_inquiry": 30,
    "billing_dispute": 16,
    "upgrade": 12,
    "cancel": 10,
    "complaint": 9,
    "lost_card": 4,
}
_OTHER_INTENT_WEIGHT = 8
"""Weight of a declared intent the mix does not know by name."""
_PREFERRED_CHANNEL_SHARE = 0.5
# Sentiment is scored live on conversations only, and not always.
_SENTIMENT_CHANNELS = frozenset({"voice", "chat"})
_SENTIMENT_SHARE = 0.8
_SENTIMENT_RANGE = {
    "complaint": (-0.9, -0.2),
    "cancel": (-0.6, 0.2),
    "billing_dispute": (-0.7, 0.3),
}
# Earlier contacts in the window: most customers get in touch once, a few keep trying.
_EARLIER_CONTACTS = {0: 80, 1: 13, 2: 5, 3: 2}
_SAME_INTENT_SHARE = 0.7


@dataclass(frozen=True, slots=True)
class Profiles:
    """Validated profiles in canonical text, as the store would hold them."""

    ids: tuple[str, ...]
    fields: tuple[dict[str, str], ...]
    source: str
    bad_lines: tuple[BadLine, ...] = ()


@dataclass(frozen=True, slots=True)
class Population:
    """What each customer brings to the decision, built once before anything is timed."""

    customer_ids: tuple[str, ...]
    states: tuple[CustomerState, ...]
    contexts: tuple[Context, ...]
    source: str
    bad_lines: tuple[BadLine, ...] = ()
    warnings: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.customer_ids)


def profile_schema(ruleset: CompiledRuleset) -> dict[str, FieldSpec]:
    """The profile fields a ruleset declares (what an import validates)."""
    return {n: s for n, s in ruleset.source.fields.items() if s.source == "profile"}


def declared_intents(ruleset: CompiledRuleset) -> tuple[str, ...]:
    spec = ruleset.source.fields.get("intent")
    return spec.values if spec is not None else ()


def read_profiles(path: Path, schema: Mapping[str, FieldSpec]) -> Profiles:
    """Profiles of a JSON Lines or CSV import file; ProfileImportError if it cannot be read."""
    fmt = detect_format(path)
    by_id: dict[str, dict[str, str]] = {}
    bad: list[BadLine] = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            records = _jsonl(handle) if fmt == "jsonl" else _csv(handle, path)
            for line, record in records:
                try:
                    if isinstance(record, str):
                        raise ValueError(record)
                    customer_id, fields = canonical_profile(record, schema)
                except ValueError as exc:
                    bad.append(BadLine(str(path), line, str(exc)))
                    continue
                by_id[customer_id] = fields  # like an import: a later line replaces
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ProfileImportError(f"{path}: {exc}") from exc
    return Profiles(tuple(by_id), tuple(by_id.values()), f"from {path}", tuple(bad))


def generated_profiles(
    count: int, *, seed: int, today: date, schema: Mapping[str, FieldSpec]
) -> Profiles:
    """Synthetic customers, canonicalized exactly as an import of them would be."""
    ids: list[str] = []
    fields: list[dict[str, str]] = []
    for record in generate_profiles(count, seed=seed, today=today, schema=schema):
        customer_id, canonical = canonical_profile(record, schema)
        ids.append(customer_id)
        fields.append(canonical)
    return Profiles(tuple(ids), tuple(fields), f"generated (seed {seed})")


def build_population(
    profiles: Profiles,
    intents: Sequence[str],
    *,
    now: float,
    seed: int,
    contexts: Contexts | None = None,
    declared: Mapping[str, FieldSpec] | None = None,
) -> Population:
    """Pair every customer with an interaction: from the file when it has one, else drawn
    (by the `declared` fields' populations: the intents' weights, attributes)."""
    mix = _Mix(intents, seed, declared or {})
    paired = contexts.paired if contexts is not None else {}
    free = contexts.free if contexts is not None else ()
    states: list[CustomerState] = []
    chosen: list[Context] = []
    dealt = 0
    for customer_id, fields in zip(profiles.ids, profiles.fields, strict=True):
        interaction = paired.get(customer_id)
        if interaction is None and free:
            # Free contexts are dealt in file order, cycling, so the pairing is predictable.
            interaction = free[dealt % len(free)]
            dealt += 1
        if interaction is None:
            interaction = mix.draw(customer_id, fields, now)
        states.append(CustomerState(fields, interaction.contacts))
        chosen.append(interaction.context)
    warnings = _unmatched(paired, profiles.ids)
    bad = profiles.bad_lines + (contexts.bad_lines if contexts is not None else ())
    return Population(profiles.ids, tuple(states), tuple(chosen), profiles.source, bad, warnings)


def _unmatched(paired: Mapping[str, Interaction], ids: Sequence[str]) -> tuple[str, ...]:
    missing = set(paired) - set(ids)
    if not missing:
        return ()
    sample = ", ".join(sorted(missing)[:5])
    return (f"{len(missing)} context(s) name customers not in the population (e.g. {sample})",)


class _Mix:
    """A seeded draw of realistic contexts over the ruleset's declared intents."""

    def __init__(
        self, intents: Sequence[str], seed: int, declared: Mapping[str, FieldSpec]
    ) -> None:
        # A string seed keeps this stream independent of the profile generator's.
        self.rng = random.Random(f"contexts:{seed}")
        self.channels = list(_CHANNEL_MIX)
        self.channel_weights = list(_CHANNEL_MIX.values())
        self.intents = list(intents) or [""]
        intent = declared.get("intent")
        declared_mix = dict(intent.population.weights) if intent and intent.population else {}
        self.intent_weights = [
            declared_mix.get(i, _INTENT_MIX.get(i, _OTHER_INTENT_WEIGHT)) for i in self.intents
        ]
        # Only attributes that declare a population are drawn; the others stay absent.
        self.attributes = [
            s for s in declared.values() if s.source == "attribute" and s.population is not None
        ]
        self.earlier = list(_EARLIER_CONTACTS)
        self.earlier_weights = list(_EARLIER_CONTACTS.values())

    def draw(self, customer_id: str, profile: Mapping[str, str], now: float) -> Interaction:
        rng = self.rng
        preferred = profile.get("preferred_channel")
        if preferred in CHANNELS and rng.random() < _PREFERRED_CHANNEL_SHARE:
            channel = str(preferred)
        else:
            channel = rng.choices(self.channels, self.channel_weights)[0]
        intent = rng.choices(self.intents, self.intent_weights)[0]
        context = Context(
            channel=channel,
            intent=intent,
            sentiment=self._sentiment(channel, intent),
            attributes=self._attributes(now),
        )
        return Interaction(context, self._earlier(customer_id, intent, now))

    def _attributes(self, now: float) -> dict[str, str]:
        today = datetime.fromtimestamp(now, UTC).date()
        out: dict[str, str] = {}
        for spec in self.attributes:
            if spec.population and spec.population.present_with not in ("", *out):
                continue  # present exactly when the attribute it names is
            value = declared_value(spec, self.rng, today, 0)
            if value is not None:
                out[spec.name] = spec.to_text(spec.parse(value))
        return out

    def _sentiment(self, channel: str, intent: str) -> float | None:
        rng = self.rng
        if channel not in _SENTIMENT_CHANNELS or rng.random() >= _SENTIMENT_SHARE:
            return None
        low_high = _SENTIMENT_RANGE.get(intent)
        value = rng.uniform(*low_high) if low_high else rng.gauss(0.15, 0.3)
        return round(max(-1.0, min(1.0, value)), 2)

    def _earlier(self, customer_id: str, intent: str, now: float) -> tuple[Contact, ...]:
        rng = self.rng
        count = rng.choices(self.earlier, self.earlier_weights)[0]
        window = CONTACT_WINDOW_DAYS - 0.1
        return tuple(
            Contact(
                f"{customer_id}-earlier-{n}",
                rng.choices(self.channels, self.channel_weights)[0],
                intent
                if rng.random() < _SAME_INTENT_SHARE
                else rng.choices(self.intents, self.intent_weights)[0],
                now - rng.uniform(0.05, window) * DAY,
            )
            for n in range(count)
        )
