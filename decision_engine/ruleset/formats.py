"""Formats of script placeholders (`{clv:money}`, `{contract_end:date long}`), via Babel.

A format is parsed with its template, checked against the field's type when the ruleset
loads, and compiled into a function that holds the Babel pattern and Locale it needs:
the request path only calls `pattern.apply`, it never looks up locale data.

    money [digits]     a number as the ruleset's currency (digits default: the currency's)
    number [digits]    a number with the locale's grouping (default: up to 2 decimals)
    percent [digits]   a fraction as a percentage, 0.25 -> 25% (default: no decimals)
    date [style]       a date: short, medium (default), long or full
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.numbers import (
    NumberPattern,
    UnknownCurrencyError,
    get_currency_precision,
    get_currency_symbol,
    validate_currency,
)

FORMATS = ("money", "number", "percent", "date")
DATE_STYLES = ("short", "medium", "long", "full")
DEFAULT_LOCALE = "en_US"
"""Formats without a `locale:` in the ruleset read as in the US (plain `{field}` is unaffected)."""
_NUMBER_KINDS = ("number", "integer")
_MAX_DIGITS = 6

Show = Callable[[Any], str]
"""A compiled format: a typed value (dates as ordinals) to text."""


class FormatError(ValueError):
    """A format that does not parse; the message says why."""


@dataclass(frozen=True, slots=True)
class Format:
    """A placeholder's format: `money`, `number 2`, `date long`..."""

    name: str
    """One of FORMATS."""
    style: str = ""
    """Digits (money, number, percent) or a date style; "" for the default."""


def parse_format(text: str) -> Format:
    """`money`, `number 2`, `date long`; FormatError for anything else."""
    words = text.split()
    if not words:
        raise FormatError(f"empty format after ':' (known: {', '.join(FORMATS)})")
    name, styles = words[0], words[1:]
    if name not in FORMATS:
        raise FormatError(f"unknown format {name!r} (known: {', '.join(FORMATS)})")
    if len(styles) > 1:
        raise FormatError(f"format {name} takes at most one style, got {' '.join(styles)!r}")
    style = styles[0] if styles else ""
    if style and name == "date" and style not in DATE_STYLES:
        raise FormatError(f"date style must be one of {', '.join(DATE_STYLES)}, got {style!r}")
    if style and name != "date" and not (style.isdigit() and int(style) <= _MAX_DIGITS):
        raise FormatError(f"{name} takes a number of decimals (0 to {_MAX_DIGITS}), got {style!r}")
    return Format(name, style)


def kind_problem(fmt: Format, kind: str, *, currency: str) -> str | None:
    """Why `fmt` cannot show a field of type `kind` (None when it can)."""
    want = ("date",) if fmt.name == "date" else _NUMBER_KINDS
    if kind not in want:
        return f"format {fmt.name} needs a {' or '.join(want)} field, not a {kind}"
    if fmt.name == "money" and not currency:
        return "format money needs the ruleset's currency (ruleset: currency: EUR)"
    return None


def locale_problem(name: str) -> str | None:
    """Why `name` is not a locale Babel knows (None when it is)."""
    try:
        Locale.parse(name)
    except (UnknownLocaleError, ValueError) as exc:
        return f"unknown locale {name!r} (write it like en_US or de_DE): {exc}"
    return None


def currency_problem(code: str) -> str | None:
    """Why `code` is not an ISO 4217 currency code (None when it is)."""
    try:
        validate_currency(code)
    except UnknownCurrencyError:
        return f"unknown currency {code!r} (an ISO 4217 code such as EUR, USD, GBP)"
    return None


def compile_format(fmt: Format, locale: Locale, currency: str) -> Show:
    """The function that shows a value in `fmt`, with its Babel pattern resolved now."""
    if fmt.name == "date":
        pattern = locale.date_formats[fmt.style or "medium"]

        def show_date(value: Any) -> str:
            day = date.fromordinal(value) if isinstance(value, int) else value
            return str(pattern.apply(day, locale))

        return show_date
    number = _number_pattern(fmt, locale, currency)

    def show_number(value: Any) -> str:
        return str(number.apply(value, locale))

    return show_number


def _number_pattern(fmt: Format, locale: Locale, currency: str) -> NumberPattern:
    """A private copy of the locale's pattern with the decimals (and currency) fixed now."""
    if fmt.name == "money":
        shared = locale.currency_formats["standard"]
        # Without digits the currency decides (JPY has none, EUR two).
        default = (get_currency_precision(currency),) * 2
    elif fmt.name == "percent":
        shared, default = locale.percent_formats[None], (0, 0)
    else:
        shared, default = locale.decimal_formats[None], (0, 2)
    # A copy: the locale's own pattern is shared by every caller of Babel in the process.
    pattern: NumberPattern = copy.copy(shared)
    pattern.frac_prec = (int(fmt.style),) * 2 if fmt.style else default
    if fmt.name == "money":
        # The symbol put into the pattern once, rather than looked up by apply() per call.
        symbol = get_currency_symbol(currency, locale)
        positive, negative = pattern.prefix
        pattern.prefix = (
            _with_symbol(positive, currency, symbol),
            _with_symbol(negative, currency, symbol),
        )
        positive, negative = pattern.suffix
        pattern.suffix = (
            _with_symbol(positive, currency, symbol),
            _with_symbol(negative, currency, symbol),
        )
    return pattern


def _with_symbol(affix: str, currency: str, symbol: str) -> str:
    # The standard pattern names the currency by its symbol (¤), or its code (¤¤).
    return affix.replace("¤¤", currency.upper()).replace("¤", symbol)
