"""ExecAuthFunctionGate / ExecAuthExecutorMixin through real classic AutoGen chats
(ConversableAgent executing scripted tool-call messages). Every test checks whether
the real function ran."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import pytest
from autogen import ConversableAgent

from execauth_autogen import ExecAuthFunctionGate, ToolCallDenied, human_input_approver
from execauth_core import AuthorizationRequest, ExecutionDenied, Guard

from .harness import GuardedExecutor, chat, executor, function_call, responses, tool_calls


class Functions:
    """Real functions that record every call."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, dict[str, Any]]] = []

    def search(self, q: str) -> str:
        self.ran.append(("search", {"q": q}))
        return f"results for {q}"

    def transfer(self, amount: str, to: str, memo: str = "none") -> str:
        self.ran.append(("transfer", {"amount": amount, "to": to, "memo": memo}))
        return f"sent {amount} to {to}"

    async def lookup(self, key: str) -> str:
        await asyncio.sleep(0)
        self.ran.append(("lookup", {"key": key}))
        return f"value of {key}"

    def explode(self, why: str) -> str:
        self.ran.append(("explode", {"why": why}))
        raise RuntimeError(f"tool failed: {why}")

    def map(self) -> dict[str, Callable[..., Any]]:
        return {"search": self.search, "transfer": self.transfer, "lookup": self.lookup, "explode": self.explode}


@pytest.fixture
def fns() -> Functions:
    return Functions()


def guarded(fns: Functions, guard: Guard, runner: ConversableAgent | None = None, **kwargs: Any) -> ConversableAgent:
    kwargs.setdefault("principal", "user-42")
    runner = runner if runner is not None else executor()
    runner.register_function(fns.map())
    ExecAuthFunctionGate(guard, **kwargs).protect(runner)
    return runner


def test_allowed_call_runs_and_reaches_the_model(fns: Functions, make_guard: Callable[..., Guard], events: Any) -> None:
    guard = make_guard(allow=["search"])
    history = chat(guarded(fns, guard, agent="helper"), tool_calls(("c1", "search", {"q": "refunds"})))
    assert fns.ran == [("search", {"q": "refunds"})]
    assert responses(history)["c1"] == "results for refunds"
    assert events(guard) == [("execution", True, ["TOOL_ALLOWED"], "c1"), ("result", True, [], None)]
    execution = next(e for e in guard.audit_log.entries() if e.event == "execution")
    assert (execution.body["principal"], execution.body["agent"]) == ("user-42", "helper")


def test_denied_call_does_not_run_and_the_model_sees_why(
    fns: Functions, make_guard: Callable[..., Guard], events: Any
) -> None:
    guard = make_guard(allow=["search"])
    history = chat(guarded(fns, guard), tool_calls(("c1", "transfer", {"amount": "5.00", "to": "bob"})))
    seen = responses(history)["c1"]
    assert fns.ran == []
    assert seen.startswith("Error: execauth denied 'transfer' (DENY): TOOL_NOT_ALLOWED")
    assert events(guard) == [("denial", False, ["TOOL_NOT_ALLOWED"], "c1")]


def test_a_denial_is_a_failed_function_result(fns: Functions, make_guard: Callable[..., Guard]) -> None:
    runner = guarded(fns, make_guard(allow=["search"]))
    ok, result = runner.execute_function(
        {"name": "transfer", "arguments": '{"amount": "5.00", "to": "bob"}'}, call_id="c9"
    )
    assert ok is False and "TOOL_NOT_ALLOWED" in result["content"] and result["name"] == "transfer"
    assert fns.ran == []


def test_legacy_function_call_messages_are_gated(fns: Functions, make_guard: Callable[..., Guard], events: Any) -> None:
    guard = make_guard(allow=["search"])
    history = chat(guarded(fns, guard), function_call("transfer", {"amount": "5.00", "to": "bob"}))
    assert fns.ran == [] and "TOOL_NOT_ALLOWED" in responses(history)[None]
    assert events(guard)[0][:3] == ("denial", False, ["TOOL_NOT_ALLOWED"])


