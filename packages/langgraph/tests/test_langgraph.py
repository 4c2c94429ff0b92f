"""execauth-langgraph through real LangGraph graphs driven by a scripted model."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.graph import START, StateGraph
from langgraph.types import Command
from typing_extensions import TypedDict

from execauth_core import (
    AllowListPolicy,
    ExecutionDenied,
    FixedClock,
    Guard,
    LocalSigner,
    StoreUnavailable,
)
from execauth_langgraph import APPROVAL_REQUEST, guarded_node

from .harness import build_graph, gate_of, make_tool, scripted, tool_call

T0 = 1_767_607_200


class Spy:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kw: Any) -> str:
        self.calls.append(kw)
        return f"done:{sorted(kw.items())}"


def make_guard(allow: tuple[str, ...] = ("search", "transfer"), approval: tuple[str, ...] = (), **kw: Any) -> Guard:
    return Guard.local(
        AllowListPolicy(allow, require_approval=approval),
        clock=FixedClock(T0),
        signer=LocalSigner(bytes(range(32))),
        **kw,
    )


def tool_messages(out: dict[str, Any]) -> list[ToolMessage]:
    return [m for m in out["messages"] if isinstance(m, ToolMessage)]


def run(graph: Any, thread: str = "t1", payload: Any = None) -> dict[str, Any]:
    return graph.invoke(payload or {"messages": [HumanMessage("go")]}, {"configurable": {"thread_id": thread}})


def audit(guard: Guard) -> list[tuple[str, bool, list[str]]]:
    """The guard's records (the approval queue's own ``approval`` entries left out)."""
    return [
        (e.event, e.executed, e.body.get("reason_codes", []))
        for e in guard.audit_log.entries()
        if e.event != "approval"
    ]


def test_allowed_call_runs_and_the_model_sees_the_result() -> None:
    guard, spy = make_guard(), Spy()
    model = scripted(AIMessage("", tool_calls=[tool_call("search", {"q": "refunds"}, "c1")]), AIMessage("ok"))
    out = run(build_graph(model, [make_tool("search", spy, ["q"])], guard, principal="alice"))
    assert spy.calls == [{"q": "refunds"}]
    msg = tool_messages(out)[0]
    assert msg.status == "success" and "refunds" in str(msg.content)
    assert [e[0] for e in audit(guard)] == ["execution", "result"]


def test_denied_call_never_runs_and_the_model_sees_the_reason() -> None:
    guard, spy = make_guard(), Spy()
    model = scripted(AIMessage("", tool_calls=[tool_call("drop_table", {"name": "users"}, "c1")]), AIMessage("ok"))
    out = run(build_graph(model, [make_tool("drop_table", spy, ["name"])], guard, principal="alice"))
    assert spy.calls == []
    msg = tool_messages(out)[0]
    assert msg.status == "error" and "TOOL_NOT_ALLOWED" in str(msg.content)
    assert audit(guard) == [("denial", False, ["TOOL_NOT_ALLOWED"])]


def test_replayed_token_is_denied() -> None:
    guard, spy = make_guard(), Spy()
    tokens: list[str] = []

    def provider(request: Any) -> str | None:
        if not tokens:
            tokens.append(guard.authorize(request).token or "")
        return tokens[0]  # the same token, twice

    model = scripted(
        AIMessage("", tool_calls=[tool_call("search", {"q": "a"}, "c1")]),
        AIMessage("", tool_calls=[tool_call("search", {"q": "a"}, "c1")]),
        AIMessage("ok"),
    )
    out = run(build_graph(model, [make_tool("search", spy, ["q"])], guard, principal="alice", token_provider=provider))
    assert len(spy.calls) == 1
    second = tool_messages(out)[1]
    assert second.status == "error" and "TOKEN_REPLAYED" in str(second.content)


def test_parallel_tool_calls_each_get_their_own_decision() -> None:
    guard, spy = make_guard(), Spy()
    calls = [
        tool_call("search", {"q": "a"}, "c1"),
        tool_call("drop_table", {"name": "x"}, "c2"),
        tool_call("search", {"q": "b"}, "c3"),
    ]
    model = scripted(AIMessage("", tool_calls=calls), AIMessage("ok"))
    out = run(
        build_graph(
            model, [make_tool("search", spy, ["q"]), make_tool("drop_table", spy, ["name"])], guard, principal="alice"
        )
    )
    assert sorted(c["q"] for c in spy.calls) == ["a", "b"]
    by_id = {m.tool_call_id: m for m in tool_messages(out)}
    assert by_id["c2"].status == "error" and by_id["c1"].status == by_id["c3"].status == "success"
    executions = [e for e in guard.audit_log.entries() if e.event == "execution"]
    assert len({e.body["token_id"] for e in executions}) == 2  # one token per call
    assert {e.body["call_id"] for e in executions} == {"c1", "c3"}


def test_async_graph_is_gated_too() -> None:
    guard, spy = make_guard(), Spy()
    model = scripted(
        AIMessage("", tool_calls=[tool_call("search", {"q": "a"}, "c1"), tool_call("drop_table", {"name": "x"}, "c2")]),
        AIMessage("ok"),
    )
    graph = build_graph(
        model, [make_tool("search", spy, ["q"]), make_tool("drop_table", spy, ["name"])], guard, principal="alice"
    )
    out = asyncio.run(graph.ainvoke({"messages": [HumanMessage("go")]}, {"configurable": {"thread_id": "a"}}))
    assert spy.calls == [{"q": "a"}]
    assert {m.tool_call_id: m.status for m in tool_messages(out)} == {"c1": "success", "c2": "error"}


class Boom(Exception):
    pass


@pytest.mark.parametrize("sabotage", ["replay_store", "decision_point", "principal"])
def test_errors_inside_the_guard_deny_without_crashing_the_graph(sabotage: str) -> None:
    guard, spy = make_guard(), Spy()
    principal: Any = "alice"
    if sabotage == "replay_store":

        class Down:
            def consume(self, *a: Any, **k: Any) -> bool:
                raise StoreUnavailable("down")

        guard.replay_store = Down()
    elif sabotage == "decision_point":

        class Broken(AllowListPolicy):
            def evaluate(self, *a: Any, **k: Any) -> Any:
                raise Boom("bug")

        assert guard.authority is not None
        guard.authority.decision_point = Broken(["search"])
    else:

        def principal(request: Any) -> str:
            raise Boom("cannot read the user from the runtime")

    model = scripted(AIMessage("", tool_calls=[tool_call("search", {"q": "a"}, "c1")]), AIMessage("ok"))
    out = run(build_graph(model, [make_tool("search", spy, ["q"])], guard, principal=principal))
    assert spy.calls == []
    msg = tool_messages(out)[0]
    assert msg.status == "error" and "execauth denied" in str(msg.content)


def approval_graph(guard: Guard, spy: Spy, args: dict[str, Any]) -> Any:
    model = scripted(AIMessage("", tool_calls=[tool_call("transfer", args, "c1")]), AIMessage("ok"))
    return build_graph(model, [make_tool("transfer", spy, list(args))], guard, principal="alice")


def interrupted(out: dict[str, Any]) -> dict[str, Any]:
    (intr,) = out["__interrupt__"]
    assert intr.value["type"] == APPROVAL_REQUEST
    return dict(intr.value)


def test_approval_interrupt_then_approve_runs_exactly_the_shown_proposal() -> None:
    guard, spy = make_guard(approval=("transfer",)), Spy()
    graph = approval_graph(guard, spy, {"amount": "25.00", "to": "bob"})
    shown = interrupted(run(graph))
    assert spy.calls == [] and shown["proposal"]["args"] == {"amount": "25.00", "to": "bob"}
    out = run(
        graph,
        payload=Command(resume=_answer(graph, shown)),
    )
    assert spy.calls == [{"amount": "25.00", "to": "bob"}]
    assert tool_messages(out)[-1].status == "success"
    # recorded once for the pause (not again on resume), then the approved execution
    assert [e[:2] for e in audit(guard)] == [("denial", False), ("execution", True), ("result", True)]
    assert audit(guard)[1][2] == ["TOOL_ALLOWED", "APPROVAL_GRANTED"]


def test_approval_rejected_is_recorded_and_nothing_runs() -> None:
    guard, spy = make_guard(approval=("transfer",)), Spy()
    graph = approval_graph(guard, spy, {"amount": "25.00", "to": "bob"})
    shown = interrupted(run(graph))
    out = run(
        graph,
        payload=Command(resume=_rejected(graph, shown)),
    )
    assert spy.calls == []
    assert "APPROVAL_REJECTED" in str(tool_messages(out)[-1].content)
    assert audit(guard)[-1] == ("denial", False, ["APPROVAL_REJECTED"])


@pytest.mark.parametrize(
    "answer",
    [
        {"approved": True, "approver": "carol", "proposal_digest": "sha256:" + "0" * 64},  # another proposal
        {"approved": True, "approver": "carol"},  # no digest at all
        "yes",  # not a request id
        {"request_id": "apr_x", "approved": True},  # more than the request id
        {"approved": True, "proposal_digest": None},
    ],
)
def test_an_approval_that_does_not_name_this_proposal_does_not_apply(answer: Any) -> None:
    guard, spy = make_guard(approval=("transfer",)), Spy()
    graph = approval_graph(guard, spy, {"amount": "25.00", "to": "bob"})
    interrupted(run(graph))
    out = run(graph, payload=Command(resume=answer))
    assert spy.calls == []
    assert tool_messages(out)[-1].status == "error"
    assert audit(guard)[-1][:2] == ("denial", False)


def test_approval_for_one_proposal_does_not_carry_to_changed_arguments() -> None:
    """The LangGraph pitfall: the resume value is matched by interrupt position. A run
    that regenerates different arguments meets the old answer: it must not apply."""
    guard, spy = make_guard(approval=("transfer",)), Spy()
    graph = approval_graph(guard, spy, {"amount": "25.00", "to": "bob"})
    shown = interrupted(run(graph))
    # A fresh graph on the same guard whose model now asks for 2500.00 receives the
    # answer given for the 25.00 proposal.
    graph2 = approval_graph(guard, spy, {"amount": "2500.00", "to": "bob"})
    interrupted(run(graph2, thread="t2"))
    out = run(
        graph2,
        thread="t2",
        payload=Command(resume=_answer(graph, shown)),
    )
    assert spy.calls == []
    assert "APPROVAL_MISMATCH" in str(tool_messages(out)[-1].content)


def test_create_agent_middleware() -> None:
    from langchain.agents import create_agent
    from langgraph.checkpoint.memory import InMemorySaver

    from execauth_langgraph import ExecAuthMiddleware

    guard, spy = make_guard(), Spy()
    model = scripted(
        AIMessage("", tool_calls=[tool_call("search", {"q": "a"}, "c1"), tool_call("drop_table", {"name": "x"}, "c2")]),
        AIMessage("ok"),
    )
    agent = create_agent(
        model,
        [make_tool("search", spy, ["q"]), make_tool("drop_table", spy, ["name"])],
        middleware=[ExecAuthMiddleware(guard, principal="alice", agent="helper")],
        checkpointer=InMemorySaver(),
    )
    out = agent.invoke({"messages": [HumanMessage("go")]}, {"configurable": {"thread_id": "m"}})
    assert spy.calls == [{"q": "a"}]
    assert {m.tool_call_id: m.status for m in tool_messages(out)} == {"c1": "success", "c2": "error"}
    assert {e.body["agent"] for e in guard.audit_log.entries() if e.event != "result"} == {"helper"}


class PayState(TypedDict):
    to: str
    amount: str
    paid: bool


def test_guarded_node_runs_only_when_allowed() -> None:
    paid: list[str] = []

    def pay_graph(guard: Guard) -> Any:
        @guarded_node(guard, tool="transfer", args=lambda s: {"to": s["to"], "amount": s["amount"]}, principal="alice")
        def pay(state: PayState) -> dict[str, Any]:
            paid.append(state["amount"])
            return {"paid": True}

        g = StateGraph(PayState)
        g.add_node("pay", pay)
        g.add_edge(START, "pay")
        return g.compile()

    out = pay_graph(make_guard()).invoke({"to": "bob", "amount": "5.00", "paid": False})
    assert out["paid"] is True and paid == ["5.00"]
    with pytest.raises(ExecutionDenied) as info:
        pay_graph(make_guard(allow=("search",))).invoke({"to": "bob", "amount": "9.00", "paid": False})
    assert info.value.reason_codes == ("TOOL_NOT_ALLOWED",) and paid == ["5.00"]


def test_the_tool_receives_exactly_the_authorized_arguments() -> None:
    guard, spy = make_guard(), Spy()
    args = {"q": "x", "filters": {"lang": ["en", "de"]}}
    model = scripted(AIMessage("", tool_calls=[tool_call("search", args, "c1")]), AIMessage("ok"))
    run(build_graph(model, [make_tool("search", spy, list(args))], guard, principal="alice"))
    assert spy.calls == [args]
    execution = next(e for e in guard.audit_log.entries() if e.event == "execution")
    from execauth_core import AuthorizationRequest

    expected = AuthorizationRequest(tool="search", args=args, principal="alice", call_id="c1").content_digest()
    assert execution.body["proposal_digest"] == expected


def test_resume_does_not_run_finished_sibling_calls_twice() -> None:
    """LangGraph re-runs the whole ToolNode on resume. A call that already ran in the
    interrupted run must not run again (nor be decided and recorded again)."""
    guard, spy = make_guard(approval=("transfer",)), Spy()
    calls = [
        tool_call("search", {"q": "a"}, "c1"),
        tool_call("drop_table", {"name": "x"}, "c2"),
        tool_call("transfer", {"amount": "5.00", "to": "bob"}, "c3"),
    ]
    model = scripted(AIMessage("", tool_calls=calls), AIMessage("ok"))
    tools = [
        make_tool("search", spy, ["q"]),
        make_tool("drop_table", spy, ["name"]),
        make_tool("transfer", spy, ["amount", "to"]),
    ]
    graph = build_graph(model, tools, guard, principal="alice")
    shown = interrupted(run(graph))
    out = run(
        graph,
        payload=Command(resume=_answer(graph, shown)),
    )
    assert spy.calls == [{"q": "a"}, {"amount": "5.00", "to": "bob"}]  # search ran once, not twice
    assert {m.tool_call_id: m.status for m in tool_messages(out)} == {"c1": "success", "c2": "error", "c3": "success"}
    events = [(e.event, e.body.get("call_id")) for e in guard.audit_log.entries() if e.event in ("execution", "denial")]
    assert sorted(events, key=str) == sorted(
        [("execution", "c1"), ("denial", "c2"), ("denial", "c3"), ("execution", "c3")], key=str
    )


def test_a_failing_tool_is_a_tool_error_not_a_denial() -> None:
    def broken(**kw: Any) -> str:
        raise ValueError("upstream 500")

    # ToolNode turning tool errors into messages: the model sees the tool's error.
    guard = make_guard()
    model = scripted(AIMessage("", tool_calls=[tool_call("search", {"q": "a"}, "c1")]), AIMessage("ok"))
    graph = build_graph(
        model,
        [make_tool("search", broken, ["q"])],
        guard,
        principal="alice",
        tool_node_options={"handle_tool_errors": True},
    )
    msg = tool_messages(run(graph))[0]
    assert msg.status == "error" and "execauth denied" not in str(msg.content) and "upstream 500" in str(msg.content)
    assert [e.event for e in guard.audit_log.entries()] == ["execution", "result"]

    # ToolNode's default re-raises: the tool's own exception reaches the caller, unchanged.
    guard = make_guard()
    model = scripted(AIMessage("", tool_calls=[tool_call("search", {"q": "a"}, "c1")]), AIMessage("ok"))
    graph = build_graph(model, [make_tool("search", broken, ["q"])], guard, principal="alice")
    with pytest.raises(ValueError, match="upstream 500"):
        run(graph)
    result = list(guard.audit_log.entries())[-1]
    assert result.event == "result" and result.body["detail"] == {
        "status": "error",
        "execution_seq": 1,
        "error": "ValueError",
    }


def test_schema_defaults_are_part_of_the_proposal() -> None:
    from langchain_core.tools import tool as lc_tool

    guard = make_guard()
    ran: list[Any] = []

    @lc_tool
    def search(q: str, limit: int = 1000) -> str:
        """Search."""
        ran.append((q, limit))
        return "ok"

    model = scripted(AIMessage("", tool_calls=[tool_call("search", {"q": "a"}, "c1")]), AIMessage("ok"))
    run(build_graph(model, [search], guard, principal="alice"))
    assert ran == [("a", 1000)]
    execution = next(e for e in guard.audit_log.entries() if e.event == "execution")
    from execauth_core import AuthorizationRequest

    expected = AuthorizationRequest(tool="search", args={"q": "a", "limit": 1000}, principal="alice", call_id="c1")
    assert execution.body["proposal_digest"] == expected.content_digest()


@pytest.mark.parametrize("where", ["token_provider", "principal"])
def test_adapter_errors_are_recorded_denials(where: str) -> None:
    guard, spy = make_guard(), Spy()

    def explode(_: Any) -> str:
        raise Boom("resolver down")

    kwargs: dict[str, Any] = {"principal": "alice"}
    kwargs[where] = explode
    model = scripted(AIMessage("", tool_calls=[tool_call("search", {"q": "a"}, "c1")]), AIMessage("ok"))
    out = run(build_graph(model, [make_tool("search", spy, ["q"])], guard, **kwargs))
    assert spy.calls == []
    code = "NO_TOKEN" if where == "token_provider" else "GUARD_ERROR"
    assert code in str(tool_messages(out)[0].content)
    last = list(guard.audit_log.entries())[-1]
    assert (last.event, last.executed, last.body["reason_codes"], last.body["tool"]) == (
        "denial",
        False,
        [code],
        "search",
    )


def test_guarded_node_that_cannot_describe_itself_does_not_run() -> None:
    guard = make_guard()
    ran: list[bool] = []

    @guarded_node(guard, tool="transfer", args=lambda s: {"amount": s["missing"]}, principal="alice")
    def pay(state: PayState) -> dict[str, Any]:
        ran.append(True)
        return {"paid": True}

    g = StateGraph(PayState)
    g.add_node("pay", pay)
    g.add_edge(START, "pay")
    with pytest.raises(ExecutionDenied) as info:
        g.compile().invoke({"to": "bob", "amount": "1.00", "paid": False})
    assert ran == [] and info.value.reason_codes == ("GUARD_ERROR",)
    assert list(guard.audit_log.entries())[-1].body["tool"] == "transfer"


def test_rejections_are_recorded_against_the_proposal() -> None:
    guard, spy = make_guard(approval=("transfer",)), Spy()
    graph = approval_graph(guard, spy, {"amount": "25.00", "to": "bob"})
    shown = interrupted(run(graph))
    run(
        graph,
        payload=Command(resume=_rejected(graph, shown)),
    )
    last = list(guard.audit_log.entries())[-1]
    assert last.body["proposal_digest"] == shown["proposal_digest"] and last.body["tool"] == "transfer"


_NO_LANGCHAIN = """
import importlib.abc
import sys


