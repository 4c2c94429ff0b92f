"""An approver's own key on a real server: a keyed approver's decision needs their
signed statement over this request and digest; the record and the audit log keep both
signatures, which verify offline; the CLI signs end to end."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from execauth_core.approvals import ApprovalError, ApprovalRequest
from execauth_core.approver_keys import (
    decision_statement,
    parse_public_key,
    public_key_text,
    sign_decision,
    verify_approval_record,
)
from execauth_core.errors import ConfigurationError
from execauth_core.keys import KeySet, LocalSigner
from execauth_server.config import hash_secret, parse_config
from execauth_server.testing import running_server

POLICY = """\
id: approver-key-tests
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
    properties: {order: {type: string}, amount: {type: string}}
    required: [order, amount]
"""

KEYED = "ea_keyed-approver-secret-0123456789abc"
PLAIN = "ea_plain-approver-secret-0123456789abc"


@pytest.fixture
def key() -> LocalSigner:
    return LocalSigner.generate()


@pytest.fixture
def config(tmp_path: Path, key: LocalSigner) -> dict[str, Any]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "tools.yaml").write_text(TOOLS)
    return {
        "policy": str(tmp_path / "policy.yaml"),
        "manifests": str(tmp_path / "tools.yaml"),
        "data_dir": str(tmp_path / "data"),
        "approvers": [
            {"name": "carol", "secret_sha256": hash_secret(KEYED), "public_key": public_key_text(key.public_key)},
            {"name": "dave", "secret_sha256": hash_secret(PLAIN)},
        ],
    }


def _ask(srv: Any, order: str) -> dict[str, Any]:
    proposal = {"tool": "refund", "args": {"order": order, "amount": "10.00"}, "principal": "alice"}
    r = httpx.post(srv.url + "/v1/decide", json=proposal, headers={"Authorization": f"Bearer {srv.credential}"})
    assert r.json()["outcome"] == "REQUIRE_APPROVAL"
    return _show(srv, r.headers["x-execauth-approval-request"])


def _show(srv: Any, rid: str) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(
        f"{srv.url}/v1/approvals/{rid}", headers={"Authorization": f"Bearer {KEYED}"}
    ).json()
    return data


def _signed(signer: LocalSigner, rid: str, digest: str, decision: str = "approve", approver: str = "carol") -> Any:
    st = decision_statement(
        request_id=rid, proposal_digest=digest, decision=decision, approver=approver, at=int(time.time())
    )
    return sign_decision(signer, st).model_dump(mode="json")


def _post(srv: Any, rid: str, verb: str, secret: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(
        f"{srv.url}/v1/approvals/{rid}/{verb}", json=body or {}, headers={"Authorization": f"Bearer {secret}"}
    )


def test_signed_approval_is_stored_with_both_signatures_and_verifies_offline(
    config: dict[str, Any], key: LocalSigner
) -> None:
    with running_server(config) as srv:
        req = _ask(srv, "A1")
        r = _post(
            srv, req["id"], "approve", KEYED, {"approver_signature": _signed(key, req["id"], req["proposal_digest"])}
        )
        assert r.status_code == 200, r.text
        record = ApprovalRequest.model_validate(r.json())
        assert record.state == "approved" and record.grant is not None and record.approver_signature is not None
        authority_keys = KeySet.from_jwks(httpx.get(srv.jwks_url).json())
    verify_approval_record(record, authority_keys=authority_keys, approver_key=key.public_key)
    # Offline checks fail for another approver key, and for a record edited afterwards.
    with pytest.raises(ApprovalError, match="APPROVER_SIGNATURE_INVALID"):
        verify_approval_record(record, authority_keys=authority_keys, approver_key=LocalSigner.generate().public_key)
    with pytest.raises(ConfigurationError):
        verify_approval_record(record, authority_keys=authority_keys)
    edited = record.model_copy(update={"decided_by": "mallory"})
    with pytest.raises(ApprovalError):
        verify_approval_record(edited, authority_keys=authority_keys, approver_key=key.public_key)
    with pytest.raises(ApprovalError, match="APPROVAL_INVALID"):
        verify_approval_record(
            record, authority_keys=KeySet.of_signer(LocalSigner.generate()), approver_key=key.public_key
        )

    # The audit entry of the approval carries both signatures.
    from execauth_core.stores.urls import open_stores

    stores = open_stores(f"sqlite:{Path(config['data_dir']) / 'execauth.db'}")
    try:
        (entry,) = [e.body for e in stores.audit.entries() if e.body["detail"].get("transition") == "approved"]
    finally:
        stores.close()
    assert entry["detail"]["grant"]["signature"] == record.grant.signature
    assert entry["detail"]["approver_signature"]["signature"] == record.approver_signature.signature


def test_keyed_approver_without_or_with_a_wrong_signature_approves_nothing(
    config: dict[str, Any], key: LocalSigner
) -> None:
    with running_server(config) as srv:
        req = _ask(srv, "A1")
        other = _ask(srv, "A2")
        rid, digest = req["id"], req["proposal_digest"]
        cases = {
            "unsigned": (None, "APPROVER_SIGNATURE_REQUIRED"),
            "other digest": (_signed(key, rid, other["proposal_digest"]), "APPROVER_SIGNATURE_INVALID"),
            "other request": (_signed(key, other["id"], digest), "APPROVER_SIGNATURE_INVALID"),
            "other key": (_signed(LocalSigner.generate(), rid, digest), "APPROVER_SIGNATURE_INVALID"),
            "a reject statement": (_signed(key, rid, digest, "reject"), "APPROVER_SIGNATURE_INVALID"),
            "another approver's name": (_signed(key, rid, digest, approver="dave"), "APPROVER_SIGNATURE_INVALID"),
            "garbage": ({"statement": {}, "kid": "x", "signature": "!"}, "APPROVER_SIGNATURE_INVALID"),
        }
        stale = decision_statement(
            request_id=rid, proposal_digest=digest, decision="approve", approver="carol", at=int(time.time()) - 3600
        )
        cases["an hour old"] = (sign_decision(key, stale).model_dump(mode="json"), "APPROVER_SIGNATURE_INVALID")
        tampered = _signed(key, rid, digest)
        tampered["statement"]["at"] += 1
        cases["tampered"] = (tampered, "APPROVER_SIGNATURE_INVALID")
        for name, (signed, code) in cases.items():
            body = {} if signed is None else {"approver_signature": signed}
            r = _post(srv, rid, "approve", KEYED, body)
            assert r.status_code == 403 and r.json()["reason_code"] == code, (name, r.text)
        # An approve statement does not reject either.
        r = _post(srv, rid, "reject", KEYED, {"approver_signature": _signed(key, rid, digest)})
        assert r.status_code == 403 and r.json()["reason_code"] == "APPROVER_SIGNATURE_INVALID"
        shown = _show(srv, rid)
        assert shown["state"] == "pending" and shown["grant"] is None
        # An approver without a key sending a signature: refused (nothing to verify it with).
        r = _post(srv, rid, "approve", PLAIN, {"approver_signature": _signed(key, rid, digest, approver="dave")})
        assert r.status_code == 400 and r.json()["reason_code"] == "APPROVER_SIGNATURE_INVALID"
        # The right statement still works afterwards, and a signed rejection too.
        assert _post(srv, rid, "approve", KEYED, {"approver_signature": _signed(key, rid, digest)}).status_code == 200
        signed_reject = _signed(key, other["id"], other["proposal_digest"], "reject")
        r = _post(srv, other["id"], "reject", KEYED, {"approver_signature": signed_reject})
        assert r.status_code == 200 and r.json()["approver_signature"]["statement"]["decision"] == "reject"


def test_cli_keygen_and_signed_approve_against_a_running_server(
    config: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from execauth_core.approvals_cli import main

    assert main(["keygen", "--out", str(tmp_path / "carol.key")]) == 0
    assert (tmp_path / "carol.key").stat().st_mode & 0o077 == 0
    config["approvers"][0]["public_key"] = json.loads(capsys.readouterr().out)["public_key"]
    (tmp_path / "carol.secret").write_text(KEYED + "\n")
    with running_server(config) as srv:
        req = _ask(srv, "A1")
        where = ["--url", srv.url, "--credential-file", str(tmp_path / "carol.secret")]
        assert main(["approve", req["id"], *where]) == 2
        assert "APPROVER_SIGNATURE_REQUIRED" in capsys.readouterr().err
        assert main(["approve", req["id"], *where, "--key", str(tmp_path / "carol.key")]) == 2
        assert "--approver" in capsys.readouterr().err
        assert _show(srv, req["id"])["state"] == "pending"
        # The real command, as a person runs it.
        ok = subprocess.run(
            [
                sys.executable,
                "-m",
                "execauth_core",
                "approvals",
                "approve",
                req["id"],
                *where,
                "--key",
                str(tmp_path / "carol.key"),
                "--approver",
                "carol",
                "--comment",
                "checked",
            ],
            capture_output=True,
            text=True,
        )
        assert ok.returncode == 0, ok.stderr
        done = json.loads(ok.stdout)
        assert done["state"] == "approved" and done["approver_signature"]["statement"]["request_id"] == req["id"]
        record = ApprovalRequest.model_validate(done)
        authority_keys = KeySet.from_jwks(httpx.get(srv.jwks_url).json())
    public = parse_public_key(config["approvers"][0]["public_key"])
    verify_approval_record(record, authority_keys=authority_keys, approver_key=public)


def test_public_key_forms_and_bad_keys(key: LocalSigner) -> None:
    serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    pem = Ed25519PublicKey.from_public_bytes(key.public_key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert parse_public_key(pem.decode()) == key.public_key
    assert parse_public_key(public_key_text(key.public_key)) == key.public_key
    approver = {"name": "carol", "secret_sha256": hash_secret(KEYED)}
    assert (
        parse_config({"approvers": [{**approver, "public_key": pem.decode()}]}).approvers[0].public_key
        == key.public_key
    )
    for bad in (
        "",
        "AAAA",
        public_key_text(key.public_key + b"x"),
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
    ):
        with pytest.raises(ConfigurationError, match="public_key"):
            parse_config({"approvers": [{**approver, "public_key": bad}]})