def test_positional_and_keyword_calls_make_the_same_proposal(fns: Functions, make_guard: Callable[..., Guard]) -> None:
    """Someone calling the guarded function directly cannot slip past a rule by
    passing arguments positionally; defaults are in the proposal too."""
    guard = make_guard(allow=["transfer"])
    seen: list[AuthorizationRequest] = []

    def provider(request: AuthorizationRequest) -> str | None:
        seen.append(request)
        return guard.authorize(request).token

    gate = ExecAuthFunctionGate(guard, principal="user-42", token_provider=provider)
    transfer = gate.wrap("transfer", fns.transfer)
    assert transfer("5.00", "bob") == "sent 5.00 to bob"
    assert transfer(amount="5.00", to="bob") == "sent 5.00 to bob"
    assert seen[0].args == seen[1].args == {"amount": "5.00", "to": "bob", "memo": "none"}
    assert seen[0].content_digest() == seen[1].content_digest()
    deny_all = ExecAuthFunctionGate(make_guard(), principal="user-42").wrap("transfer", fns.transfer)
    with pytest.raises(ToolCallDenied) as caught:
        deny_all("5000.00", "eve")
    assert caught.value.denial.reason_codes == ("POLICY_EMPTY",)
    assert len(fns.ran) == 2


def test_replayed_token_is_refused(fns: Functions, make_guard: Callable[..., Guard], events: Any) -> None:
    guard = make_guard(allow=["search"])
    token = guard.authorize(
        AuthorizationRequest(tool="search", args={"q": "x"}, principal="user-42", call_id="c1")
    ).token
    runner = guarded(fns, guard, token_provider=lambda request: token)
    chat(runner, tool_calls(("c1", "search", {"q": "x"})))
    second = responses(chat(runner, tool_calls(("c1", "search", {"q": "x"}))))["c1"]
    assert fns.ran == [("search", {"q": "x"})]
    assert "TOKEN_REPLAYED" in second
    assert events(guard)[-1] == ("denial", False, ["TOKEN_REPLAYED"], "c1")


def test_parallel_async_calls_are_each_decided_and_run_concurrently(
    make_guard: Callable[..., Guard], events: Any
) -> None:
    """In an async chat AutoGen gathers the tool calls of one message. The two allowed
    calls wait for each other, so they only finish if both run at once; each proposal
    carries its own call id."""
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

    runner = executor()
    runner.register_function({"rendezvous": rendezvous, "drop_table": drop_table})
    ExecAuthFunctionGate(guard, principal="user-42").protect(runner)
    history = chat(
        runner,
        tool_calls(
            ("a", "rendezvous", {"who": "alice"}),
            ("b", "drop_table", {"table": "users"}),
            ("c", "rendezvous", {"who": "carol"}),
        ),
        use_async=True,
    )
    seen = responses(history)
    assert sorted(ran) == ["alice", "carol"]
    assert (seen["a"], seen["c"]) == ("alice met", "carol met")
    assert "TOOL_NOT_ALLOWED" in seen["b"]
    decisive = sorted((call_id, event) for event, _, _, call_id in events(guard) if event != "result")
    assert decisive == [("a", "execution"), ("b", "denial"), ("c", "execution")]


def test_async_function_in_a_sync_chat(fns: Functions, make_guard: Callable[..., Guard], events: Any) -> None:
    """ag2 runs an async function of a sync chat in a helper thread's event loop; the
    guard (and the call id) still apply."""
    guard = make_guard(allow=["lookup"])
    history = chat(guarded(fns, guard), tool_calls(("c1", "lookup", {"key": "k"}), ("c2", "search", {"q": "x"})))
    seen = responses(history)
    assert fns.ran == [("lookup", {"key": "k"})]
    assert seen["c1"] == "value of k" and "TOOL_NOT_ALLOWED" in seen["c2"]
    assert [e for e in events(guard) if e[0] != "result"] == [
        ("execution", True, ["TOOL_ALLOWED"], "c1"),
        ("denial", False, ["TOOL_NOT_ALLOWED"], "c2"),
    ]


