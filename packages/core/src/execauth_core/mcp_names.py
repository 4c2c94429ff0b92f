"""How a Model Context Protocol tool is named in a proposal, wherever it is called.

One convention for the gating proxy (``execauth mcp-proxy``) and for the MCP tools a
framework loads inside an adapter, so one policy and one set of manifests cover both:

- the proposal's ``tool`` is ``<server>.<tool>``: the server's identity (a name you
  choose for it, not something the server says about itself) and the tool's name as
  the server lists it, or the name a ``tools`` mapping gives that tool;
- the proposal's ``args`` are exactly the MCP ``tools/call`` arguments (no
  arguments is ``{}``).

Nothing here imports the MCP SDK: frameworks pin different major versions of it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import ConfigurationError

SERVER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
"""An MCP server's identity in proposals: letters, digits, ``_`` and ``-``, at most 64
characters, no dot (the dot separates it from the tool name)."""

_SERVER = re.compile(SERVER_NAME_PATTERN)


def check_server_name(server: object) -> str:
    """``server`` if it is a valid MCP server identity.

    Raises:
        ConfigurationError: it is not a string matching :data:`SERVER_NAME_PATTERN`.
    """
    if not isinstance(server, str) or not _SERVER.match(server):
        raise ConfigurationError(
            f"an MCP server identity is 1-64 letters, digits, '_' or '-' (no dot), got {str(server)[:80]!r}"
        )
    return server


def mcp_tool_name(server: str, tool: str, tools: Mapping[str, str] | None = None) -> str:
    """The proposal's tool name for ``tool`` of ``server``: ``tools[tool]`` when the
    mapping names it, else ``<server>.<tool>``.

    Raises:
        ConfigurationError: ``server`` is not a valid identity.
    """
    check_server_name(server)
    mapped = (tools or {}).get(tool)
    return mapped if mapped else f"{server}.{tool}"


def mcp_arguments(arguments: object) -> dict[str, Any]:
    """The proposal's ``args`` for an MCP call's arguments: a copy of the mapping,
    ``{}`` for none.

    Raises:
        ValueError: the arguments are not a JSON object with string keys (the caller
            records it as a denial; the call does not run).
    """
    if arguments is None:
        return {}
    if not isinstance(arguments, Mapping) or not all(isinstance(k, str) for k in arguments):
        raise ValueError(f"MCP tool arguments are a JSON object, got {type(arguments).__name__}")
    return dict(arguments)


__all__ = ["SERVER_NAME_PATTERN", "check_server_name", "mcp_arguments", "mcp_tool_name"]
