"""CrewAI's native MCP tools, guarded with execauth_crewai.mcp, against a real MCP server
subprocess (stdio), through a real crew on a scripted model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from crewai import Agent, Crew, Task
from crewai.mcp import MCPServerStdio

from execauth_conformance import mcp_server as srv
from execauth_core import AuthorizationRequest, ConfigurationError
from execauth_crewai import CrewGuard
from execauth_crewai.mcp import mcp_server_tools
from execauth_crewai.testing import ScriptedLLM, tool_call, tool_results


def decided(guard: Any) -> list[tuple[str, str, bool, list[str]]]:
    return [
        (e.event, e.body.get("tool"), e.executed, list(e.body.get("reason_codes") or []))
        for e in guard.audit_log.entries()
        if e.event in ("execution", "denial")
    ]


def test_native_mcp_tools_are_gated(tmp_path: Path) -> None:
    log = tmp_path / "effects.log"
    command = srv.stdio_command(log)
    guard = srv.guard()
    cg = CrewGuard(guard, principal="alice")
    llm = ScriptedLLM(model="scripted", script=[], native=True)
    agent = Agent(role="researcher", goal="answer", backstory="a test agent", llm=llm, verbose=False)
    loaded = agent.get_mcp_tools([MCPServerStdio(command=command[0], args=command[1:])])
    tools = mcp_server_tools(cg, loaded, server="files")
    agent.tools = tools
    # CrewAI's own names for the tools (it prefixes them with the command); proposals say files.<tool>.
    name = {t.proposal_name: t.name for t in tools}
    assert set(name) == {"files.write_note", "files.delete_all", "files.undeclared"}
    llm.script = [
        [tool_call(name["files.write_note"], {"text": "hello"}, "c1")],
        [tool_call(name["files.delete_all"], {}, "c2")],
        [tool_call(name["files.undeclared"], {}, "c3")],
        "done",
    ]
    crew = Crew(
        agents=[agent], tasks=[Task(description="do it", expected_output="an answer", agent=agent)], verbose=False
    )
    cg.kickoff(crew)
    assert srv.effects(log) == ["write_note hello"]
    seen = tool_results(llm)
    assert any("wrote hello" in s for s in seen)
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
    assert execution.body["agent"] == "researcher"


def test_only_mcp_tools_and_valid_identities(tmp_path: Path) -> None:
    cg = CrewGuard(srv.guard(), principal="alice")
    with pytest.raises(ConfigurationError, match="identity"):
        mcp_server_tools(cg, [], server="no.dots")
    from crewai.tools import tool

    @tool("plain")
    def plain(q: str) -> str:
        """Not an MCP tool."""
        return q

    with pytest.raises(ConfigurationError, match="not a CrewAI MCP tool"):
        mcp_server_tools(cg, [plain], server="files")
