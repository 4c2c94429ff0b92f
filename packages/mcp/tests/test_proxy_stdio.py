"""The gating proxy in front of a real stdio MCP server, driven by a real client session."""

from __future__ import annotations

import anyio
import pytest
from mcp.shared.exceptions import MCPError
from mcphelpers import Workdir, open_session, proxy_command

pytestmark = pytest.mark.anyio


def text(result: object) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)  # type: ignore[attr-defined]


def denials(work: Workdir, tool: str) -> list[dict[str, object]]:
    return [e for e in work.audit() if e["event"] == "denial" and e["tool"] == tool]


async def test_allowed_call_runs_once(work: Workdir) -> None:
    async with open_session(proxy_command(work.config()), work.env(), work.root) as s:
        result = await s.call_tool("write_note", {"text": "hello"})
    assert not result.is_error, text(result)
    assert "wrote hello" in text(result)
    assert work.effects() == ["write_note hello"]
    executions = [e for e in work.audit() if e["event"] == "execution"]
    assert [(e["tool"], e["executed"]) for e in executions] == [("files.write_note", True)]


async def test_denied_call_does_not_run(work: Workdir) -> None:
    async with open_session(proxy_command(work.config()), work.env(), work.root) as s:
        result = await s.call_tool("delete_all", {})
    assert result.is_error
    assert "DENY" in text(result) and "TOOL_NOT_ALLOWED" in text(result)
    assert work.effects() == []
    (record,) = denials(work, "files.delete_all")
    assert record["executed"] is False and "TOOL_NOT_ALLOWED" in record["reason_codes"]


async def test_undeclared_tool_is_unknown(work: Workdir) -> None:
    async with open_session(proxy_command(work.config()), work.env(), work.root) as s:
        result = await s.call_tool("undeclared", {})
        missing = await s.call_tool("no_such_tool", {})
    assert result.is_error and "UNKNOWN_TOOL" in text(result)
    assert missing.is_error and "UNKNOWN_TOOL" in text(missing)
    assert work.effects() == []
    assert denials(work, "files.undeclared") and denials(work, "files.no_such_tool")


async def test_approval_required(work: Workdir) -> None:
    async with open_session(proxy_command(work.config()), work.env(), work.root) as s:
        result = await s.call_tool("publish", {"text": "to the world"})
    assert result.is_error
    assert "REQUIRE_APPROVAL" in text(result) and "approval is required" in text(result)
    assert work.effects() == []
    (record,) = denials(work, "files.publish")
    assert record["outcome"] == "REQUIRE_APPROVAL" and record["executed"] is False


async def test_schema_mismatch_is_denied(work: Workdir) -> None:
    async with open_session(proxy_command(work.config()), work.env(), work.root) as s:
        wrong_type = await s.call_tool("write_note", {"text": 5})
        missing = await s.call_tool("write_note", {})
        extra = await s.call_tool("write_note", {"text": "x", "sneaky": True})
    for result in (wrong_type, missing, extra):
        assert result.is_error and "ARGS_SCHEMA_VIOLATION" in text(result), text(result)
    assert work.effects() == []
    assert len(denials(work, "files.write_note")) == 3


async def test_concurrent_calls_each_run_once(work: Workdir) -> None:
    results: list[object] = []
    async with open_session(proxy_command(work.config()), work.env(), work.root) as s:

        async def one(i: int) -> None:
            results.append(await s.call_tool("write_note", {"text": f"n{i}"}))

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(one, i)
            tg.start_soon(lambda: s.call_tool("delete_all", {}))
    assert all(not r.is_error for r in results)  # type: ignore[attr-defined]
    assert sorted(work.effects()) == sorted(f"write_note n{i}" for i in range(8))
    token_ids = [e["token_id"] for e in work.audit() if e["event"] == "execution"]
    assert len(token_ids) == 8 and len(set(token_ids)) == 8


async def test_upstream_hang_times_out_and_proxy_keeps_serving(work: Workdir) -> None:
    async with open_session(proxy_command(work.config(call_timeout=1)), work.env(), work.root) as s:
        with anyio.fail_after(20):
            slow = await s.call_tool("sleep", {"seconds": 30})
        after = await s.call_tool("write_note", {"text": "still here"})
    assert slow.is_error and "REQUEST_TIMEOUT" in text(slow) and "did not answer" in text(slow)
    assert not after.is_error
    assert work.effects() == ["sleep 30.0", "write_note still here"] or work.effects() == [
        "sleep 30",
        "write_note still here",
    ]
    results = [e for e in work.audit() if e["event"] == "result"]
    assert [r["detail"]["status"] for r in results] == ["error", "ok"]


async def test_upstream_crash_gives_error_result_and_recorded_outcome(work: Workdir) -> None:
    async with open_session(proxy_command(work.config()), work.env(), work.root) as s:
        crashed = await s.call_tool("crash", {})
        after = await s.call_tool("write_note", {"text": "after"})
        denied = await s.call_tool("delete_all", {})
        # ping is relayed, so it reports the dead upstream, as an error answer.
        with pytest.raises(MCPError):
            await s.send_ping()
        again = await s.call_tool("delete_all", {})
    assert again.is_error and "TOOL_NOT_ALLOWED" in text(again)
    assert crashed.is_error and "failed" in text(crashed)
    # The upstream is gone: the next allowed call is an error result too, not a hang or a crash.
    assert after.is_error
    assert denied.is_error and "TOOL_NOT_ALLOWED" in text(denied)
    assert work.effects() == ["crash"]
    statuses = [e["detail"]["status"] for e in work.audit() if e["event"] == "result"]
    assert statuses[0] == "error"


async def test_list_passthrough_and_hiding(work: Workdir) -> None:
    async with open_session(proxy_command(work.config()), work.env(), work.root) as s:
        listed = {t.name for t in (await s.list_tools()).tools}
        resource = await s.read_resource("note://readme")
        prompt = await s.get_prompt("greet", {"name": "Ada"})
        await s.send_ping()
    assert {"write_note", "delete_all", "publish", "undeclared", "crash", "sleep", "steps"} <= listed
    assert "hello from the upstream" in resource.contents[0].text  # type: ignore[union-attr]
    assert "Ada" in prompt.messages[0].content.text  # type: ignore[union-attr]
    async with open_session(proxy_command(work.config(hide_denied_tools=True)), work.env(), work.root) as s:
        hidden = {t.name for t in (await s.list_tools()).tools}
        still_gated = await s.call_tool("delete_all", {})
    assert hidden == {"write_note", "publish", "crash", "sleep", "steps"}
    assert still_gated.is_error and work.effects() == []


async def test_progress_is_relayed(work: Workdir) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with open_session(proxy_command(work.config()), work.env(), work.root) as s:
        result = await s.call_tool("steps", {"n": 3}, progress_callback=on_progress)
    assert not result.is_error, text(result)
    assert seen == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]


async def test_cancelled_call_is_recorded_and_proxy_keeps_serving(work: Workdir) -> None:
    async with open_session(proxy_command(work.config(call_timeout=60)), work.env(), work.root) as s:
        with anyio.move_on_after(2):
            await s.call_tool("sleep", {"seconds": 30})
        after = await s.call_tool("write_note", {"text": "after cancel"})
        with anyio.fail_after(10):
            while not [e for e in work.audit() if e["event"] == "result" and e["detail"]["status"] == "error"]:
                await anyio.sleep(0.1)
    assert not after.is_error
    assert work.effects()[-1] == "write_note after cancel"
