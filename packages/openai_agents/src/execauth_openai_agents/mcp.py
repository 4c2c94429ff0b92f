"""MCP server tools on a protected agent: proposed as ``<server>.<tool>``.

The SDK turns the tools of each ``Agent.mcp_servers`` entry (``MCPServerStdio``,
``MCPServerStreamableHttp``, ...) into ``FunctionTool`` objects every turn, through
``agent.get_all_tools``; ``ExecAuth.protect()`` stands in front of that call and gates
each of them at ``on_invoke_tool``, like any function tool. This module names them:
the proposal's tool is ``<server name>.<MCP tool name>`` (the naming the
``execauth mcp-proxy`` uses, :mod:`execauth_core.mcp_names`), so one policy covers a
server whether it is reached through the proxy or loaded by the agent, and the
proposal's arguments are the MCP call's arguments.

The server name is the ``name=`` given to the SDK's server object: give one (an
unnamed server is named after its command or URL, which is no identity, and is
refused).
"""

from __future__ import annotations

from typing import Any

from agents import FunctionTool

from execauth_core import ConfigurationError
from execauth_core.mcp_names import check_server_name, mcp_tool_name

__all__ = ["mcp_origin", "proposal_tool_name"]


def mcp_origin(tool: FunctionTool) -> tuple[str, str] | None:
    """``(server name, MCP tool name)`` when the SDK built ``tool`` from an MCP server,
    else ``None``."""
    origin: Any = getattr(tool, "_tool_origin", None)  # the SDK's ToolOrigin (0.20 and later)
    if origin is None or getattr(getattr(origin, "type", None), "value", None) != "mcp":
        return None
    server = origin.mcp_server_name
    # From 0.24 the SDK may expose a tool under another name (duplicate names across
    # servers); the binding keeps the MCP tool's own name. Before, the names are equal.
    binding = getattr(tool, "_mcp_tool_binding", None)
    name = binding[1] if isinstance(binding, tuple) and len(binding) > 1 and isinstance(binding[1], str) else tool.name
    return str(server), name


def proposal_tool_name(tool: FunctionTool) -> str:
    """The proposal's tool name for a function tool: ``<server>.<tool>`` for an MCP
    server's tool, else the tool's own name.

    Raises:
        ConfigurationError: an MCP server without a usable ``name=``.
    """
    origin = mcp_origin(tool)
    if origin is None:
        return tool.name
    server, name = origin
    try:
        check_server_name(server)
    except ConfigurationError:
        raise ConfigurationError(
            f"the MCP server of tool '{name}' is named {server[:80]!r}: give the server a name= of letters, "
            "digits, '_' or '-' (its identity in proposals, <server>.<tool>)"
        ) from None
    return mcp_tool_name(server, name)