class NoLangchain(importlib.abc.MetaPathFinder):
    # What an environment without the `agents` extra looks like: `langchain` is not
    # found (langchain-core and langgraph still are).
    def find_spec(self, name, path=None, target=None):
        if name == "langchain" or name.startswith("langchain."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoLangchain())
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_star_import_works_without_langchain() -> None:
    """Issue 15 item 7: `from execauth_langgraph import *` failed without `[agents]`."""
    proc = _run(
        _NO_LANGCHAIN
        + """
from execauth_langgraph import *
import execauth_langgraph
assert "ExecAuthMiddleware" not in execauth_langgraph.__all__, execauth_langgraph.__all__
assert callable(guarded_tool_node) and callable(guarded_node)
try:
    execauth_langgraph.ExecAuthMiddleware
except ImportError as exc:
    print("IMPORT-ERROR:", exc)
"""
    )
    assert proc.returncode == 0, proc.stderr
    assert "IMPORT-ERROR: ExecAuthMiddleware needs langchain's create_agent: pip install" in proc.stdout


def test_star_import_exports_the_middleware_with_langchain() -> None:
    proc = _run("from execauth_langgraph import *\nprint(ExecAuthMiddleware.__name__)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ExecAuthMiddleware"
# -- options are checked when the wrapper or node is built (issue 15, item 10) ------------


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("principal", 42, "principal must be a non-empty string or a callable of the tool-call request"),
        ("principal", "", "principal must be a non-empty string"),
        ("agent", ["bot"], "agent must be a non-empty string or a callable"),
        ("token_provider", "tok", "token_provider must be None or a callable"),
        ("approvals", "yes", "approvals must be one of True, False"),
    ],
)
def test_a_bad_wrapper_option_is_refused_when_built(option: str, value: Any, expected: str) -> None:
    from execauth_core import AllowListPolicy, ConfigurationError, Guard
    from execauth_langgraph import guarded_tool_node

    kwargs: dict[str, Any] = {"principal": "user-42", option: value}
    with pytest.raises(ConfigurationError, match=expected):
        guarded_tool_node([], Guard.local(AllowListPolicy(["search"])), **kwargs)


