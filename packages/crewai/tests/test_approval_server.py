"""The approval flow through CrewAI's real agent loop against a real execauth server
(SQLite data dir): the request survives a server restart, an approver decides it
through the server's API, ``resume(request_id)`` runs the call once, and the same
answer sent again is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from execauth_core import ConfigurationError, ExecutionDenied, Guard
from execauth_crewai import CrewGuard
from execauth_crewai.testing import tool_call, tool_results

from .helpers import crew_for, llm_of

pytest.importorskip("execauth_server")

POLICY = """\
id: flow-crewai
epoch: 1
principals:
  - id: user-42
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

AGENT_SECRET = "ea_flow-crewai-agent-secret-0123456789ab"
APPROVER_SECRET = "ea_flow-crewai-approver-secret-012345678"
TRANSFER = {"amount": "25.00", "to": "bob"}


@pytest.fixture
def server_config(tmp_path: Path) -> dict[str, Any]:
    from execauth_server.config import hash_secret

    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "tools.yaml").write_text(TOOLS)
    return {
        "policy": str(tmp_path / "policy.yaml"),
        "manifests": str(tmp_path / "tools.yaml"),
        "data_dir": str(tmp_path / "server-data"),
        "callers": [{"name": "agent", "secret_sha256": hash_secret(AGENT_SECRET), "principals": ["user-42"]}],
        "approvers": [{"name": "carol", "secret_sha256": hash_secret(APPROVER_SECRET)}],
    }


def _decide(url: str, rid: str, verb: str) -> None:
    r = httpx.post(
        f"{url}/v1/approvals/{rid}/{verb}",
        json={"comment": "ok"},
        headers={"Authorization": f"Bearer {APPROVER_SECRET}"},
    )
    assert r.status_code == 200, r.text


def _pause(cg: CrewGuard, guarded: Any) -> str:
    crew = crew_for([guarded], [[tool_call("transfer", TRANSFER, "call_1")], "done"])
    cg.kickoff(crew)
    [pending] = cg.pending_approvals()
    assert "APPROVAL_REQUIRED" in tool_results(llm_of(crew))[0] and pending.request_id in tool_results(llm_of(crew))[0]
    assert (pending.tool, pending.arguments) == ("transfer", TRANSFER)
    return pending.request_id


def test_server_restart_between_request_and_approval(server_config, ledger, tools, request):
    from execauth_server.testing import running_server

    with running_server(server_config) as srv:
        port = srv.port
        # The approval layer alone (ledger=False): with the effect ledger the identical
        # call in the later turn below is answered from the ledger, not paused again.
        guard = Guard.remote(srv.url, credential=AGENT_SECRET, ledger=False)
        request.addfinalizer(guard.close)  # closed even when an assertion fails (no leaked socket)
        cg = CrewGuard(guard, principal="user-42")
        guarded = cg.tool(tools["transfer"])
        rid = _pause(cg, guarded)
        assert cg.approval_status(rid) == "pending" and ledger.calls == []
        with pytest.raises(ConfigurationError, match="approver"):
            cg.approve(rid, approver="user-42")  # an agent's credential never approves
    with running_server(server_config, port=port) as srv:  # the same data_dir: the request survived
        assert cg.approval_status(rid) == "pending"
        with pytest.raises(ExecutionDenied) as early:
            cg.resume(rid)
        assert early.value.reason_codes == ("APPROVAL_REQUIRED",)
        _decide(srv.url, rid, "approve")
        assert cg.wait_for_approval(rid, timeout=10, poll_interval=0.05) == "approved"
        assert cg.resume(rid) == "sent 25.00 to bob"
        assert ledger.calls == [("transfer", TRANSFER)] and cg.approval_status(rid) == "consumed"
        with pytest.raises(ExecutionDenied) as again:
            cg.resume(rid)  # the old answer, re-sent
        assert again.value.reason_codes == ("APPROVAL_USED",)
        assert ledger.calls == [("transfer", TRANSFER)]

        rid2 = _pause(cg, guarded)  # a later turn: a new request, and a rejection
        _decide(srv.url, rid2, "reject")
        with pytest.raises(ExecutionDenied) as rejected:
            cg.resume(rid2)
        assert rejected.value.reason_codes == ("APPROVAL_REJECTED",) and len(ledger.calls) == 1
