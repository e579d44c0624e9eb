"""Write this example's population: customers.jsonl and contexts.jsonl (seeded, so the
files are the same on every run). The mix is an energy supplier's, not the demo's: most
customers pay by direct debit and owe nothing, about one in eight is on the priority
services register, and arrears are rare but long-tailed.

    .venv/bin/python examples/energy/population/generate.py

Dates are relative to REFERENCE, so simulate with `--now 2025-03-03`.
"""

from __future__ import annotations

import json
import math
import random
from datetime import date, timedelta
from pathlib import Path

COUNT = 1000
SEED = 7
REFERENCE = date(2025, 3, 3)
HERE = Path(__file__).resolve().parent
NAMES = ("Ana", "Ben", "Chloe", "Dara", "Emil", "Fatma", "Gus", "Hana", "Ivo", "Jo",
         "Kim", "Lena", "Mo", "Nia", "Omar", "Pia", "Raj", "Sara", "Tom", "Una")  # fmt: skip
CHANNELS = {"voice": 45, "chat": 20, "app": 12, "web": 10, "email": 10, "sms": 3}
INTENTS = {
    "high_bill": 20, "general_inquiry": 18, "meter_reading": 14, "move_home": 11,
    "tariff_switch": 9, "payment_difficulty": 8, "cancel": 8, "outage": 9, "solar_feed_in": 3,
}  # fmt: skip


def pick(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), list(weights.values()))[0]


def customer(rng: random.Random, n: int) -> dict[str, object]:
    tenure = min(240, int(rng.expovariate(1 / 60)))
    payment = pick(rng, {"direct_debit": 70, "on_receipt": 18, "prepayment": 12})
    if payment == "prepayment":
        tariff = "prepayment"
    else:
        tariff = pick(rng, {"standard_variable": 35, "fixed": 45, "green": 16, "ev": 4})
    has_ev = tariff == "ev" or rng.random() < 0.05
    kwh = min(20000.0, max(500.0, rng.lognormvariate(math.log(2900), 0.45)))
    if has_ev:
        kwh = min(20000.0, kwh + 2500)
    vulnerable = rng.random() < 0.12
    # Most owe nothing; prepayment and pay-on-receipt customers fall behind more often.
    behind = {"direct_debit": 0.08, "on_receipt": 0.35, "prepayment": 0.15}[payment]
    arrears, days = 0.0, 0
    if rng.random() < behind * (1.5 if vulnerable else 1.0):
        arrears = round(min(5000.0, rng.lognormvariate(math.log(220), 1.0)), 2)
        days = min(365, int(rng.expovariate(1 / 40)) + 1)
    clv = rng.lognormvariate(math.log(1800) + 0.2 * (tenure / 60 - 1), 0.8)
    churn = rng.betavariate(2, 6) + (0.25 if tariff == "standard_variable" else 0.0)
    profile: dict[str, object] = {
        "customer_id": f"E-{n:06d}",
        "first_name": rng.choice(NAMES),
        "clv": round(clv, 2),
        "churn_risk": round(min(churn, 1.0), 3),
        "tenure_months": tenure,
        "preferred_channel": pick(rng, CHANNELS),
        "tariff": tariff,
        "fuel": pick(rng, {"dual_fuel": 55, "electricity": 35, "gas": 10}),
        "meter_type": "smart" if rng.random() < (0.8 if payment == "prepayment" else 0.6) else "legacy",
        "payment_method": payment,
        "arrears_eur": arrears,
        "days_in_arrears": days,
        "vulnerable": vulnerable,
        "annual_kwh": round(kwh),
        "has_solar": rng.random() < 0.08,
        "has_ev": has_ev,
    }
    if tariff in ("fixed", "green", "ev"):
        profile["contract_end"] = (REFERENCE + timedelta(days=rng.randint(-20, 540))).isoformat()
    return profile


def context(rng: random.Random, profile: dict[str, object]) -> dict[str, object]:
    intent = pick(rng, INTENTS)
    if profile["arrears_eur"] and rng.random() < 0.3:
        intent = "payment_difficulty"
    channel = str(profile["preferred_channel"]) if rng.random() < 0.4 else pick(rng, CHANNELS)
    if intent == "outage":
        channel = "voice"
    attributes: dict[str, object] = {}
    if intent == "outage":
        attributes["outage_status"] = "confirmed" if rng.random() < 0.6 else "reported"
    elif rng.random() < 0.01:
        attributes["outage_status"] = "confirmed"  # calls about something else in an outage area
    if intent == "high_bill":
        attributes["bill_change_pct"] = round(rng.uniform(5, 90))
    record: dict[str, object] = {"customer_id": profile["customer_id"], "channel": channel, "intent": intent}
    if attributes:
        record["attributes"] = attributes
    if channel in ("voice", "chat") and rng.random() < 0.7:
        low_high = {"high_bill": (-0.7, 0.1), "payment_difficulty": (-0.8, 0.0), "outage": (-0.8, 0.0)}
        low, high = low_high.get(intent, (-0.3, 0.6))
        record["sentiment"] = round(rng.uniform(low, high), 2)
    return record


def main() -> None:
    rng = random.Random(SEED)
    customers = [customer(rng, n) for n in range(1, COUNT + 1)]
    contexts = [context(rng, c) for c in customers]
    for name, rows in (("customers.jsonl", customers), ("contexts.jsonl", contexts)):
        with (HERE / name).open("w", encoding="utf-8") as out:
            out.writelines(json.dumps(row) + "\n" for row in rows)


if __name__ == "__main__":
    main()
