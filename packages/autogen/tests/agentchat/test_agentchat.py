"""ExecAuthWorkbench through real AgentChat runs (AssistantAgent, a team) with a
scripted ReplayChatCompletionClient. Every test checks whether the real tool ran."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_core.tools import FunctionTool

from execauth_autogen import ExecAuthWorkbench, input_approver
from execauth_core import AuthorizationRequest, Guard

from .harness import call, make_agent, tool_results, turn


class Tools:
    """Real tools that record every call."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, dict[str, Any]]] = []

    def search(self, q: str) -> str:
        self.ran.append(("search", {"q": q}))
        return f"results for {q}"

    def transfer(self, amount: str, to: str, memo: str = "none") -> str:
        self.ran.append(("transfer", {"amount": amount, "to": to, "memo": memo}))
        return f"sent {amount} to {to}"

    async def slow_lookup(self, key: str) -> str:
        await asyncio.sleep(0)
        self.ran.append(("slow_lookup", {"key": key}))
        return f"value of {key}"

    def explode(self, why: str) -> str:
        self.ran.append(("explode", {"why": why}))
        raise RuntimeError(f"tool failed: {why}")

    def all(self) -> list[FunctionTool]:
        return [
            FunctionTool(self.search, description="search"),
            FunctionTool(self.transfer, description="transfer money"),
            FunctionTool(self.slow_lookup, description="async lookup"),
            FunctionTool(self.explode, description="always fails"),
        ]


@pytest.fixture
def tools() -> Tools:
    return Tools()


def workbench(tools: Tools, guard: Guard, **kwargs: Any) -> ExecAuthWorkbench:
    kwargs.setdefault("principal", "user-42")
    return ExecAuthWorkbench(tools.all(), guard, **kwargs)


def run(agent: Any, task: str = "go") -> Any:
    return asyncio.run(agent.run(task=task))


def test_allowed_call_runs_and_reaches_the_model(tools: Tools, make_guard: Callable[..., Guard], events: Any) -> None:
    guard = make_guard(allow=["search"])
    agent = make_agent(workbench(tools, guard, agent="helper"), turn(call("c1", "search", {"q": "refunds"})))
    seen = tool_results(run(agent))["c1"]
    assert tools.ran == [("search", {"q": "refunds"})]
    assert (seen.is_error, seen.content) == (False, "results for refunds")
    assert events(guard) == [("execution", True, ["TOOL_ALLOWED"], "c1"), ("result", True, [], None)]
    execution = next(e for e in guard.audit_log.entries() if e.event == "execution")
    assert (execution.body["principal"], execution.body["agent"], execution.body["tool"]) == (
        "user-42",
        "helper",
        "search",
    )


def test_denied_call_does_not_run_and_the_model_sees_why(
    tools: Tools, make_guard: Callable[..., Guard], events: Any
) -> None:
    guard = make_guard(allow=["search"])
    agent = make_agent(workbench(tools, guard), turn(call("c1", "transfer", {"amount": "5.00", "to": "bob"})))
    seen = tool_results(run(agent))["c1"]
    assert tools.ran == []
    assert seen.is_error is True
    assert "TOOL_NOT_ALLOWED" in seen.content and "transfer" in seen.content
    assert events(guard) == [("denial", False, ["TOOL_NOT_ALLOWED"], "c1")]


def test_the_proposal_holds_every_argument_including_defaults(tools: Tools, make_guard: Callable[..., Guard]) -> None:
    """A default the model did not send is still in the proposal: a rule on it cannot be escaped."""
    guard = make_guard(allow=["transfer"])
    seen: list[AuthorizationRequest] = []

    def provider(request: AuthorizationRequest) -> str | None:
        seen.append(request)
        return guard.authorize(request).token

    agent = make_agent(
        workbench(tools, guard, token_provider=provider), turn(call("c1", "transfer", {"amount": "5.00", "to": "bob"}))
    )
    run(agent)
    assert seen[0].args == {"amount": "5.00", "to": "bob", "memo": "none"}
    assert tools.ran == [("transfer", {"amount": "5.00", "to": "bob", "memo": "none"})]


