"""The effect ledger through real LangGraph graphs: a resume in another process does
not re-run finished sibling calls; a retry middleware inside ExecAuth's gets a refusal,
never a second run; the same tool-call id proposed again follows the ledger."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from execauth_core import AllowListPolicy, FixedClock, Guard, LocalSigner

from .harness import build_graph, make_tool, scripted, tool_call

T0 = 1_767_607_200
HERE = Path(__file__).resolve().parent

# One process per phase: the first runs until the approval interrupt (the search
# sibling has run), the second is a fresh process that resumes the same thread from
# the SQLite checkpointer with a guard on the same data_dir.
PHASE = """
import json, sqlite3, sys
sys.path.insert(0, sys.argv[1])
from harness import build_graph, make_tool, scripted, tool_call
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command
from execauth_core import AllowListPolicy, Guard

folder, phase = sys.argv[2], sys.argv[3]
effects = open(folder + "/effects.txt", "a")

def tool(name):
    def run(**kw):
        effects.write(name + "\\n"); effects.flush()
        return f"{name} done"
    return run

calls = [tool_call("search", {"q": "a"}, "c1"), tool_call("transfer", {"amount": "5.00", "to": "bob"}, "c2")]
guard = Guard.local(
    AllowListPolicy(["search", "transfer"], require_approval=["transfer"]), data_dir=folder, approvals=True
)
saver = SqliteSaver(sqlite3.connect(folder + "/checkpoints.db", check_same_thread=False))
graph = build_graph(
    scripted(AIMessage("", tool_calls=calls), AIMessage("ok")),
    [make_tool("search", tool("search"), ["q"]), make_tool("transfer", tool("transfer"), ["amount", "to"])],
    guard,
    checkpointer=saver,
    principal="alice",
)
config = {"configurable": {"thread_id": "thread-7"}}
if phase == "first":
    out = graph.invoke({"messages": [HumanMessage("go")]}, config)
    print(json.dumps(out["__interrupt__"][0].value))
else:
    # A person approves the request in the durable queue (same data_dir); the graph
    # resumes with the request id only.
    request_id = json.loads(sys.argv[4])["request_id"]
    guard.approvals.approve(request_id, approver="carol")
    out = graph.invoke(Command(resume=request_id), config)
    print(json.dumps({m.tool_call_id: [m.status, m.content] for m in out["messages"] if isinstance(m, ToolMessage)}))
