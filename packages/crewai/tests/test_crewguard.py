"""CrewGuard through CrewAI's real agent loop (Crew.kickoff -> AgentExecutor ->
tool hooks -> tool), driven by a scripted model. Every test checks what really
ran (the ledger), what the model was shown and what the audit log holds."""

from __future__ import annotations

import io
import threading
import warnings
from typing import Any

import pytest
from crewai.hooks import (
    get_after_tool_call_hooks,
    get_before_tool_call_hooks,
    register_before_tool_call_hook,
    unregister_before_tool_call_hook,
)
from crewai.hooks.dispatch import InterceptionPoint, get_scoped_hooks, register_scoped
from crewai.tools import BaseTool
from crewai.tools.tool_failure import ToolExecutionFailedError, ToolFailure, ToolFailurePolicy

import execauth_crewai
from execauth_core import AuthorizationRequest, ConfigurationError, ExecutionDenied, StoreUnavailable
from execauth_crewai import CREWAI_BLOCKED_PREFIX, CrewGuard, GuardedTool, console_approver
from execauth_crewai.testing import react_action, react_final, tool_call, tool_results

from .helpers import audit, crew_for, llm_of

PATHS = pytest.mark.parametrize("native", [True, False], ids=["native", "react"])


def one_call(name: str, args: dict[str, Any], *, native: bool, call_id: str = "call_1") -> list[Any]:
    """The script of a model that calls one tool, then answers."""
    if native:
        return [[tool_call(name, args, call_id)], "done"]
    return [react_action(name, args), react_final("done")]


# -- the basic outcomes ---------------------------------------------------------


@PATHS
def test_allowed_call_runs_once_with_its_bound_arguments(native, ledger, tools, make_guard):
    guard = make_guard(["search"])
    cg = CrewGuard(guard, principal="user-42")
    crew = crew_for([cg.tool(tools["search"])], one_call("search", {"q": "refunds"}, native=native), native=native)

    cg.kickoff(crew)

    assert ledger.calls == [("search", {"q": "refunds", "limit": 3})]
    assert tool_results(llm_of(crew)) == ["results for refunds"]
    assert audit(guard) == [("execution", True, ["TOOL_ALLOWED"], "search")]
    execution = next(e for e in guard.audit_log.entries() if e.event == "execution")
    # The proposal carried the defaulted argument, the agent and (native only) the call id.
    assert execution.body["agent"] == "researcher" and execution.body["principal"] == "user-42"
    assert execution.body["call_id"] == ("call_1" if native else None)


@PATHS
def test_denied_call_never_runs_and_the_model_sees_the_reason_code(native, ledger, tools, make_guard):
    guard = make_guard(["search"])
    cg = CrewGuard(guard, principal="user-42")
    crew = crew_for(
        [cg.tool(tools["drop_table"])], one_call("drop_table", {"table": "users"}, native=native), native=native
    )

    cg.kickoff(crew)

    assert ledger.calls == []
    [seen] = tool_results(llm_of(crew))
    assert "TOOL_NOT_ALLOWED" in seen and "drop_table" in seen
    assert audit(guard) == [("denial", False, ["TOOL_NOT_ALLOWED"], "drop_table")]


def test_a_denial_is_a_crewai_tool_failure(ledger, tools, make_guard):
    """CrewAI records the denial as a structured failure on the task output."""
    guard = make_guard([])
    cg = CrewGuard(guard, principal="user-42")
    crew = crew_for([cg.tool(tools["drop_table"])], one_call("drop_table", {"table": "t"}, native=True))

    out = cg.kickoff(crew)

    [record] = out.tasks_output[0].tool_failures
    assert record.failure.code == "POLICY_EMPTY" and record.failure.details["outcome"] == "DENY"
    assert record.failure.details["proposal_digest"].startswith("sha256:")
    assert ledger.calls == []


