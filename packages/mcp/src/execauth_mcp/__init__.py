"""execauth-mcp: gate Model Context Protocol tool calls like any other tool.

- :mod:`execauth_mcp.proxy` / ``execauth mcp-proxy``: a gating proxy in front of a stdio
  or streamable-HTTP MCP server; every ``tools/call`` is decided before it is forwarded.
- :func:`require_execauth`: middleware for MCP servers written with the SDK that refuses
  tool calls not carrying a valid, unused execauth token bound to that exact call.
"""

from ._version import __version__
from .config import REQUEST_META_KEY, TOKEN_META_KEY, ProxyConfig, load_config, parse_config
from .front import serve_stdio
from .proxy import GatingProxy, build_guard, connect_upstream, denial_result
from .server import ExecauthMiddleware, require_execauth

__all__ = [
    "REQUEST_META_KEY",
    "TOKEN_META_KEY",
    "ExecauthMiddleware",
    "GatingProxy",
    "ProxyConfig",
    "__version__",
    "build_guard",
    "connect_upstream",
    "denial_result",
    "load_config",
    "parse_config",
    "require_execauth",
    "serve_stdio",
]
