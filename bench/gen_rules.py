"""Synthetic rulesets in the demo's shapes, of any size.

The demo's `schema` (rules/ruleset.yaml) and `arbitration` (rules/arbitration.yaml) are
copied verbatim; offers and routing rules are generated from a seeded RNG, so the same
arguments always give the same files.

    python -m bench.gen_rules DIR --offers 1000 --routes 100
"""

from __future__ import annotations

import argparse
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

DEMO_RULES = Path(__file__).resolve().parent.parent / "rules"
CATEGORIES = ("retention", "service", "service_recovery", "renewal", "upsell", "cross_sell")
QUEUES = (
    "retention_specialists", "retention", "card_security", "escalations", "customer_care",
    "digital_assist", "billing", "sales", "tech_support", "vip_desk",
)  # fmt: skip
CHANNEL_SETS = (
    ["voice"], ["voice", "chat"], ["chat", "app", "web"], ["voice", "chat", "app", "web"],
    ["email", "sms"], ["app", "web"],
)  # fmt: skip


def demo_schema_values() -> tuple[list[str], list[str], list[str]]:
    """(intents, segments, plans) declared by the demo schema."""
    schema = yaml.safe_load((DEMO_RULES / "ruleset.yaml").read_text())["schema"]
    profile = schema["profile"]
    return list(schema["intents"]), profile["segment"]["values"], profile["plan"]["values"]


class _Conditions:
    """Draws `when` terms of the kinds the demo uses, with varied thresholds."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.intents, self.segments, self.plans = demo_schema_values()

    def _pick(self, values: list[str], most: int) -> str:
        chosen = self.rng.sample(values, self.rng.randint(1, min(most, len(values))))
        return "[" + ", ".join(f'"{v}"' for v in chosen) + "]"

    def intent(self) -> str:
        if self.rng.random() < 0.75:
            return f'intent == "{self.rng.choice(self.intents)}"'
        return f"intent in {self._pick(self.intents, 3)}"

    def draw(self, *, intent_share: float, extra: tuple[int, int]) -> list[str]:
        r = self.rng
        terms = [self.intent()] if r.random() < intent_share else []
        makers: list[tuple[float, Callable[[], str]]] = [
            (0.30, lambda: f"segment in {self._pick(self.segments, 2)}"),
            (0.45, self.clv),
            (0.20, lambda: f"churn_risk >= {r.choice((0.3, 0.5, 0.6, 0.7, 0.8))}"),
            (0.20, lambda: f"tenure_months >= {r.choice((6, 12, 24, 36, 60))}"),
            (
                0.10,
                lambda: (
                    "days_to_contract_end >= 0 and days_to_contract_end <= "
                    f"{r.choice((30, 60, 90))}"
                ),
            ),
            (0.05, lambda: "contacts_7d >= 3"),
            (0.15, lambda: f"plan in {self._pick(self.plans, 2)}"),
            (0.05, lambda: 'intent == "complaint" or days_since(last_complaint) <= 30'),
        ]
        # Weighted sample without replacement (Efraimidis-Spirakis keys).
        makers.sort(key=lambda m: r.random() ** (1 / m[0]), reverse=True)
        terms += [make() for _, make in makers[: r.randint(*extra)]]
        return terms

    def clv(self) -> str:
        r = self.rng
        low = r.choice((500, 1000, 2500, 5000, 10000, 20000))
        roll = r.random()
        if roll < 0.6:
            return f"clv >= {low}"
        if roll < 0.85:
            return f"clv < {r.choice((500, 1000, 2000, 3000))}"
        return f"clv >= {low} and clv < {low * r.choice((2, 4))}"


def _offer(n: int, rng: random.Random, conds: _Conditions) -> dict[str, Any]:
    category = rng.choice(CATEGORIES)
    if n <= len(CATEGORIES):
        # Every category has an offer, so the demo's policies name only real ones (a
        # category no offer has is an error); the draw above keeps the stream unchanged.
        category = CATEGORIES[n - 1]
    offer: dict[str, Any] = {
        "id": f"offer-{n:04d}",
        "title": f"Synthetic {category.replace('_', ' ')} offer {n}",
        "category": category,
        "when": conds.draw(intent_share=0.6, extra=(1, 3)),
    }
    if rng.random() < 0.4:
        offer["channels"] = list(rng.choice(CHANNEL_SETS))
    offer["value"] = rng.choice(
        (
            f"clv * {rng.choice((0.05, 0.1, 0.15, 0.25))}",
            f"max(clv * churn_risk * {rng.choice((0.2, 0.5))}, {rng.choice((30, 50, 100))})",
            str(rng.choice((50, 100, 240, 400))),
            f"cost_to_serve * {rng.choice((0.2, 0.3))}",
        )
    )
    offer["cost"] = rng.choice((0, 10, 25, 50, 80, 300))
    offer["propensity"] = round(rng.uniform(0.05, 0.6), 2)
    script = f"{{first_name|Hello}}, as a {{segment|valued}} customer you can have offer {n}."
    if rng.random() < 0.2:
        offer["params"] = {"credit": "min(round(clv * 0.001) * 10, 1000)"}
        script += " I can apply a credit of EUR {credit} today."
    if rng.random() < 0.2:
        channel = rng.choice(("voice", "chat", "app"))
        offer["weights"] = [
            {"when": f'channel == "{channel}"', "factor": rng.choice((0.8, 1.2, 1.5))}
        ]
    offer["script"] = script
    return offer


def _route(n: int, rng: random.Random, conds: _Conditions) -> dict[str, Any]:
    route: dict[str, Any] = {
        "id": f"route-{n:04d}",
        "when": conds.draw(intent_share=0.7, extra=(1, 2)),
        "queue": rng.choice(QUEUES),
        "priority": rng.randint(1, 9),
        "precedence": 10 * n,
        "reason": f"Synthetic routing rule {n}",
    }
    if rng.random() < 0.1:
        route["skip_ivr"] = True
    return route


def write_ruleset(directory: Path, *, offers: int, routes: int, seed: int = 7) -> None:
    """Write ruleset.yaml, arbitration.yaml (demo copies), offers.yaml and routing.yaml."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("ruleset.yaml", "arbitration.yaml"):
        shutil.copyfile(DEMO_RULES / name, directory / name)
    rng = random.Random(seed)
    conds = _Conditions(rng)
    offer_list = [_offer(n, rng, conds) for n in range(1, offers + 1)]
    routing = {
        "default": {"queue": "general", "priority": 5, "reason": "No special situation"},
        "rules": [_route(n, rng, conds) for n in range(1, routes + 1)],
    }
    (directory / "offers.yaml").write_text(_dump({"offers": offer_list}))
    (directory / "routing.yaml").write_text(_dump({"routing": routing}))


def _dump(data: object) -> str:
    return yaml.safe_dump(data, sort_keys=False, width=1000, allow_unicode=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--offers", type=int, default=1000)
    parser.add_argument("--routes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    write_ruleset(args.directory, offers=args.offers, routes=args.routes, seed=args.seed)
    from decision_engine.ruleset.compiled import load_compiled

    ruleset = load_compiled(args.directory)
    print(f"{args.directory}: {ruleset.rule_count} rules, version {ruleset.version}")


if __name__ == "__main__":
    main()