def test_callable_objects_with_async_call_stay_async(make_guard: Callable[..., Guard], events: Any) -> None:
    class Lookup:
        def __init__(self) -> None:
            self.ran: list[str] = []

        async def __call__(self, key: str) -> str:
            await asyncio.sleep(0)
            self.ran.append(key)
            return f"value of {key}"

    guard = make_guard(allow=["lookup"])
    lookup = Lookup()
    runner = executor()
    runner.register_function({"lookup": lookup})
    ExecAuthFunctionGate(guard, principal="user-42").protect(runner)
    assert inspect.iscoroutinefunction(runner.function_map["lookup"])
    history = chat(runner, tool_calls(("c1", "lookup", {"key": "k"})), use_async=True)
    assert lookup.ran == ["k"] and responses(history)["c1"] == "value of k"
    assert events(guard) == [("execution", True, ["TOOL_ALLOWED"], "c1"), ("result", True, [], None)]


def test_replay_store_outage_blocks(
    fns: Functions, make_guard: Callable[..., Guard], down_store: Any, events: Any
) -> None:
    guard = make_guard(allow=["search"])
    guard.replay_store = down_store
    history = chat(guarded(fns, guard), tool_calls(("c1", "search", {"q": "x"})))
    assert fns.ran == [] and "STORE_UNAVAILABLE" in responses(history)["c1"]
    assert events(guard)[-1] == ("denial", False, ["STORE_UNAVAILABLE"], "c1")


def test_error_in_the_adapter_blocks_and_is_recorded(
    fns: Functions, make_guard: Callable[..., Guard], events: Any
) -> None:
    guard = make_guard(allow=["search"])

    def principal() -> str:
        raise LookupError("no user in context")

    history = chat(guarded(fns, guard, principal=principal), tool_calls(("c1", "search", {"q": "x"})))
    assert fns.ran == [] and "GUARD_ERROR" in responses(history)["c1"]
    assert events(guard) == [("denial", False, ["GUARD_ERROR"], None)]


def test_a_failing_function_is_a_failed_result_and_recorded(fns: Functions, make_guard: Callable[..., Guard]) -> None:
    guard = make_guard(allow=["explode"])
    history = chat(guarded(fns, guard), tool_calls(("c1", "explode", {"why": "disk full"})))
    assert fns.ran == [("explode", {"why": "disk full"})]
    assert responses(history)["c1"] == "Error: tool failed: disk full"
    assert [e.body["detail"]["status"] for e in guard.audit_log.entries() if e.event == "result"] == ["error"]


def test_protect_works_on_any_agent_but_only_the_mixin_binds_call_ids(
    fns: Functions, make_guard: Callable[..., Guard], events: Any
) -> None:
    guard = make_guard(allow=["search"])
    plain = ConversableAgent("plain", llm_config=False, human_input_mode="NEVER")
    history = chat(guarded(fns, guard, runner=plain), tool_calls(("c1", "transfer", {"amount": "1.00", "to": "x"})))
    assert fns.ran == [] and "TOOL_NOT_ALLOWED" in responses(history)["c1"]
    assert events(guard) == [("denial", False, ["TOOL_NOT_ALLOWED"], None)]


def test_functions_registered_after_protect_are_guarded_by_the_mixin(
    fns: Functions, make_guard: Callable[..., Guard], events: Any
) -> None:
    guard = make_guard(allow=["search"])
    runner = guarded(fns, guard)
    late: list[str] = []
    runner.register_function({"wipe": lambda disk: late.append(disk) or "wiped"})
    history = chat(runner, tool_calls(("c1", "wipe", {"disk": "/dev/sda"})))
    assert late == [] and "TOOL_NOT_ALLOWED" in responses(history)["c1"]
    assert events(guard) == [("denial", False, ["TOOL_NOT_ALLOWED"], "c1")]


def test_a_mixin_agent_without_a_gate_runs_nothing(fns: Functions) -> None:
    runner = executor()
    runner.register_function(fns.map())
    history = chat(runner, tool_calls(("c1", "search", {"q": "x"})))
    assert fns.ran == [] and "no gate configured" in responses(history)["c1"]


def test_register_for_execution_functions_are_guarded(make_guard: Callable[..., Guard], events: Any) -> None:
    guard = make_guard(allow=["add"])
    runner = executor()
    ran: list[tuple[int, int]] = []

    @runner.register_for_execution(name="add")
    def add(a: int, b: int = 2) -> int:
        ran.append((a, b))
        return a + b

    ExecAuthFunctionGate(guard, principal="user-42").protect(runner)
    history = chat(runner, tool_calls(("c1", "add", {"a": 40})))
    assert ran == [(40, 2)] and responses(history)["c1"] == "42"
    assert events(guard)[0] == ("execution", True, ["TOOL_ALLOWED"], "c1")