"""


def phase(folder: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PHASE, str(HERE), str(folder), *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_a_resume_in_another_process_does_not_rerun_finished_siblings(tmp_path: Path) -> None:
    pytest.importorskip("langgraph.checkpoint.sqlite")
    shown = phase(tmp_path, "first")
    assert json.loads(shown)["type"] == "execauth.approval_request"
    assert (tmp_path / "effects.txt").read_text().splitlines() == ["search"]
    messages = json.loads(phase(tmp_path, "second", shown))
    # search ran once, in the first process; its answer in the second is the recorded one
    assert (tmp_path / "effects.txt").read_text().splitlines() == ["search", "transfer"]
    assert messages == {"c1": ["success", "search done"], "c2": ["success", "transfer done"]}


def make_guard(**kw: Any) -> Guard:
    return Guard.local(
        AllowListPolicy(("search", "transfer")), clock=FixedClock(T0), signer=LocalSigner(bytes(range(32))), **kw
    )


def tool_messages(out: dict[str, Any]) -> list[ToolMessage]:
    return [m for m in out["messages"] if isinstance(m, ToolMessage)]


def retry_middleware() -> Any:
    """LangChain's own ToolRetryMiddleware where this version has it, else the same
    loop written out (retry the handler on any exception)."""
    try:
        from langchain.agents.middleware import ToolRetryMiddleware
    except ImportError:
        from langchain.agents.middleware import AgentMiddleware

        class Retry(AgentMiddleware):  # type: ignore[type-arg]
            def wrap_tool_call(self, request: Any, handler: Any) -> Any:
                for _ in range(2):
                    try:
                        return handler(request)
                    except Exception:
                        continue
                return handler(request)

        return Retry()
    return ToolRetryMiddleware(max_retries=2, initial_delay=0.0, jitter=False, backoff_factor=0.0)


def test_a_retry_middleware_inside_execauth_gets_a_refusal_not_a_second_run() -> None:
    from langchain.agents import create_agent
    from langgraph.checkpoint.memory import InMemorySaver

    from execauth_langgraph import ExecAuthMiddleware

    guard, runs = make_guard(), []

    def flaky(**kw: Any) -> str:
        runs.append(kw)
        raise TimeoutError("the bank did not answer (but may have booked it)")

    agent = create_agent(
        scripted(
            AIMessage("", tool_calls=[tool_call("transfer", {"amount": "5.00", "to": "bob"}, "c1")]), AIMessage("ok")
        ),
        [make_tool("transfer", flaky, ["amount", "to"])],
        middleware=[ExecAuthMiddleware(guard, principal="alice"), retry_middleware()],  # the retry is inside
        checkpointer=InMemorySaver(),
    )
    out = agent.invoke({"messages": [HumanMessage("go")]}, {"configurable": {"thread_id": "r"}})
    assert runs == [{"amount": "5.00", "to": "bob"}]  # once, under one token
    [message] = tool_messages(out)
    assert message.status == "error" and "TOKEN_REPLAYED" in str(message.content)
    events = [(e.event, e.body.get("reason_codes")) for e in guard.audit_log.entries() if e.event != "result"]
    # The retry got the refusal as its answer and stopped: one execution, one recorded refusal.
    assert events == [("execution", ["TOOL_ALLOWED"]), ("denial", ["TOKEN_REPLAYED"])]


def test_the_same_tool_call_id_proposed_again_follows_the_ledger() -> None:
    guard, runs = make_guard(), []

    def transfer(**kw: Any) -> str:
        runs.append(kw)
        return "transferred t-1"

    call = tool_call("transfer", {"amount": "5.00", "to": "bob"}, "c1")
    graph = build_graph(
        scripted(AIMessage("", tool_calls=[call]), AIMessage("sent"), AIMessage("", tool_calls=[call]), AIMessage("x")),
        [make_tool("transfer", transfer, ["amount", "to"])],
        guard,
        principal="alice",
    )
    config = {"configurable": {"thread_id": "t1"}}
    graph.invoke({"messages": [HumanMessage("go")]}, config)
    out = graph.invoke({"messages": [HumanMessage("once more")]}, config)
    assert len(runs) == 1
    first, again = tool_messages(out)
    assert (
        (again.status, again.content, again.tool_call_id)
        == ("success", "transferred t-1", "c1")
        == (
            first.status,
            first.content,
            first.tool_call_id,
        )
    )
    denial = [e for e in guard.audit_log.entries() if e.event == "denial"][-1]
    assert denial.body["reason_codes"] == ["LEDGER_ALREADY_SUCCEEDED"] and denial.executed is False
    # Another thread with the same call id is another run: it is decided and runs.
    graph2 = build_graph(
        scripted(AIMessage("", tool_calls=[call]), AIMessage("sent")),
        [make_tool("transfer", transfer, ["amount", "to"])],
        guard,
        principal="alice",
    )
    graph2.invoke({"messages": [HumanMessage("go")]}, {"configurable": {"thread_id": "t2"}})
    assert len(runs) == 2


def test_a_tool_that_pauses_inside_itself_runs_again_on_resume() -> None:
    """``interrupt()`` inside the tool: LangGraph re-runs the tool on resume, so its
    ledger key is freed (not failed); the resumed run completes once."""
    from langchain_core.tools import StructuredTool
    from langgraph.types import Command, interrupt

    guard, done = make_guard(), []

    def transfer(amount: str, to: str) -> str:
        answer = interrupt({"confirm": f"{amount} to {to}?"})
        done.append(answer)
        return f"transferred ({answer})"

    tool = StructuredTool.from_function(func=transfer, name="transfer", description="transfer")
    graph = build_graph(
        scripted(
            AIMessage("", tool_calls=[tool_call("transfer", {"amount": "5.00", "to": "bob"}, "c1")]), AIMessage("ok")
        ),
        [tool],
        guard,
        principal="alice",
    )
    config = {"configurable": {"thread_id": "p"}}
    first = graph.invoke({"messages": [HumanMessage("go")]}, config)
    assert "__interrupt__" in first and done == []
    out = graph.invoke(Command(resume="yes"), config)
    assert done == ["yes"]
    assert [m.content for m in tool_messages(out)] == ["transferred (yes)"]