def test_a_bad_guarded_node_option_is_refused_when_built() -> None:
    from execauth_core import AllowListPolicy, ConfigurationError, Guard

    guard = Guard.local(AllowListPolicy(["send"]))
    with pytest.raises(ConfigurationError, match="guarded_node: principal must be"):
        guarded_node(guard, tool="send", args=lambda s: {}, principal=7)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="guarded_node: args must be a callable"):
        guarded_node(guard, tool="send", args={"to": "x"}, principal="alice")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="guarded_node: tool must be a non-empty string"):
        guarded_node(guard, tool="", args=lambda s: {}, principal="alice")
    with pytest.raises(ConfigurationError, match=r"guarded_node: guard must be an execauth_core\.Guard"):
        guarded_node(object(), tool="send", args=lambda s: {}, principal="alice")  # type: ignore[arg-type]


def _answer(graph: Any, shown: dict[str, Any], approver: str = "carol") -> str:
    """A person approves the request through the gate; the resume value is its id
    (the interrupt's own ``resume_with``)."""
    gate_of(graph).approve(shown["request_id"], approver=approver)
    assert shown["resume_with"] == shown["request_id"]
    return str(shown["resume_with"])


def _rejected(graph: Any, shown: dict[str, Any]) -> str:
    gate_of(graph).reject(shown["request_id"], approver="carol", comment="no")
    return str(shown["request_id"])