def test_replayed_token_is_refused(ledger, tools, make_guard):
    """A token_provider that hands out the same token twice: the second call is refused."""
    guard = make_guard(["search"])
    issued: list[str] = []

    def same_token(request: AuthorizationRequest) -> str | None:
        if not issued:
            token = guard.authorize(request).token
            assert token is not None
            issued.append(token)
        return issued[0]

    cg = CrewGuard(guard, principal="user-42", token_provider=same_token)
    script = [[tool_call("search", {"q": "x"}, "call_1")], [tool_call("search", {"q": "x"}, "call_1")], "done"]
    crew = crew_for([cg.tool(tools["search"])], script)

    cg.kickoff(crew)

    assert ledger.names() == ["search"]
    assert "TOKEN_REPLAYED" in tool_results(llm_of(crew))[-1]
    assert audit(guard)[-1] == ("denial", False, ["TOKEN_REPLAYED"], "search")


def test_token_provider_without_a_token_denies(ledger, tools, make_guard):
    guard = make_guard(["search"])
    cg = CrewGuard(guard, principal="user-42", token_provider=lambda request: None)
    crew = crew_for([cg.tool(tools["search"])], one_call("search", {"q": "x"}, native=True))

    cg.kickoff(crew)

    assert ledger.calls == []
    assert "NO_TOKEN" in tool_results(llm_of(crew))[0]
    assert audit(guard) == [("denial", False, ["NO_TOKEN"], "search")]


def test_parallel_native_calls_are_each_decided_once(ledger, tools, make_guard):
    """Several calls in one model turn run on CrewAI's thread pool: each gets its own decision."""
    guard = make_guard(["search"])
    cg = CrewGuard(guard, principal="user-42")
    script = [
        [
            tool_call("search", {"q": "a"}, "call_a"),
            tool_call("drop_table", {"table": "users"}, "call_b"),
            tool_call("search", {"q": "c"}, "call_c"),
        ],
        "done",
    ]
    crew = crew_for(cg.tools(tools["search"], tools["drop_table"]), script)

    cg.kickoff(crew)

    assert sorted(args["q"] for name, args in ledger.calls if name == "search") == ["a", "c"]
    assert "drop_table" not in ledger.names()
    results = tool_results(llm_of(crew))
    assert sorted(results[i] for i in (0, 2)) == ["results for a", "results for c"]
    assert "TOOL_NOT_ALLOWED" in results[1]
    decided = sorted(
        (e.body["call_id"], e.event) for e in guard.audit_log.entries() if e.event in ("denial", "execution")
    )
    assert decided == [("call_a", "execution"), ("call_b", "denial"), ("call_c", "execution")]


@pytest.mark.asyncio
@PATHS
async def test_async_kickoff(native, ledger, tools, make_guard):
    """Crew.akickoff: CrewAI's async ReAct path runs the tool on an executor thread
    without copying the context; the admission still reaches the wrapper."""
    guard = make_guard(["search"])
    cg = CrewGuard(guard, principal="user-42")
    script = (
        [[tool_call("search", {"q": "x"}), tool_call("drop_table", {"table": "t"}, "call_2")], "done"]
        if native
        else [react_action("search", {"q": "x"}), react_action("drop_table", {"table": "t"}), react_final("done")]
    )
    crew = crew_for(cg.tools(tools["search"], tools["drop_table"]), script, native=native)

    await cg.akickoff(crew)

    assert ledger.calls == [("search", {"q": "x", "limit": 3})]
    results = tool_results(llm_of(crew))
    assert results[0] == "results for x" and "TOOL_NOT_ALLOWED" in results[1]
    assert sorted(audit(guard)) == [
        ("denial", False, ["TOOL_NOT_ALLOWED"], "drop_table"),
        ("execution", True, ["TOOL_ALLOWED"], "search"),
    ]


# -- fail closed ----------------------------------------------------------------


