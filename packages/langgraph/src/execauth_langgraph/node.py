"""A decorator for custom graph nodes that perform side effects themselves."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from execauth_core import Guard

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
    On anything but ALLOW the node raises :class:`~execauth_core.ExecutionDenied` and
    does not run (the graph stops there, like any node error; catch it with a
    fallback edge if the graph should continue). Sync and async nodes.
    """

    def decorate(fn: F) -> F:
        def propose(state: Any) -> Any:
            who = principal(state) if callable(principal) else principal
            return guard.proposal(tool, dict(args(state)), principal=who, agent=agent)

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
