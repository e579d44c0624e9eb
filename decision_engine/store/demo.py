"""Demo data loaded on the first start of the embedded server.

The named customers (C-1001 Alice…) are the telco demo's: they are loaded only when they
fit the served schema (every field of theirs declared as a profile field, every value
valid), so serving another business's ruleset does not answer with Alice. The synthetic
customers are generated from the served schema (its `population:` declarations, or the
demo generator's shape), so any ruleset can be explored.

Dates are relative to the day of loading, so each named customer shows the
situation the README describes whichever day the demo is started.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date, timedelta
from itertools import chain

from redis.exceptions import RedisError

from decision_engine.decide.values import Contact
from decision_engine.errors import ConfigError, StoreUnavailableError
from decision_engine.ruleset.schema import FieldSpec
from decision_engine.store.generate import generate_profiles
from decision_engine.store.importer import canonical_profile
from decision_engine.store.keys import DEMO_MARKER
from decision_engine.store.profiles import ProfileStore

DEMO_SEED = 7
_DAY = 86400.0


def demo_profiles(today: date) -> list[dict[str, object]]:
    """The named demo customers, one per situation."""

    def days(n: int) -> str:
        return (today + timedelta(days=n)).isoformat()

    def customer(customer_id: str, first_name: str, segment: str, clv: float, churn: float,
                 tenure: int, cost: float, plan: str, contract_end: int,
                 channel: str) -> dict[str, object]:  # fmt: skip
        return {
            "customer_id": customer_id,
            "first_name": first_name,
            "segment": segment,
            "clv": clv,
            "churn_risk": churn,
            "tenure_months": tenure,
            "cost_to_serve": cost,
            "plan": plan,
            "contract_end": days(contract_end),
            "preferred_channel": channel,
        }

    farid = customer("C-1006", "Farid", "silver", 3000, 0.3, 28, 220, "standard", 300, "voice")
    farid["last_complaint"] = days(-5)
    named = [
        customer("C-1001", "Alice", "platinum", 48000, 0.82, 74, 300, "premium", 200, "voice"),
        customer("C-1002", "Bob", "bronze", 180, 0.7, 8, 420, "basic", 150, "app"),
        customer("C-1003", "Chloe", "gold", 9000, 0.2, 40, 150, "standard", 400, "chat"),
        customer("C-1004", "Dan", "silver", 2500, 0.4, 20, 200, "standard", 250, "voice"),
        customer("C-1005", "Eva", "gold", 6000, 0.35, 35, 180, "standard", 30, "email"),
        farid,
        customer("C-1007", "Grace", "gold", 7000, 0.1, 60, 120, "standard", 300, "app"),
    ]
    for record in named:
        record.update(_REACH.get(str(record["customer_id"]), {}))
    return named


# Where the proactive notices of the demo reach each named customer (rules/notices.yaml).
_REACH: dict[str, dict[str, object]] = {
    "C-1001": {"phone": "+31 6 1000 1001", "sms_opt_in": True, "email": "alice@example.com",
               "email_opt_in": True, "timezone": "Europe/Amsterdam", "postcode": "1011"},
    "C-1002": {"phone": "+31 6 1000 1002", "sms_opt_in": False, "app_token": "app-C-1002",
               "timezone": "Europe/Amsterdam", "postcode": "1011"},
    "C-1003": {"email": "chloe@example.com", "email_opt_in": True, "app_token": "app-C-1003",
               "timezone": "Europe/London", "postcode": "1012"},
    "C-1004": {"phone": "+31 6 1000 1004", "sms_opt_in": True, "postcode": "1011"},
    "C-1005": {"email": "eva@example.com", "email_opt_in": True, "phone": "+31 6 1000 1005",
               "sms_opt_in": True, "postcode": "3511"},
    "C-1006": {"phone": "+31 6 1000 1006", "sms_opt_in": True, "postcode": "3511"},
    "C-1007": {"app_token": "app-C-1007", "push_opt_out": False, "postcode": "1011",
               "timezone": "America/New_York"},
}  # fmt: skip
REACH_FIELDS = frozenset(name for fields in _REACH.values() for name in fields)


def demo_contacts(now: float) -> list[tuple[str, Contact]]:
    """Earlier contacts: Dan's next call is his third about billing in a week.

    Ids carry the day, so a start on a later day adds fresh contacts inside the window.
    """
    day = int(now // _DAY)
    return [
        ("C-1004", Contact(f"demo-C-1004-{day}-1", "chat", "billing_dispute", now - 2.5 * _DAY)),
        ("C-1004", Contact(f"demo-C-1004-{day}-2", "email", "billing_dispute", now - 1 * _DAY)),
    ]


def named_customers_fit(schema: Mapping[str, FieldSpec], today: date) -> bool:
    """Whether every named demo customer fits the profile fields of `schema`."""
    for record in demo_profiles(today):
        for name, raw in record.items():
            spec = schema.get(name)
            if name == "customer_id" or (spec is None and name in REACH_FIELDS):
                continue  # where notices reach them: only where the schema has it
            if spec is None or spec.source != "profile":
                return False
            try:
                spec.parse(raw)
            except ValueError:
                return False
    return True


async def ensure_demo_data(
    store: ProfileStore,
    *,
    schema: Mapping[str, FieldSpec],
    today: date,
    now: float,
    generated: int = 1000,
    audiences: tuple[str, ...] = (),
) -> bool:
    """Refresh the named demo customers (when they fit the schema, see the module doc);
    load the synthetic ones, generated for the schema, once. True on that first load.

    The named customers' dates are relative to today, so they are rewritten on every
    start to keep each demo situation true whatever the day.
    """
    try:
        first = not await store.client.exists(DEMO_MARKER)
    except RedisError as exc:
        raise StoreUnavailableError(f"profile store: {exc}") from exc
    synthetic = generate_profiles(
        generated if first else 0, seed=DEMO_SEED, today=today, schema=schema
    )
    named = named_customers_fit(schema, today)
    await store.put_profiles(
        _canonical(chain(demo_profiles(today) if named else (), synthetic), schema),
        audiences=audiences,
    )
    for customer_id, contact in demo_contacts(now) if named else ():
        # HSETNX on a fixed interaction id: loading twice never doubles a contact.
        await store.load(customer_id, interaction=contact, now=now)
    try:
        # The marker is set last, so a load cut short is redone on the next start.
        await store.client.set(DEMO_MARKER, today.isoformat())
    except RedisError as exc:
        raise StoreUnavailableError(f"profile store: {exc}") from exc
    return first


def _canonical(
    records: Iterator[dict[str, object]], schema: Mapping[str, FieldSpec]
) -> Iterator[tuple[str, dict[str, str]]]:
    for record in records:
        try:
            yield canonical_profile(record, schema)
        except ValueError as exc:
            raise ConfigError(
                f"demo customer {record.get('customer_id')} does not fit the ruleset schema: {exc}"
            ) from exc
