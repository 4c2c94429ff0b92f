"""Checks for the options of adapter constructors, shared by every adapter.

An option of the wrong type must be refused when the object is built, with a
message naming the option and what it takes, never accepted and then turned
into a denial of every call (``NO_TOKEN: the admission hook failed (TypeError)``).
Each check returns the value, so an adapter writes ``self.x = check(x, ...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from .errors import ConfigurationError

__all__ = [
    "callable_or_fixed",
    "guard_option",
    "name_option",
    "name_or_callable",
    "number_option",
    "one_of",
    "optional_callable",
]

T = TypeVar("T")
_NAME_LIMIT = 256


def _shown(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__ must not hide the real error
        text = "<unprintable>"
    return f"{type(value).__name__} {text[:60]}"


def _refuse(owner: str, option: str, expected: str, value: object) -> ConfigurationError:
    return ConfigurationError(f"{owner}: {option} must be {expected}; got {_shown(value)}")


def _is_name(value: object) -> bool:
    if not isinstance(value, str) or not value or len(value) > _NAME_LIMIT:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def guard_option(value: T, owner: str) -> T:
    """``value`` is an :class:`~execauth_core.Guard`."""
    from .guard import Guard

    if not isinstance(value, Guard):
        raise _refuse(owner, "guard", "an execauth_core.Guard", value)
    return value


def name_option(value: T, option: str, owner: str, *, optional: bool = False) -> T:
    """``value`` is a non-empty name of at most 256 characters (or ``None`` if ``optional``)."""
    if value is None and optional:
        return value
    if not _is_name(value):
        expected = "a non-empty string of at most 256 characters" + (" or None" if optional else "")
        raise _refuse(owner, option, expected, value)
    return value


def name_or_callable(value: T, option: str, owner: str, *, takes: str, optional: bool = False) -> T:
    """``value`` is a name, or a callable (given ``takes``) that returns one."""
    if (value is None and optional) or callable(value) or _is_name(value):
        return value
    expected = f"a non-empty string or a callable of {takes}" + (" or None" if optional else "")
    raise _refuse(owner, option, expected, value)


def optional_callable(value: T, option: str, owner: str, *, takes: str) -> T:
    """``value`` is ``None`` or a callable."""
    if value is None or callable(value):
        return value
    raise _refuse(owner, option, f"None or a callable of {takes}", value)


def one_of(value: T, option: str, owner: str, choices: Iterable[object]) -> T:
    """``value`` is one of ``choices`` (a bool never stands in for 0 or 1)."""
    allowed = tuple(choices)
    if not any(value is c or (type(value) is type(c) and value == c) for c in allowed):
        raise _refuse(owner, option, "one of " + ", ".join(repr(c) for c in allowed), value)
    return value


def number_option(value: T, option: str, owner: str, *, minimum: float, integer: bool = False) -> T:
    """``value`` is a number (an ``int`` if ``integer``) of at least ``minimum``, not a bool."""
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    number: Any = value
    if isinstance(value, bool) or not isinstance(value, kinds) or not number >= minimum:
        kind = "an integer" if integer else "a number"
        raise _refuse(owner, option, f"{kind} of at least {minimum:g}", value)
    return value


def callable_or_fixed(value: Any, option: str, owner: str, *, takes: str) -> Callable[..., Any]:
    """A callable as it is, or a fixed name as a callable that returns it."""
    name_or_callable(value, option, owner, takes=takes)
    if callable(value):
        return value  # type: ignore[no-any-return]
    fixed = value
    return lambda *_args, **_kwargs: fixed