class Console(GuardedExecutor):
    """The human-input path of the framework, answered by a script."""

    answers: list[str]
    prompts: list[str]

    def get_human_input(self, prompt: str, **kwargs: Any) -> str:
        self.prompts.append(prompt)
        return self.answers.pop(0)


@pytest.mark.parametrize(("answer", "runs"), [("approve", True), ("no", False)])
def test_approval_through_the_agents_human_input(
    fns: Functions, make_guard: Callable[..., Guard], events: Any, answer: str, runs: bool
) -> None:
    guard = make_guard(require_approval=["transfer"])
    console = Console("console", llm_config=False, human_input_mode="NEVER")
    console.answers, console.prompts = [answer], []
    guarded(fns, guard, runner=console, approver=human_input_approver(console, approver="alice"))
    history = chat(console, tool_calls(("c1", "transfer", {"amount": "50.00", "to": "bob"})))
    seen = responses(history)["c1"]
    assert len(console.prompts) == 1 and "sha256:" in console.prompts[0] and "50.00" in console.prompts[0]
    assert bool(fns.ran) is runs
    if runs:
        assert seen == "sent 50.00 to bob"
        assert "APPROVAL_GRANTED" in next(e for e in events(guard) if e[0] == "execution")[2]
    else:
        assert "APPROVAL_REJECTED" in seen
        assert events(guard)[-1] == ("denial", False, ["APPROVAL_REJECTED"], "c1")


def test_pending_approval_then_approve_and_run(fns: Functions, make_guard: Callable[..., Guard], events: Any) -> None:
    # The approval layer alone: with the effect ledger (the default) the re-sent approval
    # of the same call is answered from the ledger first.
    guard = make_guard(require_approval=["transfer", "lookup"], ledger=False)
    runner = executor()
    runner.register_function(fns.map())
    gate = ExecAuthFunctionGate(guard, principal="user-42")
    gate.protect(runner)
    seen = responses(chat(runner, tool_calls(("c1", "transfer", {"amount": "50.00", "to": "bob"}))))["c1"]
    [pending] = gate.pending_approvals()
    assert fns.ran == [] and "APPROVAL_REQUIRED" in seen and pending.proposal_digest in seen

    assert gate.approve_and_run(pending.proposal_digest, approver="alice") == "sent 50.00 to bob"
    assert fns.ran == [("transfer", {"amount": "50.00", "to": "bob", "memo": "none"})]
    execution = [e for e in events(guard) if e[0] == "execution"]
    assert len(execution) == 1 and execution[0][3] == "c1" and "APPROVAL_GRANTED" in execution[0][2]
    with pytest.raises(ExecutionDenied) as again:  # re-sent: the request's approval is spent
        gate.approve_and_run(pending.proposal_digest, approver="alice")
    assert again.value.reason_codes == ("APPROVAL_USED",) and len(fns.ran) == 1
    assert events(guard)[-1] == ("denial", False, ["APPROVAL_USED"], "c1")

    chat(runner, tool_calls(("c2", "lookup", {"key": "k"})))
    [async_pending] = gate.pending_approvals()
    with pytest.raises(TypeError, match="aapprove_and_run"):
        gate.approve_and_run(async_pending.proposal_digest, approver="alice")
    assert asyncio.run(gate.aapprove_and_run(async_pending.proposal_digest, approver="alice")) == "value of k"

    chat(runner, tool_calls(("c3", "transfer", {"amount": "9.00", "to": "eve"})))
    [third] = gate.pending_approvals()
    assert gate.reject(third.request_id, approver="alice", comment="unknown payee").state == "rejected"
    with pytest.raises(ExecutionDenied) as refused:
        gate.resume(third.request_id)
    assert refused.value.reason_codes == ("APPROVAL_REJECTED",)
    assert [name for name, _ in fns.ran] == ["transfer", "lookup"]
    assert events(guard)[-1] == ("denial", False, ["APPROVAL_REJECTED"], "c3")


