"""Rendering one script on the request path: plain, formatted and conditional placeholders.

python -m bench.scripts

Formats resolve their Babel pattern and Locale when the ruleset compiles; the last row is
what calling Babel's convenience functions per render would cost instead.
"""

from __future__ import annotations

import functools
import timeit
from collections.abc import Callable
from datetime import date

from babel import Locale
from babel.dates import format_date
from babel.numbers import format_currency

from decision_engine.ruleset.template import compile_template, parse_template

END = date(2027, 1, 5).toordinal()
FACTS = {"clv": 4800.0, "contract_end": END, "tenure_months": 30}
SCRIPTS = {
    "plain": "Your limit is {clv}, contract ends {contract_end}. Call us.",
    "formatted": "Your limit is {clv:money}, contract ends {contract_end:date long}. Call us.",
    "conditional": "{if tenure_months >= 24}Your limit is {clv:money}{else}No limit{end}, "
    "contract ends {contract_end:date long}. Call us.",
}


def per_call_us(fn: Callable[[], str], number: int = 50_000) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def naive() -> str:
    """Babel's convenience functions, which look up locale data on every call."""
    end = date.fromordinal(END)
    money = format_currency(FACTS["clv"], "EUR", locale="de_DE")
    return f"Your limit is {money}, contract ends {format_date(end, 'long', locale='de_DE')}."


def main() -> None:
    for name in ("en_US", "de_DE"):
        locale = Locale.parse(name)
        for kind, text in SCRIPTS.items():
            render = compile_template(
                parse_template(text),
                dates=frozenset({"contract_end"}),
                locale=locale,
                currency="EUR",
            )
            took = per_call_us(functools.partial(render, FACTS, {}))
            print(f"{name} {kind:12} {took:6.2f} us/render")
    print(f"de_DE naive Babel  {per_call_us(naive):6.2f} us/render")


if __name__ == "__main__":
    main()