def test_exception_inside_the_guard_blocks(ledger, tools, make_guard):
    class BrokenReplayStore:
        def consume(self, token_id: str, *, expires_at: int, now: int) -> bool:
            raise RuntimeError("replay store bug")

    guard = make_guard(["search"])
    guard.replay_store = BrokenReplayStore()  # type: ignore[assignment]
    cg = CrewGuard(guard, principal="user-42")
    crew = crew_for([cg.tool(tools["search"])], one_call("search", {"q": "x"}, native=True))

    cg.kickoff(crew)

    assert ledger.calls == []
    assert "GUARD_ERROR" in tool_results(llm_of(crew))[0]
    assert audit(guard) == [("denial", False, ["GUARD_ERROR"], "search")]


def test_store_outage_blocks(ledger, tools, make_guard):
    class Down:
        def consume(self, token_id: str, *, expires_at: int, now: int) -> bool:
            raise StoreUnavailable("replay store unreachable")

    guard = make_guard(["search"])
    guard.replay_store = Down()  # type: ignore[assignment]
    cg = CrewGuard(guard, principal="user-42")
    crew = crew_for([cg.tool(tools["search"])], one_call("search", {"q": "x"}, native=False), native=False)

    cg.kickoff(crew)

    assert ledger.calls == []
    assert "STORE_UNAVAILABLE" in tool_results(llm_of(crew))[0]
    assert audit(guard) == [("denial", False, ["STORE_UNAVAILABLE"], "search")]


@PATHS
def test_exception_inside_our_hook_blocks(native, ledger, tools, make_guard):
    """CrewAI swallows a hook's exception and runs the tool: ours never lets one out."""

    def principal(context: Any) -> str:
        raise RuntimeError("identity service down")

    guard = make_guard(["search"])
    cg = CrewGuard(guard, principal=principal)
    crew = crew_for([cg.tool(tools["search"])], one_call("search", {"q": "x"}, native=native), native=native)

    cg.kickoff(crew)

    assert ledger.calls == []
    [seen] = tool_results(llm_of(crew))
    assert "admission hook failed" in seen and not seen.startswith(CREWAI_BLOCKED_PREFIX)
    assert audit(guard) == [("denial", False, ["NO_TOKEN"], "search")]


def test_crewai_really_fails_open_on_hook_exceptions(ledger, tools):
    """The hazard itself, on the installed CrewAI: a hook that raises lets the tool run."""

    def buggy(context: Any) -> None:
        raise RuntimeError("bug in a hook")

    register_before_tool_call_hook(buggy)
    try:
        crew_for([tools["search"]], one_call("search", {"q": "x"}, native=True)).kickoff()
    finally:
        unregister_before_tool_call_hook(buggy)
    assert ledger.names() == ["search"]


def test_unguarded_tool_in_a_guarded_crew_is_blocked(ledger, tools, make_guard):
    guard = make_guard(["search"])
    cg = CrewGuard(guard, principal="user-42")
    crew = crew_for([tools["search"]], one_call("search", {"q": "x"}, native=True))  # not wrapped

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cg.kickoff(crew)
    assert any("search not wrapped" in str(w.message) for w in caught)

    assert ledger.calls == []
    [seen] = tool_results(llm_of(crew))
    assert "not guarded by execauth" in seen and "NO_TOKEN" in seen
    assert audit(guard) == [("denial", False, ["NO_TOKEN"], "search")]


@PATHS
def test_hook_layer_bypassed_the_wrapper_blocks(native, ledger, tools, make_guard):
    """The crew runs without CrewGuard's hooks (outside guarding()): the tool refuses."""
    guard = make_guard(["search"])
    cg = CrewGuard(guard, principal="user-42")
    crew = crew_for([cg.tool(tools["search"])], one_call("search", {"q": "x"}, native=native), native=native)

    crew.kickoff()  # no cg.guarding()

    assert ledger.calls == []
    assert "did not pass the execauth hook" in tool_results(llm_of(crew))[0]
    assert audit(guard) == [("denial", False, ["NO_TOKEN"], "search")]


