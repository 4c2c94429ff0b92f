"""Money as decimal strings, converted to integer minor units for arithmetic.

Floats never carry money: ``0.1 + 0.2`` is not ``0.3``. An amount is a string of
digits with an optional fraction, no sign, no exponent, no more fraction digits
than the currency has (``"12.50"`` USD -> 1250 cents; ``"12.505"`` is refused).
"""

from __future__ import annotations

import re

_AMOUNT = re.compile(r"(0|[1-9][0-9]{0,17})(?:\.([0-9]{1,9}))?")
_CURRENCY = re.compile(r"[A-Z]{3}")


def parse_amount(text: str, exponent: int) -> int:
    """Decimal string -> integer minor units.

    Raises:
        ValueError: not a non-negative decimal string that fits the currency.
    """
    if not isinstance(text, str):
        raise ValueError("an amount must be a decimal string, not a number")
    m = _AMOUNT.fullmatch(text)
    if m is None:
        raise ValueError(f"{text[:40]!r} is not a plain non-negative decimal amount")
    whole, frac = m.group(1), m.group(2) or ""
    if len(frac) > exponent:
        raise ValueError(f"{text!r} has more than {exponent} fraction digits")
    minor: int = int(whole) * 10**exponent + int(frac.ljust(exponent, "0") or "0")
    return minor


def format_amount(minor: int, exponent: int) -> str:
    """Integer minor units -> decimal string (inverse of :func:`parse_amount`)."""
    if exponent == 0:
        return str(minor)
    whole, frac = divmod(minor, 10**exponent)
    return f"{whole}.{frac:0{exponent}d}"


def is_currency(code: object) -> bool:
    return isinstance(code, str) and bool(_CURRENCY.fullmatch(code))
