"""Live rule changes: notice a change, check it off the request path, then tell the workers.

The supervisor polls the rules directory (cheap stats), waits for the files to
settle (an editor or `git checkout` writes several files), loads and compiles the
new ruleset, and only when it is good signals every worker to swap. A bad change
is logged with file:line and counted; the last good ruleset keeps serving.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from decision_engine.errors import RulesetError
from decision_engine.moments.trial import trial
from decision_engine.ruleset.compiled import CompiledRuleset, load_compiled
from decision_engine.ruleset.load import rule_files
from decision_engine.server import metrics

log = logging.getLogger("decision_engine.reload")

Fingerprint = tuple[tuple[str, int, int], ...]


def load_for_serving(directory: Path) -> CompiledRuleset:
    """The compiled ruleset, its moments first exercised in a throwaway process: a
    moments file that would crash durable_rules never reaches a moment process (a
    segfault cannot be caught). RulesetError when either fails."""
    ruleset = load_compiled(directory)
    if ruleset.source.moments:
        trial(directory)
    return ruleset


def fingerprint(directory: Path) -> Fingerprint:
    """Names, sizes and modification times of the rule files: changes when any file does."""
    try:
        files = rule_files(directory)
    except OSError:
        return ()
    out = []
    for path in files:
        try:
            stat = path.stat()
        except OSError:
            continue
        out.append((path.name, stat.st_size, stat.st_mtime_ns))
    return tuple(out)


@dataclass
class RulesWatcher:
    """Decides when a new, valid ruleset is ready to go live."""

    directory: Path
    version: str
    seen: Fingerprint = field(default=())
    pending: Fingerprint | None = None

    def __post_init__(self) -> None:
        self.seen = fingerprint(self.directory)

    def poll(self) -> CompiledRuleset | None:
        """Call periodically; returns a new good ruleset once the files have settled."""
        current = fingerprint(self.directory)
        if current == self.seen:
            self.pending = None
            return None
        if current != self.pending:
            # Changed since the last poll: wait one more poll for the writer to finish.
            self.pending = current
            return None
        self.seen, self.pending = current, None
        return self._load()

    def _load(self) -> CompiledRuleset | None:
        try:
            ruleset = load_for_serving(self.directory)
        except RulesetError as exc:
            metrics.RELOAD_FAILURES.inc()
            for problem in exc.problems:
                log.error("%s", problem)
            log.error("rule change rejected; still serving ruleset %s", self.version)
            return None
        if ruleset.version == self.version:
            return None
        log.info(
            "ruleset %s (%s) checked: %d offers, %d routing rules; replacing %s",
            ruleset.version,
            ruleset.source.label or "no label",
            len(ruleset.offers),
            len(ruleset.routes),
            self.version,
        )
        self.version = ruleset.version
        return ruleset