def test_llm_side_tool_execution_skips_hooks_and_the_wrapper_blocks(ledger, tools, make_guard):
    """CrewAI's provider LLMs execute ``available_functions`` themselves
    (``BaseLLM._handle_tool_execution``) without any tool hook: a real bypass path."""
    guard = make_guard(["search"])
    cg = CrewGuard(guard, principal="user-42")
    guarded = cg.tool(tools["search"])
    llm = llm_of(crew_for([guarded], []))

    with cg.guarding():
        result = llm._handle_tool_execution("search", {"q": "x"}, {"search": guarded.run})

    assert ledger.calls == []
    assert result is not None and "NO_TOKEN" in result
    assert audit(guard) == [("denial", False, ["NO_TOKEN"], "search")]


def test_positional_arguments_are_bound_before_the_decision(ledger, tools, make_guard):
    """``run("x", 50)`` is proposed as {"q": "x", "limit": 50}: nothing escapes by position."""
    guard = make_guard(["search"])
    cg = CrewGuard(guard, principal="user-42")
    guarded = cg.tool(tools["search"])

    failure = guarded.run("x", 50)  # no hook admitted it: refused, but recorded with bound args

    assert isinstance(failure, ToolFailure) and failure.code == "NO_TOKEN"
    assert ledger.calls == []
    [denial] = [e for e in guard.audit_log.entries() if e.event == "denial"]
    request = AuthorizationRequest(tool="search", args={"q": "x", "limit": 50}, principal="user-42")
    assert denial.body["proposal_digest"] == request.content_digest()


def test_arguments_changed_after_our_hook_are_refused(ledger, tools, make_guard):
    """A hook that runs after ours rewrites the arguments: the admitted proposal no
    longer matches what the tool would receive, so it does not run."""
    guard = make_guard(["search"])
    cg = CrewGuard(guard, principal="user-42")
    crew = crew_for([cg.tool(tools["search"])], one_call("search", {"q": "x"}, native=True))

    with cg.guarding():
        register_scoped(InterceptionPoint.PRE_TOOL_CALL, lambda ctx: ctx.tool_input.update(q="DROP TABLE"))
        crew.kickoff()

    assert ledger.calls == []
    assert "NO_TOKEN" in tool_results(llm_of(crew))[0]


def test_tool_exception_is_a_failure_not_a_retry(ledger, tools, make_guard):
    """CrewAI's ReAct path retries a tool that raised; a retry would be an unadmitted
    second execution, so the error comes back as a ToolFailure instead."""
    guard = make_guard(["flaky"])
    cg = CrewGuard(guard, principal="user-42")
    crew = crew_for([cg.tool(tools["flaky"])], one_call("flaky", {"q": "x"}, native=False), native=False)

    cg.kickoff(crew)

    assert ledger.names() == ["flaky"]
    assert "backend exploded" in tool_results(llm_of(crew))[0]
    results = [e.body["detail"] for e in guard.audit_log.entries() if e.event == "result"]
    assert results and results[0]["status"] == "error"


def test_repeated_identical_calls_are_each_authorized(ledger, tools, make_guard):
    """CrewAI's tool cache would answer the second call without running the tool (and
    without the guard); guarded tools are never cached, so each call is decided."""
    guard = make_guard(["search"])
    cg = CrewGuard(guard, principal="user-42")
    script = [[tool_call("search", {"q": "x"}, "c1")], [tool_call("search", {"q": "x"}, "c2")], "done"]
    crew = crew_for([cg.tool(tools["search"])], script)

    cg.kickoff(crew)

    assert ledger.names() == ["search", "search"]
    assert [e[0] for e in audit(guard)] == ["execution", "execution"]


def test_a_guarded_tool_without_a_guard_refuses(ledger, tools):
    """What a checkpoint restore would rebuild: the type, without its guard."""
    orphan = GuardedTool(name="search", description="d")

    result = orphan.run(q="x")

    assert isinstance(result, ToolFailure) and result.code == "GUARD_ERROR"
    assert ledger.calls == []


# -- scoping --------------------------------------------------------------------


