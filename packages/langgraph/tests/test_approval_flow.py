"""The unified approval flow through a real LangGraph agent loop: the interrupt names
the approval request, a person decides it at the authority, the graph resumes with the
request id only. Locally (the guard's queue) and against a real execauth server,
restarted between the request and the approval."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.types import Command

from execauth_core import AllowListPolicy, ConfigurationError, FixedClock, Guard, LocalSigner
from execauth_core.approval_flow import ApprovalTimeout
from execauth_langgraph import APPROVAL_REQUEST

from .harness import build_graph, gate_of, make_tool, scripted, tool_call

T0 = 1_767_607_200
ARGS = {"amount": "25.00", "to": "bob"}


def local_guard(tmp_path: Path, clock: FixedClock | None = None, *, ledger: bool = True) -> Guard:
    return Guard.local(
        AllowListPolicy(["transfer"], require_approval=["transfer"]),
        clock=clock or FixedClock(T0),
        signer=LocalSigner(bytes(range(32))),
        data_dir=tmp_path / "agent",
        approvals=True,
        ledger=ledger,
    )


def graph_for(guard: Guard, runs: list[dict[str, Any]], *turns: AIMessage) -> Any:
    model = scripted(*(turns or (AIMessage("", tool_calls=[tool_call("transfer", ARGS, "c1")]), AIMessage("ok"))))
    return build_graph(
        model, [make_tool("transfer", lambda **kw: runs.append(kw) or "sent", list(ARGS))], guard, principal="alice"
    )


def run(graph: Any, payload: Any = None) -> dict[str, Any]:
    return graph.invoke(payload or {"messages": [HumanMessage("go")]}, {"configurable": {"thread_id": "t1"}})


def paused(out: dict[str, Any]) -> str:
    (intr,) = out["__interrupt__"]
    assert intr.value["type"] == APPROVAL_REQUEST and intr.value["proposal"]["args"] == ARGS
    request_id = intr.value["request_id"]
    assert isinstance(request_id, str) and request_id.startswith("apr_") and intr.value["resume_with"] == request_id
    return request_id


def last_tool_message(out: dict[str, Any]) -> ToolMessage:
    return [m for m in out["messages"] if isinstance(m, ToolMessage)][-1]


def test_local_approve_then_resume_runs_once(tmp_path: Path) -> None:
    runs: list[dict[str, Any]] = []
    guard = local_guard(tmp_path)
    graph = graph_for(guard, runs)
    gate = gate_of(graph)
    rid = paused(run(graph))
    assert runs == [] and gate.approval_status(rid) == "pending"
    (listed,) = gate.pending_approvals()
    assert (listed.request_id, listed.tool, listed.arguments) == (rid, "transfer", ARGS)
    assert listed.expires_at > T0 and listed.proposal_digest.startswith("sha256:")
    gate.approve(rid, approver="carol", comment="checked")
    assert gate.wait_for_approval(rid, timeout=1, poll_interval=0.01) == "approved"
    out = run(graph, Command(resume=rid))
    assert runs == [ARGS] and last_tool_message(out).status == "success"
    assert gate.approval_status(rid) == "consumed" and gate.pending_approvals() == []


def test_resume_before_the_decision_runs_nothing(tmp_path: Path) -> None:
    runs: list[dict[str, Any]] = []
    graph = graph_for(local_guard(tmp_path), runs)
    rid = paused(run(graph))
    out = run(graph, Command(resume=rid))  # nobody decided yet
    assert runs == [] and "APPROVAL_REQUIRED" in str(last_tool_message(out).content)


def test_reject_never_runs(tmp_path: Path) -> None:
    runs: list[dict[str, Any]] = []
    graph = graph_for(local_guard(tmp_path), runs)
    gate = gate_of(graph)
    rid = paused(run(graph))
    gate.reject(rid, approver="carol", comment="wrong payee")
    assert gate.wait_for_approval(rid, timeout=1, poll_interval=0.01) == "rejected"
    out = run(graph, Command(resume=rid))
    assert runs == [] and "APPROVAL_REJECTED" in str(last_tool_message(out).content)


def test_expired_request_denies(tmp_path: Path) -> None:
    runs: list[dict[str, Any]] = []
    clock = FixedClock(T0)
    graph = graph_for(local_guard(tmp_path, clock), runs)
    gate = gate_of(graph)
    rid = paused(run(graph))
    clock.advance(3601)
    assert gate.approval_status(rid) == "expired"
    assert asyncio.run(gate.await_approval(rid, timeout=1, poll_interval=0.01)) == "expired"
    out = run(graph, Command(resume=rid))
    assert runs == [] and "APPROVAL_EXPIRED" in str(last_tool_message(out).content)


def test_waiting_times_out_while_pending(tmp_path: Path) -> None:
    graph = graph_for(local_guard(tmp_path), [])
    rid = paused(run(graph))
    with pytest.raises(ApprovalTimeout) as info:
        gate_of(graph).wait_for_approval(rid, timeout=0.05, poll_interval=0.01)
    assert info.value.reason_code == "APPROVAL_REQUIRED" and rid in str(info.value)


def test_a_free_yes_resumes_nothing(tmp_path: Path) -> None:
    runs: list[dict[str, Any]] = []
    graph = graph_for(local_guard(tmp_path), runs)
    paused(run(graph))
    out = run(graph, Command(resume={"approved": True, "approver": "mallory"}))
    assert runs == [] and "APPROVAL_INVALID" in str(last_tool_message(out).content)


def test_an_old_answer_replayed_in_a_later_turn_is_refused(tmp_path: Path) -> None:
    runs: list[dict[str, Any]] = []
    call = tool_call("transfer", ARGS, "c1")
    # The approval layer alone: with the effect ledger on (the default), the identical
    # call with the same id is answered from the ledger before any approval is asked.
    graph = graph_for(
        local_guard(tmp_path, ledger=False),
        runs,
        AIMessage("", tool_calls=[call]),
        AIMessage("sent"),
        AIMessage("", tool_calls=[call]),
        AIMessage("again"),
    )
    gate = gate_of(graph)
    first = paused(run(graph))
    gate.approve(first, approver="carol")
    run(graph, Command(resume=first))
    second = paused(run(graph, {"messages": [HumanMessage("once more")]}))
    assert second != first
    out = run(graph, Command(resume=first))  # the old answer, re-sent
    assert runs == [ARGS] and "APPROVAL_USED" in str(last_tool_message(out).content)
    assert gate.approval_status(second) == "pending"


# -- against a real execauth server ---------------------------------------------------

POLICY = """\
id: flow-langgraph
epoch: 1
principals:
  - id: alice
    allow_tools: [transfer]
    max_risk_tier: E3
    require_approval_effects: [data.write]
