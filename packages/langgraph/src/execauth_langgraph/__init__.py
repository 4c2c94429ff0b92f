"""execauth-langgraph: gate every LangGraph / LangChain tool call with execauth.

``guarded_tool_node(tools, guard, principal=...)`` is a ``ToolNode`` whose every call
is decided, token-verified, consumed once and audited before it runs;
``ExecAuthMiddleware`` does the same for ``langchain.agents.create_agent``;
``guarded_node`` gates custom graph nodes with side effects.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from langgraph.prebuilt import ToolNode

from ._version import __version__
from .node import guarded_node
from .wrapper import APPROVAL_REQUEST, ExecAuthToolWrapper


def guarded_tool_node(tools: Sequence[Any], guard: Any, **kwargs: Any) -> ToolNode:
    """A ``ToolNode`` gated by execauth (sync and async paths).

    Keyword arguments go to :class:`ExecAuthToolWrapper` (``principal``, ``agent``,
    ``token_provider``, ``approvals``), except ``name``/``handle_tool_errors`` and other
    ``ToolNode`` options, given as ``tool_node_options={...}``. ``guard`` may also be an
    :class:`ExecAuthToolWrapper` (no other keyword arguments then): keep it to list,
    approve and wait for approvals.
    """
    options = kwargs.pop("tool_node_options", {})
    # An ExecAuthToolWrapper may be given in place of the guard: the caller keeps it
    # for the approval methods (pending_approvals(), approve(), ...).
    wrapper = guard if isinstance(guard, ExecAuthToolWrapper) and not kwargs else ExecAuthToolWrapper(guard, **kwargs)
    return ToolNode(list(tools), wrap_tool_call=wrapper, awrap_tool_call=wrapper.acall, **options)


def __getattr__(name: str) -> Any:
    # The middleware needs `langchain` (the `agents` extra); the ToolNode path does not.
    if name == "ExecAuthMiddleware":
        try:
            from .middleware import ExecAuthMiddleware
        except ImportError as exc:
            raise ImportError(
                "ExecAuthMiddleware needs langchain's create_agent: pip install 'execauth-langgraph[agents]'"
            ) from exc
        return ExecAuthMiddleware
    raise AttributeError(f"module 'execauth_langgraph' has no attribute {name!r}")


def _langchain_installed() -> bool:
    try:
        return importlib.util.find_spec("langchain") is not None
    except (ImportError, ValueError):
        return False


# `from execauth_langgraph import *` must work without the `agents` extra: the
# middleware is exported only where langchain is installed.
__all__ = [
    "APPROVAL_REQUEST",
    *(["ExecAuthMiddleware"] if _langchain_installed() else []),
    "ExecAuthToolWrapper",
    "__version__",
    "guarded_node",
    "guarded_tool_node",
]
