"""Synthetic moments in the demo's shapes, of any number, within durable_rules' limits.

The demo's schema, offers, routing and arbitration are copied; the moments are drawn
from a seeded RNG (one event, counts, sequences, absences over every event kind), each
kept only if the moments so far still pass moments/limits.py, so the same arguments
always give the same, loadable files.

    python -m bench.gen_moments DIR --moments 100
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path
from typing import Any

import yaml

from decision_engine.errors import RulesetError
from decision_engine.moments.definitions import compile_moments
from decision_engine.moments.limits import limit_problems
from decision_engine.ruleset.load import load_ruleset

DEMO_RULES = Path(__file__).resolve().parent.parent / "rules"
WORDS = ("cancel", "refund", "manager", "broken", "slow", "bill", "upgrade", "roaming", "5g", "fee")


def _step(rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(
        ("utterance", "utterance", "sentiment", "sentiment", "hold_ended", "silence",
         "agent_action", "intent_changed", "ivr_step", "hold_started", "ended")
    )  # fmt: skip
    if kind == "hold_started":
        return {"event": kind}
    if kind == "ended":
        return {"event": kind, "where": f"resolved == {rng.choice(['true', 'false'])}"}
    if kind == "utterance":
        step: dict[str, Any] = {"event": kind, "says": rng.sample(WORDS, rng.randint(1, 3))}
        if rng.random() < 0.5:
            step["where"] = f'speaker == "{rng.choice(["customer", "agent"])}"'
        return step
    if kind == "sentiment":
        return {"event": kind, "where": f"value < {rng.choice([-0.2, -0.4, -0.6])}"}
    if kind in ("hold_ended", "silence"):
        return {"event": kind, "where": f"duration_s >= {rng.choice([10, 30, 60, 120, 180])}"}
    if kind == "agent_action":
        action = rng.choice(["offer_declined", "disclosure_read", "guidance_dismissed"])
        return {"event": kind, "where": f'action == "{action}"'}
    if kind == "intent_changed":
        return {
            "event": kind,
            "where": f'intent == "{rng.choice(["cancel", "payment", "complaint"])}"',
        }
    return {"event": kind, "where": f'step == "menu-{rng.randint(1, 5)}"'}


def _pattern(rng: random.Random) -> dict[str, Any]:
    # Mostly one event, as in the demo: durable_rules' 64-entry alpha stack is shared by
    # every test on one event kind, and a join costs several.
    shape = rng.choices(("event", "count", "sequence", "absence"), (70, 10, 10, 10))[0]
    if shape == "count":
        return {"count": rng.randint(2, 3), "within": f"{rng.choice([1, 2, 5])}m", **_step(rng)}
    if shape == "sequence":
        second = _step(rng) | {"within": f"{rng.choice([30, 60, 120])}s"}
        return {"sequence": [_step(rng), second]}
    if shape == "absence":
        return {"after": _step(rng), "missing": _step(rng), "within": f"{rng.choice([30, 60])}s"}
    return _step(rng)


def moment(n: int, rng: random.Random) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "id": f"synthetic-{n}",
        "pattern": _pattern(rng),
        "guidance": {
            "kind": rng.choice(["coaching", "knowledge", "compliance", "offer"]),
            "title": f"Synthetic moment {n}",
            "text": "Something happened {elapsed_s} s into the call.",
        },
    }
    if rng.random() < 0.3:
        spec["when"] = f"clv >= {rng.choice([500, 2000, 10000])}"
    if rng.random() < 0.3:
        spec["repeat"] = {"cooldown": "1m"}
    if rng.random() < 0.2:
        spec["decide"] = True
    return spec


def write_moments(directory: Path, *, moments: int, seed: int = 17) -> Path:
    """A rules directory with the demo's rules and `moments` synthetic moments."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in DEMO_RULES.glob("*.yaml"):
        if path.name != "moments.yaml":
            shutil.copy(path, directory / path.name)
    rng = random.Random(seed)
    kept: list[dict[str, Any]] = []
    target = directory / "moments.yaml"
    n = 0
    while len(kept) < moments:
        if n > 20 * moments:
            raise ValueError(f"only {len(kept)} moments fit durable_rules' limits, not {moments}")
        candidate = moment(n, rng)
        n += 1
        target.write_text(yaml.safe_dump({"moments": [*kept, candidate]}, sort_keys=False))
        try:
            fits = not limit_problems(compile_moments(load_ruleset(directory).moments))
        except RulesetError:
            continue  # a shape the loader refuses (a count of `ended`, say): draw again
        if fits:
            kept.append(candidate)
    target.write_text(yaml.safe_dump({"moments": kept}, sort_keys=False))
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a rules directory with synthetic moments")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--moments", type=int, default=100)
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    write_moments(args.directory, moments=args.moments, seed=args.seed)


if __name__ == "__main__":
    main()