"""

TOOLS = """\
- name: transfer
  version: "1.0"
  effects: [data.write]
  args_schema:
    type: object
    properties: {amount: {type: string}, to: {type: string}}
    required: [amount, to]
"""

AGENT_SECRET = "ea_flow-langgraph-agent-secret-0123456789"
APPROVER_SECRET = "ea_flow-langgraph-approver-secret-012345"


@pytest.fixture
def server_config(tmp_path: Path) -> dict[str, Any]:
    from execauth_server.config import hash_secret

    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "tools.yaml").write_text(TOOLS)
    return {
        "policy": str(tmp_path / "policy.yaml"),
        "manifests": str(tmp_path / "tools.yaml"),
        "data_dir": str(tmp_path / "server-data"),
        "callers": [{"name": "agent", "secret_sha256": hash_secret(AGENT_SECRET), "principals": ["alice"]}],
        "approvers": [{"name": "carol", "secret_sha256": hash_secret(APPROVER_SECRET)}],
    }


def _approve_at_server(url: str, rid: str) -> None:
    r = httpx.post(
        f"{url}/v1/approvals/{rid}/approve",
        json={"comment": "ok"},
        headers={"Authorization": f"Bearer {APPROVER_SECRET}"},
    )
    assert r.status_code == 200, r.text


def test_server_restart_between_request_and_approval(server_config: dict[str, Any]) -> None:
    from execauth_server.testing import running_server

    runs: list[dict[str, Any]] = []
    call = tool_call("transfer", ARGS, "c1")
    with running_server(server_config) as srv:
        port = srv.port
        # The approval layer alone (ledger=False): with the effect ledger the identical
        # call with the same id in the later turn is answered from the ledger instead.
        guard = Guard.remote(srv.url, credential=AGENT_SECRET, ledger=False)
        graph = graph_for(
            guard,
            runs,
            AIMessage("", tool_calls=[call]),
            AIMessage("sent"),
            AIMessage("", tool_calls=[call]),
            AIMessage("again"),
        )
        gate = gate_of(graph)
        rid = paused(run(graph))
        assert gate.approval_status(rid) == "pending"
        assert [p.request_id for p in gate.pending_approvals()] == [rid]
        with pytest.raises(ConfigurationError, match="approver"):
            gate.approve(rid, approver="alice")  # an agent's credential never approves
    # The server is down; it comes back on the same port and data_dir.
    with running_server(server_config, port=port) as srv:
        waited: list[str] = []
        waiter = threading.Thread(
            target=lambda: waited.append(gate.wait_for_approval(rid, timeout=20, poll_interval=0.05))
        )
        waiter.start()
        _approve_at_server(srv.url, rid)
        waiter.join(25)
        assert waited == ["approved"]
        out = run(graph, Command(resume=rid))
        assert runs == [ARGS] and last_tool_message(out).status == "success"
        assert gate.approval_status(rid) == "consumed"
        # A later turn re-proposes the identical call; the old answer is refused.
        second = paused(run(graph, {"messages": [HumanMessage("once more")]}))
        out = run(graph, Command(resume=rid))
        assert runs == [ARGS] and "APPROVAL_USED" in str(last_tool_message(out).content)
        assert gate.approval_status(second) == "pending"
        guard.close()


def test_server_reject_and_expiry_deny(server_config: dict[str, Any]) -> None:
    from execauth_server.testing import running_server

    runs: list[dict[str, Any]] = []
    with running_server(server_config) as srv:
        guard = Guard.remote(srv.url, credential=AGENT_SECRET)
        graph = graph_for(guard, runs)
        rid = paused(run(graph))
        r = httpx.post(
            f"{srv.url}/v1/approvals/{rid}/reject",
            json={"comment": "no"},
            headers={"Authorization": f"Bearer {APPROVER_SECRET}"},
        )
        assert r.status_code == 200, r.text
        assert gate_of(graph).wait_for_approval(rid, timeout=5, poll_interval=0.05) == "rejected"
        out = run(graph, Command(resume=rid))
        assert runs == [] and "APPROVAL_REJECTED" in str(last_tool_message(out).content)
        guard.close()
    config = {**server_config, "approvals": {"request_ttl": 1}}
    with running_server(config) as srv:
        guard = Guard.remote(srv.url, credential=AGENT_SECRET)
        graph = graph_for(guard, runs)
        rid = paused(run(graph))
        assert gate_of(graph).wait_for_approval(rid, timeout=10, poll_interval=0.1) == "expired"
        out = run(graph, Command(resume=rid))
        assert runs == [] and "APPROVAL_EXPIRED" in str(last_tool_message(out).content)
        guard.close()


def test_the_shared_approval_methods() -> None:
    import inspect

    from execauth_core.approval_flow import GATE_METHODS, ApprovalGate
    from execauth_langgraph import ExecAuthToolWrapper

    for name in GATE_METHODS:
        assert inspect.signature(getattr(ExecAuthToolWrapper, name)) == inspect.signature(getattr(ApprovalGate, name))
