"""The proxy's stdio face: read the client's lines strictly, then serve.

The SDK parses each stdin line with pydantic, which keeps the *last* value of a
duplicated JSON key without a word. A duplicated key is how one party can make two
readers see different arguments, so every client line is first read by execauth's
strict JSON reader (duplicate keys, NaN/Infinity and integers beyond 2^53 refused)
and bounded in size. A refused line gets a JSON-RPC error (with the request's id
when it can be read) and, for a ``tools/call``, a recorded denial.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from io import TextIOWrapper
from typing import Any

import anyio
import mcp_types as types
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage

from execauth_core import Guard, loads_strict
from execauth_core.reasons import ReasonCode as R

from .config import ProxyConfig
from .proxy import GatingProxy, _Relay, build_guard, connect_upstream

PARSE_ERROR = -32700
INVALID_REQUEST = -32600


class _Screen:
    """An async line source that passes on only lines that read strictly."""

    def __init__(self, source: Any, config: ProxyConfig, guard: Guard) -> None:
        self.source = source
        self.config = config
        self.guard = guard
        self.reply: Any = None  # the server's write stream, set once serving starts

    async def _refuse(self, line: str, code: int, message: str) -> None:
        ident: Any = None
        method: Any = None
        try:
            loose = json.loads(line)
            if isinstance(loose, dict):
                ident, method = loose.get("id"), loose.get("method")
        except Exception:  # noqa: BLE001, S110 - an unreadable line has no id to answer to
            pass
        if not isinstance(ident, (str, int)) or isinstance(ident, bool):
            ident = None
        if method == "tools/call":
            params = loose.get("params") if isinstance(loose, dict) else None
            name = params.get("name") if isinstance(params, dict) else None
            tool = self.config.tool_name(name) if isinstance(name, str) and name else f"{self.config.server}.?"
            self.guard.deny(None, [R.REQUEST_INVALID.value], message, tool=tool)
        # A notification (a method, no id) gets no answer, as JSON-RPC says.
        if self.reply is not None and (ident is not None or method is None):
            error = types.JSONRPCError(jsonrpc="2.0", id=ident, error=types.ErrorData(code=code, message=message))
            await self.reply.send(SessionMessage(error))

    async def __aiter__(self) -> AsyncIterator[str]:
        limit = self.config.max_message_bytes
        async for line in self.source:
            if not line.strip():
                continue
            size = len(line.encode("utf-8", "replace"))
            if size > limit:
                # The line is already in memory; reading its id once more costs no more.
                await self._refuse(
                    line, INVALID_REQUEST, f"execauth-mcp: message refused: {size} bytes exceed the limit of {limit}"
                )
                continue
            try:
                loads_strict(line.encode("utf-8", "replace"))
            except Exception as exc:  # noqa: BLE001 - any strict-parse failure is refused
                await self._refuse(line, PARSE_ERROR, f"execauth-mcp: message refused: {str(exc)[:200]}")
                continue
            yield line


async def serve_stdio(
    config: ProxyConfig,
    *,
    command: list[str] | None = None,
    url: str | None = None,
    stdin: Any = None,
    stdout: Any = None,
) -> None:
    """Run the proxy over this process's stdin/stdout until the client closes it.

    A stdio upstream inherits this process's environment: the proxy stands in for
    the server in the client's configuration, so the variables the client sets for
    it are the server's."""
    guard = build_guard(config)
    relay = _Relay()
    try:
        async with connect_upstream(command=command, url=url, on_message=relay, env=dict(os.environ)) as upstream:
            proxy = GatingProxy(config, guard, upstream, capabilities=upstream.server_capabilities)
            relay.target = proxy
            server = proxy.server()
            source = stdin or anyio.wrap_file(TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace"))
            sink = stdout or anyio.wrap_file(TextIOWrapper(sys.stdout.buffer, encoding="utf-8"))
            screen = _Screen(source, config, guard)
            async with stdio_server(stdin=screen, stdout=sink) as (read, write):  # type: ignore[arg-type]
                screen.reply = write
                await server.run(read, write, proxy.initialization_options(server))
    finally:
        guard.close()