def test_replayed_token_is_refused(tools: Tools, make_guard: Callable[..., Guard], events: Any) -> None:
    guard = make_guard(allow=["search"])
    first = AuthorizationRequest(tool="search", args={"q": "x"}, principal="user-42", call_id="c1")
    token = guard.authorize(first).token
    wb = workbench(tools, guard, token_provider=lambda request: token)
    # The model makes the same call twice (same call id, so the same proposal).
    agent = make_agent(wb, turn(call("c1", "search", {"q": "x"})), turn(call("c1", "search", {"q": "x"})))
    run(agent)
    second = tool_results(run(agent))["c1"]
    assert tools.ran == [("search", {"q": "x"})]
    assert second.is_error and "TOKEN_REPLAYED" in second.content
    assert events(guard)[-1] == ("denial", False, ["TOKEN_REPLAYED"], "c1")


def test_async_token_provider_and_missing_token(tools: Tools, make_guard: Callable[..., Guard]) -> None:
    guard = make_guard(allow=["search"])

    async def provider(request: AuthorizationRequest) -> str | None:
        return guard.authorize(request).token if request.call_id == "ok" else None

    agent = make_agent(
        workbench(tools, guard, token_provider=provider),
        turn(call("ok", "search", {"q": "a"}), call("none", "search", {"q": "b"})),
    )
    results = tool_results(run(agent))
    assert tools.ran == [("search", {"q": "a"})]
    assert not results["ok"].is_error
    assert results["none"].is_error and "NO_TOKEN" in results["none"].content


def test_parallel_calls_are_each_decided_and_run_concurrently(make_guard: Callable[..., Guard], events: Any) -> None:
    """Three calls in one model turn: AssistantAgent runs them with asyncio.gather. The
    two allowed ones wait for each other, so they can only finish if both run at once."""
    guard = make_guard(allow=["rendezvous"])
    arrived: list[str] = []
    both_here = asyncio.Event()
    ran: list[str] = []

    async def rendezvous(who: str) -> str:
        arrived.append(who)
        if len(arrived) == 2:
            both_here.set()
        await asyncio.wait_for(both_here.wait(), timeout=5)
        ran.append(who)
        return f"{who} met"

    def drop_table(table: str) -> str:
        ran.append(f"drop {table}")
        return "dropped"

    wb = ExecAuthWorkbench(
        [FunctionTool(rendezvous, description="meet"), FunctionTool(drop_table, description="drop")],
        guard,
        principal="user-42",
    )
    agent = make_agent(
        wb,
        turn(
            call("a", "rendezvous", {"who": "alice"}),
            call("b", "drop_table", {"table": "users"}),
            call("c", "rendezvous", {"who": "carol"}),
        ),
    )
    results = tool_results(run(agent))
    assert sorted(ran) == ["alice", "carol"]
    assert results["a"].content == "alice met" and results["c"].content == "carol met"
    assert results["b"].is_error and "TOOL_NOT_ALLOWED" in results["b"].content
    decisive = sorted((call_id, event) for event, _, _, call_id in events(guard) if event != "result")
    assert decisive == [("a", "execution"), ("b", "denial"), ("c", "execution")]


def test_async_tool_runs_through_the_guard(tools: Tools, make_guard: Callable[..., Guard], events: Any) -> None:
    guard = make_guard(allow=["slow_lookup"])
    agent = make_agent(workbench(tools, guard), turn(call("c1", "slow_lookup", {"key": "k"})))
    assert tool_results(run(agent))["c1"].content == "value of k"
    assert tools.ran == [("slow_lookup", {"key": "k"})]
    assert events(guard)[0] == ("execution", True, ["TOOL_ALLOWED"], "c1")


def test_replay_store_outage_blocks(
    tools: Tools, make_guard: Callable[..., Guard], down_store: Any, events: Any
) -> None:
    guard = make_guard(allow=["search"])
    guard.replay_store = down_store
    agent = make_agent(workbench(tools, guard), turn(call("c1", "search", {"q": "x"})))
    seen = tool_results(run(agent))["c1"]
    assert tools.ran == []
    assert seen.is_error and "STORE_UNAVAILABLE" in seen.content
    assert events(guard)[-1] == ("denial", False, ["STORE_UNAVAILABLE"], "c1")


def test_error_in_the_adapter_blocks_and_is_recorded(
    tools: Tools, make_guard: Callable[..., Guard], events: Any
) -> None:
    """A principal resolver that raises (our code path, before the guard) denies."""
    guard = make_guard(allow=["search"])

    def principal() -> str:
        raise LookupError("no user in context")

    agent = make_agent(workbench(tools, guard, principal=principal), turn(call("c1", "search", {"q": "x"})))
    seen = tool_results(run(agent))["c1"]
    assert tools.ran == []
    assert seen.is_error and "GUARD_ERROR" in seen.content
    assert events(guard) == [("denial", False, ["GUARD_ERROR"], None)]


