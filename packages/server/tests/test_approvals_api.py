"""The approval queue over HTTP, on real uvicorn servers: a request made before a
restart is approved after it, the grant funds one execution, and an agent's
credential never approves."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from execauth_core import Guard
from execauth_core.errors import ExecutionDenied
from execauth_core.messages import ApprovalGrant
from execauth_server.config import hash_secret
from execauth_server.testing import running_server

POLICY = """\
id: approvals-tests
epoch: 1
principals:
  - id: alice
    allow_tools: [refund]
    max_risk_tier: E3
    require_approval_effects: [data.write]
"""

TOOLS = """\
- name: refund
  version: "1.0"
  effects: [data.write]
  args_schema:
    type: object
    properties: {order: {type: string}, amount: {type: string}, currency: {type: string}}
    required: [order, amount, currency]
"""

APPROVER = "ea_approver-secret-for-tests-0123456789"
OTHER_APPROVER = "ea_second-approver-secret-for-tests-0123"
PROPOSAL = {"tool": "refund", "args": {"order": "A1", "amount": "250.00", "currency": "USD"}, "principal": "alice"}


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "tools.yaml").write_text(TOOLS)
    return {
        "policy": str(tmp_path / "policy.yaml"),
        "manifests": str(tmp_path / "tools.yaml"),
        "data_dir": str(tmp_path / "data"),
        "approvers": [
            {"name": "carol", "secret_sha256": hash_secret(APPROVER)},
            {"name": "dave", "secret_sha256": hash_secret(OTHER_APPROVER)},
        ],
    }


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _ask(url: str, credential: str) -> str:
    r = httpx.post(url + "/v1/decide", json=PROPOSAL, headers=_auth(credential))
    assert r.status_code == 200 and r.json()["outcome"] == "REQUIRE_APPROVAL"
    rid = r.headers["x-execauth-approval-request"]
    assert rid.startswith("apr_")
    return rid


def test_request_survives_restart_and_funds_one_run(config: dict[str, Any]) -> None:
    with running_server(config) as srv:
        rid = _ask(srv.url, srv.credential)
        pending = httpx.get(srv.url + "/v1/approvals", params={"state": "pending"}, headers=_auth(APPROVER)).json()
        assert [a["id"] for a in pending["approvals"]] == [rid]
    with running_server(config) as srv:  # a new process state on the same data_dir
        listed = httpx.get(srv.url + "/v1/approvals?state=pending", headers=_auth(APPROVER)).json()["approvals"]
        assert [a["id"] for a in listed] == [rid]
        assert listed[0]["proposal"]["args"] == PROPOSAL["args"] and listed[0]["state"] == "pending"
        r = httpx.post(srv.url + f"/v1/approvals/{rid}/approve", json={"comment": "checked"}, headers=_auth(APPROVER))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["state"] == "approved" and body["decided_by"] == "carol" and body["comment"] == "checked"
        grant = ApprovalGrant.model_validate(body["grant"])

        guard = Guard.remote(srv.url, credential=srv.credential)
        request = guard.proposal(**PROPOSAL)
        runs: list[int] = []
        assert guard.run(request, lambda: runs.append(1) or "refunded", approval=grant) == "refunded"
        # The same grant again, even through another guard (its own replay store): refused.
        other = Guard.remote(srv.url, credential=srv.credential)
        with pytest.raises(ExecutionDenied) as again:
            other.run(other.proposal(**PROPOSAL), lambda: runs.append(2), approval=grant)
        assert "APPROVAL_USED" in again.value.reason_codes and runs == [1]
        guard.close()
        other.close()
        shown = httpx.get(srv.url + f"/v1/approvals/{rid}", headers=_auth(APPROVER)).json()
        assert shown["consumed"] is True

        seq, _ = guard_audit_head(srv.url, srv.credential)
        assert seq > 0
    # The audit log holds every transition with who and which digest.
    from execauth_core.stores.urls import open_stores

    stores = open_stores(f"sqlite:{Path(config['data_dir']) / 'execauth.db'}")
    try:
        events = [e.body for e in stores.audit.entries() if e.body["event"] == "approval"]
    finally:
        stores.close()
    assert [e["detail"]["transition"] for e in events] == ["created", "approved", "consumed"]
    assert events[1]["detail"]["by"] == "carol"
    assert len({e["proposal_digest"] for e in events}) == 1


def guard_audit_head(url: str, credential: str) -> tuple[int, str]:
    data = httpx.get(url + "/v1/audit/head", headers=_auth(credential)).json()
    return data["seq"], data["head"]


def test_agent_credential_never_approves(config: dict[str, Any]) -> None:
    with running_server(config) as srv:
        rid = _ask(srv.url, srv.credential)
        for path in ("approve", "reject"):
            r = httpx.post(srv.url + f"/v1/approvals/{rid}/{path}", json={}, headers=_auth(srv.credential))
            assert r.status_code == 403 and r.json()["reason_code"] == "CALLER_NOT_BOUND"
        r = httpx.get(srv.url + "/v1/approvals", headers=_auth(srv.credential))
        assert r.status_code == 403
        r = httpx.post(srv.url + f"/v1/approvals/{rid}/approve", headers=_auth("ea_nobody"))
        assert r.status_code == 401 and r.json()["reason_code"] == "CALLER_UNAUTHENTICATED"
        # The agent may look at its own request (to learn when it is decided), not decide it.
        shown = httpx.get(srv.url + f"/v1/approvals/{rid}", headers=_auth(srv.credential))
        assert shown.status_code == 200 and shown.json()["state"] == "pending"


def test_two_approvers_at_once_one_decision(config: dict[str, Any]) -> None:
    with running_server(config) as srv:
        rid = _ask(srv.url, srv.credential)
        barrier = threading.Barrier(2)
        answers: list[httpx.Response] = []

        def decide(secret: str, verb: str) -> None:
            barrier.wait()
            answers.append(httpx.post(srv.url + f"/v1/approvals/{rid}/{verb}", json={}, headers=_auth(secret)))

        threads = [
            threading.Thread(target=decide, args=(APPROVER, "approve")),
            threading.Thread(target=decide, args=(OTHER_APPROVER, "reject")),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(a.status_code for a in answers)
        assert codes == [200, 409]
        loser = next(a for a in answers if a.status_code == 409)
        assert loser.json()["reason_code"] == "APPROVAL_DECIDED"


def test_reject_and_unknown(config: dict[str, Any]) -> None:
    with running_server(config) as srv:
        rid = _ask(srv.url, srv.credential)
        r = httpx.post(srv.url + f"/v1/approvals/{rid}/reject", json={"comment": "no"}, headers=_auth(APPROVER))
        assert r.status_code == 200 and r.json()["state"] == "rejected" and r.json()["grant"] is None
        r = httpx.post(srv.url + f"/v1/approvals/{rid}/approve", headers=_auth(APPROVER))
        assert r.status_code == 409 and r.json()["reason_code"] == "APPROVAL_DECIDED"
        r = httpx.get(srv.url + "/v1/approvals/apr_missing", headers=_auth(APPROVER))
        assert r.status_code == 404 and r.json()["reason_code"] == "APPROVAL_UNKNOWN"
        r = httpx.get(srv.url + "/v1/approvals?state=bogus", headers=_auth(APPROVER))
        assert r.status_code == 400
        paths = httpx.get(srv.url + "/openapi.json").json()["paths"]
        assert {"/v1/approvals", "/v1/approvals/{request_id}/approve", "/v1/approvals/{request_id}/reject"} <= set(
            paths
        )


def test_expired_request_denies(config: dict[str, Any]) -> None:
    import time

    config["approvals"] = {"request_ttl": 1}
    with running_server(config) as srv:
        rid = _ask(srv.url, srv.credential)
        time.sleep(2.1)
        r = httpx.post(srv.url + f"/v1/approvals/{rid}/approve", headers=_auth(APPROVER))
        assert r.status_code == 409 and r.json()["reason_code"] == "APPROVAL_EXPIRED"
        shown = httpx.get(srv.url + f"/v1/approvals/{rid}", headers=_auth(APPROVER)).json()
        assert shown["state"] == "expired" and shown["grant"] is None


def test_approver_secret_may_not_be_a_callers() -> None:
    from execauth_core.errors import ConfigurationError
    from execauth_server.config import parse_config

    digest = hash_secret("shared")
    with pytest.raises(ConfigurationError, match="agents never approve"):
        parse_config(
            {
                "callers": [{"name": "bot", "secret_sha256": digest, "principals": ["*"]}],
                "approvers": [{"name": "carol", "secret_sha256": digest}],
            }
        )


def test_cli_against_the_server(config: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from execauth_core.cli import main

    approver_file = tmp_path / "approver.secret"
    approver_file.write_text(APPROVER + "\n")
    agent_file = tmp_path / "agent.secret"
    with running_server(config) as srv:
        agent_file.write_text(srv.credential)
        rid = _ask(srv.url, srv.credential)
        where = ["--url", srv.url, "--credential-file", str(approver_file)]
        assert main(["approvals", "list", "--state", "pending", *where]) == 0
        assert rid in capsys.readouterr().out
        assert main(["approvals", "show", rid, *where]) == 0
        assert json.loads(capsys.readouterr().out)["proposal"]["args"] == PROPOSAL["args"]
        # An agent's credential cannot approve, from the CLI either.
        assert main(["approvals", "approve", rid, "--url", srv.url, "--credential-file", str(agent_file)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("execauth: error: HTTP 403 CALLER_NOT_BOUND") and err.count("\n") == 1
        assert main(["approvals", "approve", rid, "--comment", "fine", *where]) == 0
        decided = json.loads(capsys.readouterr().out)
        assert decided["state"] == "approved" and decided["comment"] == "fine" and decided["decided_by"] == "carol"
        assert main(["approvals", "reject", rid, *where]) == 1
        assert "APPROVAL_DECIDED" in capsys.readouterr().err


def test_remote_guard_flow(config: dict[str, Any]) -> None:
    from execauth_core.approvals import ApprovalError
    from execauth_core.errors import ApprovalRequired

    with running_server(config) as srv:
        guard = Guard.remote(srv.url, credential=srv.credential)
        request = guard.proposal(**PROPOSAL)
        ran: list[str] = []
        with pytest.raises(ApprovalRequired) as info:
            guard.run(request, lambda: ran.append("ran"))
        assert ran == []  # paused: nothing ran
        rid = info.value.request_id
        assert rid is not None and rid.startswith("apr_")
        with pytest.raises(ApprovalError) as early:
            guard.approval_for(rid, request)
        assert early.value.reason_code == "APPROVAL_REQUIRED"
        r = httpx.post(srv.url + f"/v1/approvals/{rid}/approve", headers=_auth(APPROVER))
        assert r.status_code == 200
        other = guard.proposal(**{**PROPOSAL, "args": {**PROPOSAL["args"], "amount": "9999.00"}})
        with pytest.raises(ApprovalError) as wrong:
            guard.approval_for(rid, other)
        assert wrong.value.reason_code == "APPROVAL_MISMATCH"
        grant = guard.approval_for(rid, request)
        # Presented with another proposal: refused, and the approval is not spent.
        ran: list[str] = []
        with pytest.raises(ExecutionDenied) as mismatch:
            guard.run(other, lambda: ran.append("other"), approval=grant)
        assert "APPROVAL_MISMATCH" in mismatch.value.reason_codes
        assert guard.run(request, lambda: ran.append("ok") or "done", approval=grant) == "done"
        assert ran == ["ok"]
        with pytest.raises(ApprovalError) as used:
            guard.approval_for(rid, request)
        assert used.value.reason_code == "APPROVAL_USED"
        guard.close()