def test_two_crews_with_different_policies_in_one_process(ledger, tools, make_guard):
    """Two CrewGuards, two crews, two threads at once: each crew sees only its own guard."""
    open_guard, closed_guard = make_guard(["search"]), make_guard(["transfer"])
    open_cg = CrewGuard(open_guard, principal="alice")
    closed_cg = CrewGuard(closed_guard, principal="bob")
    open_crew = crew_for([open_cg.tool(tools["search"])], one_call("search", {"q": "open"}, native=True))
    closed_crew = crew_for([closed_cg.tool(tools["search"])], one_call("search", {"q": "closed"}, native=True))
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(cg: CrewGuard, crew: Any) -> None:
        try:
            with cg.guarding():
                barrier.wait(timeout=10)
                crew.kickoff()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(open_cg, open_crew)),
        threading.Thread(target=run, args=(closed_cg, closed_crew)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert errors == []
    assert ledger.calls == [("search", {"q": "open", "limit": 3})]
    assert tool_results(llm_of(open_crew)) == ["results for open"]
    assert "TOOL_NOT_ALLOWED" in tool_results(llm_of(closed_crew))[0]
    assert audit(open_guard) == [("execution", True, ["TOOL_ALLOWED"], "search")]
    assert audit(closed_guard) == [("denial", False, ["TOOL_NOT_ALLOWED"], "search")]


def test_guarding_registers_nothing_global_and_cleans_up(make_guard):
    guard = make_guard([])
    cg = CrewGuard(guard, principal="p")

    with cg.guarding():
        assert len(get_scoped_hooks(InterceptionPoint.PRE_TOOL_CALL)) == 1
        assert len(get_scoped_hooks(InterceptionPoint.POST_TOOL_CALL)) == 1
        assert get_before_tool_call_hooks() == [] and get_after_tool_call_hooks() == []
        with CrewGuard(guard, principal="q").guarding():  # nesting keeps the outer hooks
            assert len(get_scoped_hooks(InterceptionPoint.PRE_TOOL_CALL)) == 2
        assert len(get_scoped_hooks(InterceptionPoint.PRE_TOOL_CALL)) == 1
    assert get_scoped_hooks(InterceptionPoint.PRE_TOOL_CALL) == []
    assert get_scoped_hooks(InterceptionPoint.POST_TOOL_CALL) == []


def test_a_global_hook_that_blocks_first_keeps_its_own_message(ledger, tools, make_guard):
    """Our after-hook only rewrites the calls our hook blocked."""

    def deny_all(context: Any) -> bool:
        return False

    guard = make_guard(["search"])
    cg = CrewGuard(guard, principal="user-42")
    crew = crew_for([cg.tool(tools["search"])], one_call("search", {"q": "x"}, native=True))
    register_before_tool_call_hook(deny_all)
    try:
        cg.kickoff(crew)
    finally:
        unregister_before_tool_call_hook(deny_all)

    assert ledger.calls == []
    assert tool_results(llm_of(crew))[0].startswith(CREWAI_BLOCKED_PREFIX)
    assert audit(guard) == []  # our hook never saw the call; nothing was decided


# -- approvals ------------------------------------------------------------------


def test_approval_through_crewai_human_input(ledger, tools, make_guard, monkeypatch):
    """REQUIRE_APPROVAL asks at the console through CrewAI's request_human_input."""
    prompts: list[str] = []
    monkeypatch.setattr("sys.stdin", io.StringIO("approve\n"))
    monkeypatch.setattr("crewai.hooks.tool_hooks.PRINTER.print", lambda content="", **kw: prompts.append(str(content)))
    guard = make_guard(["search", "transfer"], require_approval=["transfer"])
    cg = CrewGuard(guard, principal="user-42", approver=console_approver("alice"))
    crew = crew_for([cg.tool(tools["transfer"])], one_call("transfer", {"amount": "50.00", "to": "bob"}, native=True))

    cg.kickoff(crew)

    assert ledger.calls == [("transfer", {"amount": "50.00", "to": "bob"})]
    assert any("sha256:" in p and "transfer" in p for p in prompts)
    assert [e[0:3] for e in audit(guard)] == [
        ("denial", False, ["APPROVAL_REQUIRED"]),
        ("execution", True, ["TOOL_ALLOWED", "APPROVAL_GRANTED"]),
    ]


def test_approval_refused_at_the_console(ledger, tools, make_guard, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("no\n"))
    monkeypatch.setattr("crewai.hooks.tool_hooks.PRINTER.print", lambda content="", **kw: None)
    guard = make_guard(["transfer"], require_approval=["transfer"])
    cg = CrewGuard(guard, principal="user-42", approver=console_approver("alice"))
    crew = crew_for([cg.tool(tools["transfer"])], one_call("transfer", {"amount": "50.00", "to": "bob"}, native=True))

    cg.kickoff(crew)

    assert ledger.calls == []
    assert "APPROVAL_REQUIRED" in tool_results(llm_of(crew))[0]
    assert len(cg.pending_approvals()) == 1


def test_pending_approval_then_resume_runs_exactly_that_proposal(ledger, tools, make_guard):
    guard = make_guard(["transfer"], require_approval=["transfer"])
    cg = CrewGuard(guard, principal="user-42")
    crew = crew_for([cg.tool(tools["transfer"])], one_call("transfer", {"amount": "50.00", "to": "bob"}, native=True))

    cg.kickoff(crew)

    assert ledger.calls == []
    [seen] = tool_results(llm_of(crew))
    [pending] = cg.pending_approvals()
    assert "APPROVAL_REQUIRED" in seen and pending.proposal_digest in seen and pending.request_id in seen
    assert pending.arguments == {"amount": "50.00", "to": "bob"}

    cg.approve(pending.request_id, approver="alice")
    assert cg.resume(pending.request_id) == "sent 50.00 to bob"
    assert ledger.calls == [("transfer", {"amount": "50.00", "to": "bob"})]
    assert cg.pending_approvals() == []
    assert audit(guard)[-1] == ("execution", True, ["TOOL_ALLOWED", "APPROVAL_GRANTED"], "transfer")


def test_a_grant_for_other_arguments_does_not_authorize(ledger, tools, make_guard):
    guard = make_guard(["transfer"], require_approval=["transfer"])
    cg = CrewGuard(guard, principal="user-42")
    crew = crew_for([cg.tool(tools["transfer"])], one_call("transfer", {"amount": "5.00", "to": "bob"}, native=True))
    cg.kickoff(crew)
    [small] = cg.pending_approvals()
    crew = crew_for([cg.tool(tools["transfer"])], one_call("transfer", {"amount": "5000.00", "to": "eve"}, native=True))
    cg.kickoff(crew)
    big = next(p for p in cg.pending_approvals() if p.proposal_digest != small.proposal_digest)

    cg.approve(small.request_id, approver="alice")
    # The approval of the small transfer names its own request: the big one is still
    # waiting, and runs nothing.
    with pytest.raises(ExecutionDenied) as denied:
        cg.resume(big.request_id)

    assert denied.value.reason_codes == ("APPROVAL_REQUIRED",)
    assert ledger.calls == []


def test_approve_then_the_same_proposal_runs_in_the_crew(ledger, tools, make_guard):
    """approve() keeps the grant for the identical proposal (same call id here)."""
    guard = make_guard(["transfer"], require_approval=["transfer"])
    cg = CrewGuard(guard, principal="user-42")
    script = one_call("transfer", {"amount": "5.00", "to": "bob"}, native=True)
    guarded = cg.tool(tools["transfer"])
    cg.kickoff(crew_for([guarded], list(script)))
    [pending] = cg.pending_approvals()

    cg.approve(pending.request_id, approver="alice")
    crew = crew_for([guarded], list(script))
    cg.kickoff(crew)

    assert ledger.calls == [("transfer", {"amount": "5.00", "to": "bob"})]
    assert tool_results(llm_of(crew)) == ["sent 5.00 to bob"]


def test_approval_required_can_stop_the_crew_with_the_pending_approval(ledger, tools, make_guard):
    """With CrewAI's tool_failure_policy=RAISE the kickoff stops with an error that
    carries the pending approval, bound to the proposal digest."""
    guard = make_guard(["transfer"], require_approval=["transfer"])
    cg = CrewGuard(guard, principal="user-42")
    guarded = cg.tool(tools["transfer"])
    guarded.tool_failure_policy = ToolFailurePolicy.RAISE
    crew = crew_for([guarded], one_call("transfer", {"amount": "5.00", "to": "bob"}, native=True))

    with pytest.raises(ToolExecutionFailedError) as stopped:
        cg.kickoff(crew)

    details = stopped.value.record.failure.details
    assert stopped.value.record.failure.code == "APPROVAL_REQUIRED"
    assert details["pending_approval"]["proposal_digest"] == details["proposal_digest"]
    assert details["request_id"] in [p.request_id for p in cg.pending_approvals()]
    assert ledger.calls == []


# -- API surface ----------------------------------------------------------------


def test_public_api_is_pinned():
    assert sorted(execauth_crewai.__all__) == sorted(
        [
            "Approver",
            "CrewGuard",
            "GuardedTool",
            "TokenProvider",
            "CREWAI_BLOCKED_PREFIX",
            "CREWAI_VERSION",
            "__version__",
            "agent_role",
            "console_approver",
            "native_call_id",
        ]
    )
    assert execauth_crewai.__version__ == "0.1.0"


def test_wrapping_keeps_the_tool_interface(tools, make_guard):
    cg = CrewGuard(make_guard([]), principal="p")
    guarded = cg.tool(tools["search"])
    assert (guarded.name, guarded.description) == ("search", tools["search"].description)
    assert guarded.args_schema is tools["search"].args_schema
    assert guarded.inner is tools["search"] and guarded.owner is cg
    with pytest.raises(TypeError):
        cg.tool(guarded)


def test_plain_functions_can_be_guarded(ledger, make_guard):
    def lookup(city: str) -> str:
        """Look a city up."""
        ledger.calls.append(("lookup", {"city": city}))
        return f"{city}: sunny"

    guard = make_guard(["lookup"])
    cg = CrewGuard(guard, principal="p")
    crew = crew_for([cg.tool(lookup)], one_call("lookup", {"city": "Oslo"}, native=True))

    cg.kickoff(crew)

    assert ledger.calls == [("lookup", {"city": "Oslo"})]
    assert tool_results(llm_of(crew)) == ["Oslo: sunny"]


def test_the_quickstart_runs_offline(capsys):
    """examples/crewai_quickstart.py: one call allowed, one denied, one approved and resumed."""
    import runpy
    from pathlib import Path

    example = Path(__file__).resolve().parents[3] / "examples" / "crewai_quickstart.py"
    runpy.run_path(str(example), run_name="__main__")

    out = capsys.readouterr().out
    assert "3 articles about 'refund policy'" in out
    assert "TOOL_NOT_ALLOWED" in out and "APPROVAL_REQUIRED" in out
    assert "Resumed after approval: refunded 25.00 on A-1" in out
    assert "denial    executed=False delete_account" in out


@pytest.mark.asyncio
async def test_guarded_arun_decides_through_guard_arun(ledger, make_guard):
    """BaseTool.arun (not used by CrewAI 1.15.30's loops, public all the same)."""
    from crewai.hooks.tool_hooks import ToolCallHookContext, run_before_tool_call_hooks

    class AsyncSearch(BaseTool):
        name: str = "search"
        description: str = "Search, asynchronously."

        def _run(self, q: str) -> str:
            raise AssertionError("the async path must be used")

        async def _arun(self, q: str) -> str:
            ledger.calls.append(("search", {"q": q}))
            return f"async results for {q}"

    guard = make_guard(["search"])
    cg = CrewGuard(guard, principal="user-42")
    guarded = cg.tool(AsyncSearch())

    refused = await guarded.arun(q="x")  # no hook admitted it
    with cg.guarding():
        context = ToolCallHookContext(tool_name="search", tool_input={"q": "x"}, tool=guarded.to_structured_tool())
        assert run_before_tool_call_hooks(context) is False  # CrewAI's dispatcher: not blocked
        result = await guarded.arun(q="x")

    assert isinstance(refused, ToolFailure) and refused.code == "NO_TOKEN"
    assert result == "async results for x"
    assert ledger.calls == [("search", {"q": "x"})]
    assert audit(guard) == [
        ("denial", False, ["NO_TOKEN"], "search"),
        ("execution", True, ["TOOL_ALLOWED"], "search"),
    ]


# -- options are checked when the CrewGuard is built (issue 15, item 10) --------------------


def test_a_fixed_agent_id_is_put_in_every_proposal(ledger, tools, make_guard):
    guard = make_guard(["search"])
    cg = CrewGuard(guard, principal="user-42", agent_id="billing-bot")
    crew = crew_for([cg.tool(tools["search"])], one_call("search", {"q": "refunds"}, native=True))

    cg.kickoff(crew)

    assert ledger.calls == [("search", {"q": "refunds", "limit": 3})]
    execution = next(e for e in guard.audit_log.entries() if e.event == "execution")
    assert execution.body["agent"] == "billing-bot"


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("agent_id", 42, "agent_id must be a non-empty string or a callable of the hook context"),
        ("agent_id", "", "agent_id must be a non-empty string"),
        ("call_id", ["c1"], "call_id must be a non-empty string or a callable"),
        ("principal", None, "principal must be a non-empty string or a callable"),
        ("token_provider", "tok", "token_provider must be None or a callable"),
        ("approver", "carol", "approver must be None or a callable"),
        ("admission_ttl", "30", "admission_ttl must be a number of at least"),
        ("max_pending", 0, "max_pending must be an integer of at least 1"),
    ],
)
def test_a_bad_option_is_refused_when_built(make_guard, option, value, expected):
    kwargs = {"principal": "user-42", option: value}
    with pytest.raises(ConfigurationError) as info:
        CrewGuard(make_guard(["search"]), **kwargs)
    assert expected in str(info.value) and str(info.value).startswith("CrewGuard: ")
    with pytest.raises(ConfigurationError, match=r"guard must be an execauth_core\.Guard"):
        CrewGuard(object(), principal="user-42")


