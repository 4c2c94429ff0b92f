"""Bind a call's arguments by the function's signature.

A policy sees the same argument names whether the agent called
``f(5000, "bob")`` or ``f(amount=5000, to="bob")``: positional arguments can
never slip past a rule written against names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any


def bind_arguments(
    fn: Callable[..., Any], args: tuple[Any, ...] = (), kwargs: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Return every argument of ``fn(*args, **kwargs)`` by parameter name, defaults
    applied. ``*args`` collect under their parameter name as a list, ``**kwargs``
    are merged in by name.

    Raises:
        TypeError: the arguments do not fit the signature.
    """
    sig = inspect.signature(fn)
    bound = sig.bind(*args, **dict(kwargs or {}))
    bound.apply_defaults()
    result: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            result[name] = list(value)
        elif kind is inspect.Parameter.VAR_KEYWORD:
            for key, item in value.items():
                if key in result:
                    raise TypeError(f"argument {key!r} given twice")
                result[key] = item
        else:
            result[name] = value
    return result
