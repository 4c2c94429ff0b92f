"""MCP tools loaded with ``langchain-mcp-adapters``, proposed as ``<server>.<tool>``.

``langchain-mcp-adapters`` turns an MCP server's tools into LangChain tools
(``MultiServerMCPClient.get_tools(server_name=...)``, ``load_mcp_tools(session)``);
they run through the same gated ``ToolNode`` / ``ExecAuthMiddleware`` as any tool. A
LangChain tool does not say which server it came from, so name the server when you
load its tools::

    tools = mcp_server_tools(await client.get_tools(server_name="files"), server="files")

and each proposal's tool is ``files.<tool>`` (the naming ``execauth mcp-proxy`` uses,
:mod:`execauth_core.mcp_names`: one policy for both), its arguments the MCP call's
arguments. Load without ``tool_name_prefix``: a prefixed name is proposed as
``files.files_<tool>``, which no manifest declares, so it is denied.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from execauth_core import ConfigurationError
from execauth_core.mcp_names import check_server_name, mcp_tool_name

__all__ = ["MCP_SERVER_KEY", "mcp_server_tools", "proposal_tool_name"]

MCP_SERVER_KEY = "execauth.mcp_server"
"""The tool ``metadata`` key that names the MCP server a tool belongs to."""


def mcp_server_tools(tools: Iterable[Any], *, server: str) -> list[Any]:
    """Mark ``tools`` (LangChain tools of one MCP server) as ``server``'s, in place, and
    return them as a list, for ``guarded_tool_node`` or ``create_agent``.

    Raises:
        ConfigurationError: ``server`` is not a valid identity, or a tool is already
            marked as another server's.
    """
    check_server_name(server)
    marked = []
    for tool in tools:
        metadata = dict(getattr(tool, "metadata", None) or {})
        current = metadata.get(MCP_SERVER_KEY)
        if current is not None and current != server:
            raise ConfigurationError(f"tool {tool.name!r} is already marked as MCP server {current!r}'s")
        metadata[MCP_SERVER_KEY] = server
        tool.metadata = metadata
        marked.append(tool)
    return marked


def proposal_tool_name(tool: Any, name: str) -> str:
    """The proposal's tool name for a call of ``name``: ``<server>.<name>`` when
    ``tool`` is marked by :func:`mcp_server_tools`, else ``name``."""
    metadata = getattr(tool, "metadata", None)
    server = metadata.get(MCP_SERVER_KEY) if isinstance(metadata, dict) else None
    return mcp_tool_name(server, name) if isinstance(server, str) else name