def test_policy_engine_crash_blocks(tools: Tools, make_guard: Callable[..., Guard], events: Any) -> None:
    guard = make_guard(allow=["search"])

    class Broken:
        policy_ref = None

        def evaluate(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("bug")

    assert guard.authority is not None
    guard.authority.decision_point = Broken()  # type: ignore[assignment]
    agent = make_agent(workbench(tools, guard), turn(call("c1", "search", {"q": "x"})))
    seen = tool_results(run(agent))["c1"]
    assert tools.ran == [] and "GUARD_ERROR" in seen.content
    assert events(guard)[-1][:3] == ("denial", False, ["GUARD_ERROR"])


def test_a_failing_tool_is_an_error_result_and_recorded(tools: Tools, make_guard: Callable[..., Guard]) -> None:
    guard = make_guard(allow=["explode"])
    agent = make_agent(workbench(tools, guard), turn(call("c1", "explode", {"why": "disk full"})))
    seen = tool_results(run(agent))["c1"]
    assert tools.ran == [("explode", {"why": "disk full"})]
    assert seen.is_error and "disk full" in seen.content
    result = [e for e in guard.audit_log.entries() if e.event == "result"]
    assert [r.body["detail"]["status"] for r in result] == ["error"]


def test_approval_without_approver_is_pending_then_approved(
    tools: Tools, make_guard: Callable[..., Guard], events: Any
) -> None:
    # The approval layer alone: with the effect ledger (the default) the re-sent approval
    # of the same call is answered from the ledger first (test_ledger.py).
    guard = make_guard(require_approval=["transfer"], ledger=False)
    wb = workbench(tools, guard)
    agent = make_agent(wb, turn(call("c1", "transfer", {"amount": "50.00", "to": "bob"})))
    seen = tool_results(run(agent))["c1"]
    assert tools.ran == []
    pending = wb.pending_approvals()
    assert len(pending) == 1 and pending[0].arguments["amount"] == "50.00"
    digest = pending[0].proposal_digest
    assert seen.is_error and "APPROVAL_REQUIRED" in seen.content and digest in seen.content
    assert events(guard) == [("denial", False, ["APPROVAL_REQUIRED"], "c1")]

    result = asyncio.run(wb.approve_and_run(digest, approver="alice"))
    assert (result.is_error, result.to_text()) == (False, "sent 50.00 to bob")
    assert tools.ran == [("transfer", {"amount": "50.00", "to": "bob", "memo": "none"})]
    execution = events(guard)[-2]
    assert execution[:2] == ("execution", True) and "APPROVAL_GRANTED" in execution[2]
    # The approval re-sent: refused by the guard (the request's approval is spent).
    again = asyncio.run(wb.approve_and_run(digest, approver="alice"))  # one approval, one run
    assert again.is_error and "APPROVAL_USED" in again.to_text()
    assert len(tools.ran) == 1
    assert events(guard)[-1] == ("denial", False, ["APPROVAL_USED"], "c1")


def test_rejecting_a_pending_call_is_recorded(tools: Tools, make_guard: Callable[..., Guard], events: Any) -> None:
    guard = make_guard(require_approval=["transfer"])
    wb = workbench(tools, guard)
    run(make_agent(wb, turn(call("c1", "transfer", {"amount": "50.00", "to": "bob"}))))
    request_id = wb.pending_approvals()[0].request_id
    assert wb.reject(request_id, approver="alice", comment="not today").state == "rejected"
    answer = asyncio.run(wb.resume(request_id))
    assert answer.is_error and "APPROVAL_REJECTED" in answer.to_text()
    assert tools.ran == [] and wb.pending_approvals() == []
    assert events(guard)[-1] == ("denial", False, ["APPROVAL_REJECTED"], "c1")


@pytest.mark.parametrize(("answer", "runs"), [("approve", True), ("no way", False)])
def test_approver_asks_a_person_during_the_run(
    tools: Tools, make_guard: Callable[..., Guard], events: Any, answer: str, runs: bool
) -> None:
    guard = make_guard(require_approval=["transfer"])
    prompts: list[str] = []

    async def person(prompt: str) -> str:  # async, like a UserProxyAgent input_func may be
        prompts.append(prompt)
        return answer

    wb = workbench(tools, guard, approver=input_approver(person, approver="alice"))
    agent = make_agent(wb, turn(call("c1", "transfer", {"amount": "50.00", "to": "bob"})))
    seen = tool_results(run(agent))["c1"]
    assert len(prompts) == 1 and '"amount":"50.00"' in prompts[0].replace(" ", "") and "sha256:" in prompts[0]
    assert bool(tools.ran) is runs
    if runs:
        assert seen.content == "sent 50.00 to bob"
        assert "APPROVAL_GRANTED" in next(e for e in events(guard) if e[0] == "execution")[2]
    else:
        assert seen.is_error and "APPROVAL_REJECTED" in seen.content
        assert events(guard)[-1][:3] == ("denial", False, ["APPROVAL_REJECTED"])


def test_an_approver_that_crashes_blocks(tools: Tools, make_guard: Callable[..., Guard], events: Any) -> None:
    guard = make_guard(require_approval=["transfer"])

    def approver(pending: Any) -> str:
        raise OSError("console closed")

    agent = make_agent(
        workbench(tools, guard, approver=approver), turn(call("c1", "transfer", {"amount": "1.00", "to": "bob"}))
    )
    seen = tool_results(run(agent))["c1"]
    assert tools.ran == [] and "GUARD_ERROR" in seen.content
    assert events(guard)[-1][:3] == ("denial", False, ["GUARD_ERROR"])


def test_gated_inside_a_team(tools: Tools, make_guard: Callable[..., Guard], events: Any) -> None:
    """In a team the tool call still goes through the workbench (the intervention-handler
    route did not stop tools in teams; this one does)."""
    guard = make_guard(allow=["search"])
    agent = make_agent(
        workbench(tools, guard),
        turn(call("c1", "transfer", {"amount": "9.00", "to": "eve"})),
        turn(call("c2", "search", {"q": "docs"})),
    )
    team = RoundRobinGroupChat([agent], termination_condition=MaxMessageTermination(3))
    result = asyncio.run(team.run(task="go"))
    results = tool_results(result)
    assert tools.ran == [("search", {"q": "docs"})]
    assert results["c1"].is_error and "TOOL_NOT_ALLOWED" in results["c1"].content
    assert [e[:2] for e in events(guard) if e[0] != "result"] == [("denial", False), ("execution", True)]


def test_renamed_tools_are_proposed_under_their_real_name(tools: Tools, make_guard: Callable[..., Guard]) -> None:
    import autogen_core.tools

    override = getattr(autogen_core.tools, "ToolOverride", None)
    if override is None:
        pytest.skip("tool_overrides arrived in autogen-core 0.6.4")
    guard = make_guard(allow=["pay"])  # a rule on the alias must not let the real tool through
    wb = workbench(tools, guard, tool_overrides={"transfer": override(name="pay")})
    agent = make_agent(wb, turn(call("c1", "pay", {"amount": "5.00", "to": "bob"})))
    seen = tool_results(run(agent))["c1"]
    assert tools.ran == [] and "TOOL_NOT_ALLOWED" in seen.content and "'transfer'" in seen.content


def test_the_workbench_refuses_to_serialize(tools: Tools, make_guard: Callable[..., Guard]) -> None:
    """Dumped as a StaticWorkbench it would reload without the guard."""
    with pytest.raises(NotImplementedError, match="cannot be serialized"):
        workbench(tools, make_guard(allow=["search"])).dump_component()


# -- gated and ungated side by side; options checked when built (issue 15, items 10-11) --


def test_check_agent_refuses_an_ungated_workbench_beside_a_gated_one(tools: Tools, make_guard: Any) -> None:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_core.tools import StaticWorkbench

    from execauth_autogen.agentchat import check_agent
    from execauth_core import ConfigurationError

    from .harness import scripted

    guard = make_guard(["search"])
    client = scripted("done")
    gated = AssistantAgent("bank", model_client=client, workbench=workbench(tools, guard))
    assert check_agent(gated) is gated
    mixed = AssistantAgent(
        "mixed", model_client=client, workbench=[workbench(tools, guard), StaticWorkbench(tools.all())]
    )
    with pytest.raises(ConfigurationError, match="StaticWorkbench"):
        check_agent(mixed)
    plain = AssistantAgent("plain", model_client=client, tools=tools.all())
    with pytest.raises(ConfigurationError, match="not gated by execauth"):
        check_agent(plain)


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("principal", 42, "principal must be a non-empty string or a callable"),
        ("principal", "", "principal must be a non-empty string"),
        ("agent", ["bot"], "agent must be a non-empty string or a callable of no arguments or None"),
        ("token_provider", "tok", "token_provider must be None or a callable"),
        ("approver", "carol", "approver must be None or a callable"),
    ],
)
def test_a_bad_option_is_refused_when_built(
    tools: Tools, make_guard: Any, option: str, value: Any, expected: str
) -> None:
    from execauth_core import ConfigurationError

    kwargs: dict[str, Any] = {"principal": "user-42", option: value}
    with pytest.raises(ConfigurationError, match=expected):
        ExecAuthWorkbench(tools.all(), make_guard(["search"]), **kwargs)