def test_an_approval_funds_one_run_across_turns(fns: Functions, make_guard: Callable[..., Guard], events: Any) -> None:
    """The field test's replay (issue 16): the approval sent again once the call ran is
    refused by the guard; the identical call (same call id) in a later chat is a new
    request, approved afresh; each approval runs the transfer once."""
    guard = make_guard(require_approval=["transfer"], ledger=False)  # the approval layer alone
    runner = executor()
    runner.register_function(fns.map())
    gate = ExecAuthFunctionGate(guard, principal="user-42")
    gate.protect(runner)
    transfer = ("c1", "transfer", {"amount": "50.00", "to": "bob"})
    chat(runner, tool_calls(transfer))
    [first] = gate.pending_approvals()
    gate.approve_and_run(first.proposal_digest, approver="alice")
    with pytest.raises(ExecutionDenied) as again:
        gate.approve_and_run(first.proposal_digest, approver="alice")
    assert again.value.reason_codes == ("APPROVAL_USED",) and len(fns.ran) == 1
    assert events(guard)[-1] == ("denial", False, ["APPROVAL_USED"], "c1")

    chat(runner, tool_calls(transfer))  # a later chat proposes the identical call
    [second] = gate.pending_approvals()
    assert second.proposal_digest == first.proposal_digest
    assert gate.approve_and_run(second.proposal_digest, approver="alice") == "sent 50.00 to bob"
    assert len(fns.ran) == 2
    with pytest.raises(ExecutionDenied):
        gate.approve_and_run(second.proposal_digest, approver="alice")
    assert len(fns.ran) == 2


def test_the_unified_approval_flow(fns: Functions, events: Any) -> None:
    """Issue 16: the call pauses with an approval request id; approve -> resume runs it
    once; the same answer re-sent is refused; reject and expiry deny."""
    import time

    from execauth_core import AllowListPolicy, FixedClock
    from execauth_core.approval_flow import GATE_METHODS, ApprovalGate

    for name in GATE_METHODS:
        assert inspect.signature(getattr(ExecAuthFunctionGate, name)) == inspect.signature(getattr(ApprovalGate, name))
    clock = FixedClock(int(time.time()))
    guard = Guard.local(AllowListPolicy([], require_approval=["transfer"]), clock=clock)
    runner = executor()
    runner.register_function(fns.map())
    gate = ExecAuthFunctionGate(guard, principal="user-42")
    gate.protect(runner)
    seen = responses(chat(runner, tool_calls(("c1", "transfer", {"amount": "50.00", "to": "bob"}))))["c1"]
    [pending] = gate.pending_approvals()
    rid = pending.request_id
    assert rid in seen and gate.approval_status(rid) == "pending" and fns.ran == []
    with pytest.raises(ExecutionDenied) as early:
        gate.resume(rid)
    assert early.value.reason_codes == ("APPROVAL_REQUIRED",)
    gate.approve(rid, approver="alice")
    assert gate.wait_for_approval(rid, timeout=1, poll_interval=0.01) == "approved"
    assert gate.resume(rid) == "sent 50.00 to bob" and len(fns.ran) == 1
    with pytest.raises(ExecutionDenied) as again:
        gate.resume(rid)
    assert again.value.reason_codes == ("APPROVAL_USED",) and len(fns.ran) == 1

    chat(runner, tool_calls(("c2", "transfer", {"amount": "5.00", "to": "eve"})))
    [second] = gate.pending_approvals()
    gate.reject(second.request_id, approver="alice", comment="no")
    with pytest.raises(ExecutionDenied) as rejected:
        gate.resume(second.request_id)
    assert rejected.value.reason_codes == ("APPROVAL_REJECTED",)
    chat(runner, tool_calls(("c3", "transfer", {"amount": "6.00", "to": "eve"})))
    [third] = gate.pending_approvals()
    clock.advance(3601)
    with pytest.raises(ExecutionDenied) as expired:
        gate.resume(third.request_id)
    assert expired.value.reason_codes == ("APPROVAL_EXPIRED",) and len(fns.ran) == 1
    assert events(guard)[-1] == ("denial", False, ["APPROVAL_EXPIRED"], "c3")