# -- an unwrapped tool is named before the run (issue 15, item 11) ---------------------------


def test_kickoff_warns_about_an_unwrapped_tool_and_the_hook_still_refuses_it(ledger, tools, make_guard):
    guard = make_guard(["search", "drop_table"])
    cg = CrewGuard(guard, principal="user-42")
    crew = crew_for(
        [cg.tool(tools["search"]), tools["drop_table"]], one_call("drop_table", {"table": "users"}, native=True)
    )
    assert cg.unwrapped_tools(crew) == ["drop_table"]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cg.kickoff(crew)
    mine = [w for w in caught if issubclass(w.category, UserWarning) and "not wrapped" in str(w.message)]
    assert len(mine) == 1 and "drop_table not wrapped with CrewGuard.tool()" in str(mine[0].message)

    assert ledger.calls == []  # inside guarding() the hook refused it
    assert [event for event, *_ in audit(guard)] == ["denial"]


def test_kickoff_of_a_fully_wrapped_crew_does_not_warn(ledger, tools, make_guard, recwarn):
    guard = make_guard(["search"])
    cg = CrewGuard(guard, principal="user-42")
    crew = crew_for([cg.tool(tools["search"])], one_call("search", {"q": "x"}, native=True))
    assert cg.unwrapped_tools(crew) == []
    cg.kickoff(crew)
    assert not [w for w in recwarn if "not wrapped" in str(w.message)]
    assert ledger.names() == ["search"]