def test_an_old_resume_answer_replayed_in_a_later_turn_is_refused() -> None:
    """The field test: the model re-proposes the identical call with the same call id in
    a later turn, and the answer given for the first turn is sent again. One person's
    decision funds exactly one execution: the transfer runs once. (The approval layer
    alone: with the effect ledger on, the default, the later turn is answered from the
    ledger before any approval is asked, test_ledger.py.)"""
    guard, spy = make_guard(approval=("transfer",), ledger=False), Spy()
    call = tool_call("transfer", {"amount": "25.00", "to": "bob"}, "c1")
    model = scripted(
        AIMessage("", tool_calls=[call]), AIMessage("sent"), AIMessage("", tool_calls=[call]), AIMessage("again")
    )
    graph = build_graph(model, [make_tool("transfer", spy, ["amount", "to"])], guard, principal="alice")
    first = interrupted(run(graph))
    old_answer = _answer(graph, first)
    run(graph, payload=Command(resume=old_answer))
    assert spy.calls == [{"amount": "25.00", "to": "bob"}]
    # A later turn: the identical call, the same call id, the same proposal digest.
    second = interrupted(run(graph, payload={"messages": [HumanMessage("once more")]}))
    assert second["proposal_digest"] == first["proposal_digest"]
    out = run(graph, payload=Command(resume=old_answer))
    assert spy.calls == [{"amount": "25.00", "to": "bob"}]  # not a second time
    last = tool_messages(out)[-1]
    assert last.status == "error" and "APPROVAL_USED" in str(last.content)
    denial = list(guard.audit_log.entries())[-1]
    assert (denial.event, denial.executed, denial.body["reason_codes"]) == ("denial", False, ["APPROVAL_USED"])