def test_an_approval_funds_one_run_across_turns(tools: Tools, make_guard: Callable[..., Guard], events: Any) -> None:
    """The field test's replay (issue 16): the approval sent again once the call ran is
    refused by the guard; the identical call (same call id) in a later turn is a new
    request, approved afresh; each approval runs the transfer once. (The approval layer
    alone: with the effect ledger, the default, the same call id is answered from the
    ledger, test_ledger.py.)"""
    guard = make_guard(require_approval=["transfer"], ledger=False)
    wb = workbench(tools, guard)
    transfer = call("c1", "transfer", {"amount": "50.00", "to": "bob"})
    run(make_agent(wb, turn(transfer)))
    [first] = wb.pending_approvals()
    asyncio.run(wb.approve_and_run(first.proposal_digest, approver="alice"))
    again = asyncio.run(wb.approve_and_run(first.proposal_digest, approver="alice"))
    assert again.is_error and "APPROVAL_USED" in again.to_text() and len(tools.ran) == 1
    assert events(guard)[-1] == ("denial", False, ["APPROVAL_USED"], "c1")

    run(make_agent(wb, turn(transfer)))  # a later turn proposes the identical call
    [second] = wb.pending_approvals()
    assert second.proposal_digest == first.proposal_digest
    result = asyncio.run(wb.approve_and_run(second.proposal_digest, approver="alice"))
    assert result.to_text() == "sent 50.00 to bob" and len(tools.ran) == 2
    result = asyncio.run(wb.approve_and_run(second.proposal_digest, approver="alice"))
    assert "APPROVAL_USED" in result.to_text() and len(tools.ran) == 2


