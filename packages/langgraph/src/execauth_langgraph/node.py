"""A decorator for custom graph nodes that perform side effects themselves."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from execauth_core import ConfigurationError, Guard
from execauth_core._validation import guard_option, name_option, name_or_callable

F = TypeVar("F", bound=Callable[..., Any])


def guarded_node(
    guard: Guard,
    *,
    tool: str,
    args: Callable[[Any], Mapping[str, Any]],
    principal: str | Callable[[Any], str],
    agent: str | None = None,
) -> Callable[[F], F]:
    """Run a graph node only if the guard allows the side effect it performs.

    ``args(state)`` extracts the proposal's arguments from the node's input state
    (what the node is about to do, e.g. ``{"to": state["recipient"], "amount": ...}``).
    Only what ``args(state)`` returns is proposed and decided: make it cover every
    input that shapes the side effect. On anything but ALLOW (including an error in
    ``args`` or ``principal``, recorded as GUARD_ERROR) the node raises
    :class:`~execauth_core.ExecutionDenied` and does not run (the graph stops there,
    like any node error). Sync and async nodes.
    """

    owner = "guarded_node"
    guard_option(guard, owner)
    name_option(tool, "tool", owner)
    if not callable(args):
        raise ConfigurationError(
            f"guarded_node: args must be a callable of the node's state; got {type(args).__name__}"
        )
    name_or_callable(principal, "principal", owner, takes="the node's state")
    name_option(agent, "agent", owner, optional=True)

    def decorate(fn: F) -> F:
        def propose(state: Any) -> Any:
            try:
                who = principal(state) if callable(principal) else principal
                proposed = dict(args(state))
            except Exception as exc:  # noqa: BLE001 - a node we cannot describe does not run
                raise guard.deny(
                    None, ["GUARD_ERROR"], f"cannot build the proposal ({type(exc).__name__})", tool=tool
                ) from None
            return guard.proposal(tool, proposed, principal=who, agent=agent)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def anode(state: Any, *rest: Any, **kw: Any) -> Any:
                request = propose(state)
                return await guard.arun(request, lambda: fn(state, *rest, **kw))

            return anode  # type: ignore[return-value]

        @functools.wraps(fn)
        def node(state: Any, *rest: Any, **kw: Any) -> Any:
            request = propose(state)
            return guard.run(request, lambda: fn(state, *rest, **kw))

        return node  # type: ignore[return-value]

    return decorate
