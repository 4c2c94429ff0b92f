"""langchain-mcp-adapters tools in a gated ToolNode, against a real MCP server subprocess
(stdio, and streamable HTTP on 127.0.0.1), through a real LangGraph agent loop with a
scripted model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_mcp_adapters.client import MultiServerMCPClient

from execauth_conformance import mcp_server as srv
from execauth_core import AuthorizationRequest, ConfigurationError
from execauth_langgraph.mcp import mcp_server_tools

from .harness import build_graph, scripted, tool_call


def decided(guard: Any) -> list[tuple[str, str, bool, list[str]]]:
    return [
        (e.event, e.body.get("tool"), e.executed, list(e.body.get("reason_codes") or []))
        for e in guard.audit_log.entries()
        if e.event in ("execution", "denial")
    ]


def drive(connection: dict[str, Any], log: Path) -> None:
    async def main() -> dict[str, Any]:
        client = MultiServerMCPClient({"files": connection})  # type: ignore[dict-item]
        tools = mcp_server_tools(await client.get_tools(server_name="files"), server="files")
        guard = srv.guard()
        model = scripted(
            AIMessage(
                content="",
                tool_calls=[
                    tool_call("write_note", {"text": "hello"}, "c1"),
                    tool_call("delete_all", {}, "c2"),
                    tool_call("undeclared", {}, "c3"),
                ],
            ),
            AIMessage(content="done"),
        )
        graph = build_graph(model, tools, guard, principal="alice")
        out: dict[str, Any] = await graph.ainvoke(
            {"messages": [HumanMessage("go")]}, {"configurable": {"thread_id": "t1"}}
        )
        out["guard"] = guard
        return out

    out = asyncio.run(main())
    assert srv.effects(log) == ["write_note hello"]
    results = {m.tool_call_id: m for m in out["messages"] if isinstance(m, ToolMessage)}
    assert "wrote hello" in str(results["c1"].content)
    assert "TOOL_NOT_ALLOWED" in str(results["c2"].content) and "UNKNOWN_TOOL" in str(results["c3"].content)
    assert out["messages"][-1].content == "done"
    guard = out["guard"]
    assert decided(guard) == [
        ("execution", "files.write_note", True, ["TOOL_ALLOWED"]),
        ("denial", "files.delete_all", False, ["TOOL_NOT_ALLOWED"]),
        ("denial", "files.undeclared", False, ["UNKNOWN_TOOL"]),
    ]
    # The proposal was exactly files.write_note with the MCP call's arguments.
    execution = next(e for e in guard.audit_log.entries() if e.event == "execution")
    expected = AuthorizationRequest(
        tool="files.write_note", args={"text": "hello"}, principal="alice", agent=execution.body["agent"], call_id="c1"
    )
    assert execution.body["proposal_digest"] == expected.content_digest()


def test_stdio_mcp_tools_are_gated(tmp_path: Path) -> None:
    log = tmp_path / "effects.log"
    command = srv.stdio_command(log)
    drive({"command": command[0], "args": command[1:], "transport": "stdio"}, log)


# langchain-mcp-adapters 0.2.2 (the oldest tested) calls the mcp SDK's deprecated
# streamablehttp_client: the framework's own business, not a failure of ours.
@pytest.mark.filterwarnings("ignore:Use `streamable_http_client` instead:DeprecationWarning")
def test_streamable_http_mcp_tools_are_gated(tmp_path: Path) -> None:
    log = tmp_path / "effects.log"
    with srv.http_server(log) as url:
        drive({"url": url, "transport": "streamable_http"}, log)


def test_server_identity_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="identity"):
        mcp_server_tools([], server="bad.name")