def test_the_unified_approval_flow(tools: Tools, make_guard: Callable[..., Guard], events: Any) -> None:
    """Issue 16: the call pauses with an approval request id; approve -> resume runs it
    once; the same answer re-sent is refused; reject and expiry deny."""
    import inspect
    import time

    from execauth_core import AllowListPolicy, FixedClock
    from execauth_core.approval_flow import GATE_METHODS, ApprovalGate, ApprovalTimeout

    for name in GATE_METHODS:
        assert inspect.signature(getattr(ExecAuthWorkbench, name)) == inspect.signature(getattr(ApprovalGate, name))
    clock = FixedClock(int(time.time()))
    guard = Guard.local(AllowListPolicy([], require_approval=["transfer"]), clock=clock)
    wb = workbench(tools, guard)
    seen = tool_results(run(make_agent(wb, turn(call("c1", "transfer", {"amount": "50.00", "to": "bob"})))))["c1"]
    [pending] = wb.pending_approvals()
    rid = pending.request_id
    assert rid in seen.content and wb.approval_status(rid) == "pending" and tools.ran == []
    with pytest.raises(ApprovalTimeout):
        wb.wait_for_approval(rid, timeout=0.05, poll_interval=0.01)
    early = asyncio.run(wb.resume(rid))
    assert early.is_error and "APPROVAL_REQUIRED" in early.to_text() and tools.ran == []
    wb.approve(rid, approver="alice")
    assert asyncio.run(wb.await_approval(rid, timeout=1, poll_interval=0.01)) == "approved"
    result = asyncio.run(wb.resume(rid))
    assert (result.is_error, result.to_text()) == (False, "sent 50.00 to bob") and len(tools.ran) == 1
    again = asyncio.run(wb.resume(rid))
    assert again.is_error and "APPROVAL_USED" in again.to_text() and len(tools.ran) == 1
    assert events(guard)[-1] == ("denial", False, ["APPROVAL_USED"], "c1")

    run(make_agent(wb, turn(call("c2", "transfer", {"amount": "5.00", "to": "eve"}))))
    [second] = wb.pending_approvals()
    clock.advance(3601)
    assert wb.approval_status(second.request_id) == "expired"
    expired = asyncio.run(wb.resume(second.request_id))
    assert expired.is_error and "APPROVAL_EXPIRED" in expired.to_text() and len(tools.ran) == 1
