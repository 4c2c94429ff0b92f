"""The shared conformance suite through the gating proxy.

Real pieces: the proxy's MCP server (the SDK's server runner) and an upstream MCP
server that exposes the suite's tool, connected to the proxy by a real client session;
both over in-memory streams, in this process, so the suite's guard is the proxy's
guard. The harness speaks raw JSON-RPC to the proxy so that the request id is the
case's call id (the proxy uses a call's JSON-RPC id as the proposal's call id).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import mcp_types as types
from mcp import ClientSession
from mcp.server.lowlevel.server import Server
from mcp.shared.memory import create_client_server_memory_streams
from mcp.shared.message import SessionMessage

from execauth_conformance import AdapterHarness, CallOutcome, ToolCallCase
from execauth_core import Guard
from execauth_mcp import GatingProxy, parse_config


def upstream_server(case: ToolCallCase, tool_fn: Callable[..., Any], ran: list[bool]) -> Server[Any]:
    tool = types.Tool(
        name=case.tool,
        description="the suite's tool",
        input_schema={"type": "object", "properties": {a: {} for a in case.args}},
    )

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[tool])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        ran.append(True)
        out = tool_fn(**(params.arguments or {}))
        return types.CallToolResult(content=[types.TextContent(type="text", text=str(out))])

    return Server("conformance-upstream", on_list_tools=list_tools, on_call_tool=call_tool)


async def _rpc(write: Any, read: Any, ident: str | int, method: str, params: dict[str, Any]) -> dict[str, Any]:
    await write.send(SessionMessage(types.JSONRPCRequest(jsonrpc="2.0", id=ident, method=method, params=params)))
    while True:
        item = await read.receive()
        if isinstance(item, Exception):
            raise item
        msg = item.message
        if isinstance(msg, (types.JSONRPCResponse, types.JSONRPCError)) and msg.id == ident:
            return dict(json.loads(msg.model_dump_json(by_alias=True, exclude_none=True)))


class MCPProxyHarness(AdapterHarness):
    name = "mcp-proxy"

    def run_tool_call(
        self, guard: Guard, case: ToolCallCase, tool_fn: Callable[..., Any], *, token_provider: Any = None
    ) -> CallOutcome:
        ran: list[bool] = []
        config = parse_config(
            {"server": "conformance", "principal": case.principal, "agent": case.agent, "tools": {case.tool: case.tool}}
        )

        async def main() -> CallOutcome:
            upstream = upstream_server(case, tool_fn, ran)
            async with (
                create_client_server_memory_streams() as (up_client, up_server),
                create_client_server_memory_streams() as (down_client, down_server),
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(lambda: upstream.run(*up_server, upstream.create_initialization_options()))
                async with ClientSession(*up_client) as session:
                    await session.initialize()
                    proxy = GatingProxy(
                        config, guard, session, capabilities=session.server_capabilities, token_provider=token_provider
                    )
                    server = proxy.server()
                    tg.start_soon(lambda: server.run(*down_server, proxy.initialization_options(server)))
                    read, write = down_client
                    hello = {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": "h", "version": "0"},
                    }
                    init = await _rpc(write, read, "init", "initialize", hello)
                    assert "result" in init, init
                    await write.send(
                        SessionMessage(types.JSONRPCNotification(jsonrpc="2.0", method="notifications/initialized"))
                    )
                    args = {"name": case.tool, "arguments": case.args}
                    answer = await _rpc(write, read, case.call_id, "tools/call", args)
                tg.cancel_scope.cancel()
            result = answer.get("result", {})
            seen = " ".join(c.get("text", "") for c in result.get("content", []))
            return CallOutcome(executed=bool(ran), model_saw=seen or json.dumps(answer))

        return anyio.run(main)