def test_a_fresh_answer_in_a_later_turn_is_a_new_decision() -> None:
    """Without the effect ledger: a re-proposed call id is a new call (with the ledger,
    the default, it is the same call and does not run again: test_ledger.py)."""
    guard, spy = make_guard(approval=("transfer",), ledger=False), Spy()
    call = tool_call("transfer", {"amount": "25.00", "to": "bob"}, "c1")
    model = scripted(
        AIMessage("", tool_calls=[call]), AIMessage("sent"), AIMessage("", tool_calls=[call]), AIMessage("again")
    )
    graph = build_graph(model, [make_tool("transfer", spy, ["amount", "to"])], guard, principal="alice")
    first = interrupted(run(graph))
    run(graph, payload=Command(resume=_answer(graph, first)))
    second = interrupted(run(graph, payload={"messages": [HumanMessage("once more")]}))
    assert second["request_id"] != first["request_id"]
    out = run(graph, payload=Command(resume=_answer(graph, second, "dave")))
    assert spy.calls == [{"amount": "25.00", "to": "bob"}] * 2
    assert tool_messages(out)[-1].status == "success"


def test_an_answer_that_names_no_approval_request_is_refused() -> None:
    """The answer format from before approval ids (digest only) names no request: it
    could be replayed to any later request for the same call, so it approves nothing."""
    guard, spy = make_guard(approval=("transfer",)), Spy()
    graph = approval_graph(guard, spy, {"amount": "25.00", "to": "bob"})
    shown = interrupted(run(graph))
    answer = {"approved": True, "approver": "carol", "proposal_digest": shown["proposal_digest"]}
    out = run(graph, payload=Command(resume=answer))
    assert spy.calls == []
    assert "APPROVAL_INVALID" in str(tool_messages(out)[-1].content)
    assert audit(guard)[-1] == ("denial", False, ["APPROVAL_INVALID"])


