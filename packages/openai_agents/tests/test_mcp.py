"""MCP server tools on a protected agent, against a real MCP server subprocess (stdio and
streamable HTTP on 127.0.0.1), through the real ``Runner`` and a scripted model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from agents import Agent, Runner
from agents.mcp import MCPServerStdio, MCPServerStreamableHttp

from execauth_conformance import mcp_server as srv
from execauth_core import AuthorizationRequest, ConfigurationError
from execauth_openai_agents import ExecAuth

from .harness import ScriptedModel, call, say

# The SDK waits 5 s for the server by default; a loaded CI machine starts it more slowly.
SLOW = 120


def decided(guard: Any) -> list[tuple[str, str, bool, list[str]]]:
    return [
        (e.event, e.body.get("tool"), e.executed, list(e.body.get("reason_codes") or []))
        for e in guard.audit_log.entries()
        if e.event in ("execution", "denial")
    ]


async def drive(server: Any, log: Path) -> None:
    guard = srv.guard()
    model = ScriptedModel(
        [
            call("write_note", {"text": "hello"}, "c1"),
            call("delete_all", {}, "c2"),
            call("undeclared", {}, "c3"),
        ],
        [say("done")],
    )
    agent = Agent(name="assistant", instructions="test", model=model, mcp_servers=[server])
    ExecAuth(guard, principal="alice").protect(agent)
    result = await Runner.run(agent, "go")
    assert result.final_output == "done"
    # Only the allowed call reached the server, once.
    assert srv.effects(log) == ["write_note hello"]
    outputs = model.seen_outputs()
    assert "wrote hello" in outputs["c1"]
    assert "TOOL_NOT_ALLOWED" in outputs["c2"] and "UNKNOWN_TOOL" in outputs["c3"]
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
    assert execution.body["agent"] == "assistant"


@pytest.mark.asyncio
async def test_stdio_mcp_server_tools_are_gated(tmp_path: Path) -> None:
    log = tmp_path / "effects.log"
    command = srv.stdio_command(log)
    params = {"command": command[0], "args": command[1:]}
    async with MCPServerStdio(name="files", params=params, client_session_timeout_seconds=SLOW) as server:
        await drive(server, log)


@pytest.mark.asyncio
async def test_streamable_http_mcp_server_tools_are_gated(tmp_path: Path) -> None:
    log = tmp_path / "effects.log"
    with srv.http_server(log) as url:
        async with MCPServerStreamableHttp(
            name="files", params={"url": url}, client_session_timeout_seconds=SLOW
        ) as server:
            await drive(server, log)


@pytest.mark.asyncio
async def test_an_unnamed_mcp_server_is_refused_before_any_tool_runs(tmp_path: Path) -> None:
    log = tmp_path / "effects.log"
    with srv.http_server(log) as url:
        # Unnamed, the SDK names the server after its URL: no identity for a policy.
        async with MCPServerStreamableHttp(params={"url": url}, client_session_timeout_seconds=SLOW) as server:
            model = ScriptedModel([call("write_note", {"text": "x"}, "c1")], [say("done")])
            agent = Agent(name="assistant", model=model, mcp_servers=[server])
            ExecAuth(srv.guard(), principal="alice").protect(agent)
            with pytest.raises(ConfigurationError, match="name="):
                await Runner.run(agent, "go")
    assert srv.effects(log) == []
