"""`says:` lists: which of them an utterance matches, found once per utterance.

durable_rules has no case-insensitive word search (only its own small regex engine, with
limits of its own), so the words are matched here and the utterance carries the result
into durable_rules as a flat list of tags (`says: ["w0", "w3"]`): a step's `says` is
then one array test there, however many phrases it lists.

An entry matches when it is one of the utterance's keywords or phrases, or when it
occurs in its text or phrases as whole words, whatever the case.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from decision_engine.moments.model import EventValue


@dataclass(frozen=True, slots=True)
class PhraseSet:
    """One distinct `says:` list and its tag."""

    tag: str
    phrases: tuple[str, ...]
    pattern: re.Pattern[str]


def phrase_sets(lists: Iterable[tuple[str, ...]]) -> dict[tuple[str, ...], PhraseSet]:
    """A tag for each distinct list (equal lists share one), in first-seen order."""
    out: dict[tuple[str, ...], PhraseSet] = {}
    for phrases in lists:
        if phrases and phrases not in out:
            out[phrases] = PhraseSet(f"w{len(out)}", phrases, _pattern(phrases))
    return out


def _pattern(phrases: Sequence[str]) -> re.Pattern[str]:
    # Words are escaped (nothing in a rule file is a regex); inner spaces match any run
    # of spaces or tabs, never a line break, so two keywords never join into a phrase.
    alternatives = "|".join(r"[ \t]+".join(re.escape(w) for w in p.split()) for p in phrases)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def matched_tags(sets: Sequence[PhraseSet], data: Mapping[str, EventValue]) -> list[str]:
    """The tags of the sets this utterance matches, in tag order."""
    if not sets:
        return []
    parts: list[str] = []
    for name in ("text", "phrases", "keywords"):
        value = data.get(name)
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, tuple):
            parts.extend(value)
    haystack = "\n".join(parts)
    return [s.tag for s in sets if s.pattern.search(haystack)]