def test_a_replayed_answer_is_refused_after_a_restart(tmp_path: Any) -> None:
    """The approval is spent in the guard's stores (SQLite here), not in the wrapper's
    memory: a new process (new guard, new graph, the same checkpointer and data_dir)
    refuses the old answer too. (The approval layer alone: with the effect ledger,
    the default, the same call id is answered from the ledger first, test_ledger.py.)"""
    from langgraph.checkpoint.memory import InMemorySaver

    from execauth_core import AllowListPolicy as Policy

    def durable_guard() -> Guard:
        return Guard.local(
            Policy(("transfer",), require_approval=("transfer",)),
            clock=FixedClock(T0),
            signer=LocalSigner(bytes(range(32))),
            data_dir=tmp_path,
            ledger=False,
            approvals=True,
        )

    saver, spy = InMemorySaver(), Spy()
    call = tool_call("transfer", {"amount": "25.00", "to": "bob"}, "c1")
    tools = [make_tool("transfer", spy, ["amount", "to"])]
    graph = build_graph(
        scripted(AIMessage("", tool_calls=[call]), AIMessage("sent")),
        tools,
        durable_guard(),
        checkpointer=saver,
        principal="alice",
    )
    old_answer = _answer(graph, interrupted(run(graph)))
    run(graph, payload=Command(resume=old_answer))
    assert len(spy.calls) == 1

    guard = durable_guard()  # "restarted": nothing of the first wrapper or guard is kept
    graph = build_graph(
        scripted(AIMessage("", tool_calls=[call]), AIMessage("again")),
        tools,
        guard,
        checkpointer=saver,
        principal="alice",
    )
    interrupted(run(graph, payload={"messages": [HumanMessage("once more")]}))
    out = run(graph, payload=Command(resume=old_answer))
    assert len(spy.calls) == 1
    assert "APPROVAL_USED" in str(tool_messages(out)[-1].content)
    assert audit(guard)[-1] == ("denial", False, ["APPROVAL_USED"])
