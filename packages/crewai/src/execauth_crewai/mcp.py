"""CrewAI's native MCP tools, guarded and proposed as ``<server>.<tool>``.

CrewAI turns an MCP server's tools into ``MCPNativeTool`` objects
(``Agent.get_mcp_tools([MCPServerStdio(...)])``, or ``Agent(mcps=[...])`` at kickoff).
Like any tool they must be wrapped to run under :meth:`CrewGuard.guarding` (an
unwrapped tool is blocked by the hook), and CrewAI names them after the command or
URL, which is no identity for a policy. :func:`mcp_server_tools` wraps them and names
the server::

    tools = mcp_server_tools(crew_guard, agent.get_mcp_tools([MCPServerStdio(...)]), server="files")
    agent.tools = tools          # instead of mcps=

Each proposal's tool is ``files.<tool>`` (the MCP tool's own name; the naming
``execauth mcp-proxy`` uses, :mod:`execauth_core.mcp_names`, so one policy covers
both) and its arguments are the MCP call's arguments. The model still sees CrewAI's
tool names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from execauth_core import ConfigurationError
from execauth_core.mcp_names import check_server_name, mcp_tool_name

if TYPE_CHECKING:
    from .adapter import CrewGuard
    from .tools import GuardedTool

__all__ = ["mcp_server_tools"]


def mcp_server_tools(crew_guard: CrewGuard, tools: Iterable[Any], *, server: str) -> list[GuardedTool]:
    """Wrap MCP tools of one server for ``crew_guard``, proposed as ``<server>.<tool>``.

    Raises:
        ConfigurationError: ``server`` is not a valid identity, or a tool is not an MCP
            tool (it has no ``original_tool_name``: wrap it with ``CrewGuard.tool``).
    """
    check_server_name(server)
    wrapped = []
    for tool in tools:
        original = getattr(tool, "original_tool_name", None)  # crewai.tools.mcp_native_tool.MCPNativeTool
        if not isinstance(original, str) or not original:
            raise ConfigurationError(
                f"tool {getattr(tool, 'name', tool)!r} is not a CrewAI MCP tool; wrap it with CrewGuard.tool"
            )
        wrapped.append(crew_guard.tool(tool, proposal_name=mcp_tool_name(server, original)))
    return wrapped
