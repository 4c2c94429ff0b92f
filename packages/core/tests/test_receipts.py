"""Signed execution receipts: returned to the caller, kept in the audit log, verifiable offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from execauth_core import AllowListPolicy, ConfigurationError, Guard, KeySet, LocalSigner
from execauth_core.cli import main
from execauth_core.receipts import ExecutionFailed, ExecutionReceipt, ReceiptError, result_digest, verify_receipt

from .court_fixtures import make


def guard_and_keys(**kwargs: Any) -> tuple[Guard, KeySet]:
    signer = LocalSigner.generate()
    guard = Guard.local(AllowListPolicy(["search", "send"]), signer=signer, **kwargs)
    return guard, KeySet.of_signer(signer)


def results(guard: Guard) -> list[Any]:
    return [e for e in guard.audit_log.entries() if e.event == "result"]


def test_receipt_is_returned_recorded_and_verifies_offline(tmp_path: Path, capsys: Any) -> None:
    guard, keys = guard_and_keys()
    request = guard.proposal("search", {"q": "refunds"}, principal="alice")
    result, receipt = guard.run(request, lambda: {"hits": [1, 2]}, receipt=True)
    assert result == {"hits": [1, 2]} and receipt is not None
    assert receipt.status == "succeeded" and receipt.result_digest_source == "jcs"
    assert receipt.result_digest == result_digest({"hits": [1, 2]})[0]
    assert receipt.proposal_digest == request.content_digest() and receipt.tool == "search"
    assert receipt.idempotency_key is None  # until the ledger assigns keys
    assert verify_receipt(receipt.model_dump_json(), keys, result={"hits": [1, 2]}) == receipt
    execution, recorded = [e for e in guard.audit_log.entries() if e.event in ("execution", "result")]
    assert recorded.body["detail"]["receipt"] == receipt.model_dump(mode="json")
    assert receipt.token_id == execution.body["token_id"] and receipt.execution_seq == execution.seq
    # Offline, with the JWKS file only.
    (tmp_path / "r.json").write_text(receipt.model_dump_json(), encoding="utf-8")
    (tmp_path / "jwks.json").write_text(json.dumps(keys.to_jwks()), encoding="utf-8")
    (tmp_path / "result.json").write_text('{"hits":[1,2]}', encoding="utf-8")
    assert main(["receipt", "verify", str(tmp_path / "r.json"), "--jwks", str(tmp_path / "jwks.json")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is True and out["status"] == "succeeded"
    argv = ["receipt", "verify", str(tmp_path / "r.json"), "--jwks", str(tmp_path / "jwks.json")]
    assert main([*argv, "--result", str(tmp_path / "result.json")]) == 0
    (tmp_path / "other.json").write_text('{"hits":[1]}', encoding="utf-8")
    assert main([*argv, "--result", str(tmp_path / "other.json")]) == 1


def test_tampered_receipt_fails(tmp_path: Path, capsys: Any) -> None:
    guard, keys = guard_and_keys()
    _, receipt = guard.run(guard.proposal("search", {}, principal="alice"), lambda: "ok", receipt=True)
    assert receipt is not None
    for field, value in (("status", "failed"), ("result_digest", "sha256:" + "1" * 64), ("ended_at", 1)):
        data = receipt.model_dump(mode="json")
        data[field] = value
        with pytest.raises(ReceiptError) as info:
            verify_receipt(json.dumps(data), keys)
        assert info.value.reason_code == "RECEIPT_INVALID"
    data = receipt.model_dump(mode="json")
    data["token_id"] = "another-token-id-0001"
    (tmp_path / "r.json").write_text(json.dumps(data), encoding="utf-8")
    (tmp_path / "jwks.json").write_text(json.dumps(keys.to_jwks()), encoding="utf-8")
    assert main(["receipt", "verify", str(tmp_path / "r.json"), "--jwks", str(tmp_path / "jwks.json")]) == 1
    assert json.loads(capsys.readouterr().out)["reason_code"] == "RECEIPT_INVALID"
    # The right signature under a key nobody configured proves nothing.
    stranger = KeySet.of_signer(LocalSigner.generate())
    with pytest.raises(ReceiptError):
        verify_receipt(receipt, stranger)
    with pytest.raises(ReceiptError):
        verify_receipt(b'{"v": "execauth.receipt/1"}', keys)
    with pytest.raises(ReceiptError):
        verify_receipt(b"{not json", keys)


def test_receipt_of_a_failed_call_says_failed() -> None:
    guard, keys = guard_and_keys()

    def boom() -> None:
        raise ValueError("upstream said no")

    with pytest.raises(ExecutionFailed) as info:
        guard.run(guard.proposal("send", {"to": "bob"}, principal="alice"), boom, receipt=True)
    receipt = info.value.receipt
    assert isinstance(info.value.__cause__, ValueError)
    assert receipt is not None and receipt.status == "failed" and receipt.error == "ValueError"
    assert receipt.result_digest is None and receipt.result_digest_reason == "the call raised ValueError"
    assert verify_receipt(receipt, keys) == receipt
    assert results(guard)[-1].body["detail"]["receipt"]["status"] == "failed"
    # Without receipt=True the tool's own exception is what the caller sees.
    with pytest.raises(ValueError):
        guard.run(guard.proposal("send", {"to": "carol"}, principal="alice"), boom)


def test_guard_wide_receipts_for_every_call_and_the_two_phase_path() -> None:
    guard, _, _ = make()
    guard.receipts = True
    assert guard.run(guard.proposal("search_docs", {"q": "x"}, principal="user-42", agent="billing-bot"), lambda: 1)
    email = guard.proposal(
        "send_email", {"to": "a@example.com", "body": "hi"}, principal="user-42", agent="billing-bot"
    )
    _, receipt = guard.run(email, lambda: "sent", receipt=True)
    assert guard.authority is not None
    keys = KeySet.of_signer(guard.authority.signer)
    recorded = [ExecutionReceipt.model_validate(e.body["detail"]["receipt"]) for e in results(guard)]
    assert len(recorded) == 2 and recorded[1] == receipt
    for r in recorded:
        verify_receipt(r, keys)


def test_result_digest_sources() -> None:
    class Blob:
        result_hash = "sha256:" + "ab" * 32

    assert result_digest({"a": 1})[1] == "jcs"
    assert result_digest(Blob()) == ("sha256:" + "ab" * 32, "declared", None)
    digest, source, reason = result_digest(b"\x00bytes")
    assert (digest, source) == (None, None) and reason is not None and "bytes" in reason
    assert result_digest(float("nan"))[0] is None


def test_receipt_needs_an_in_process_key() -> None:
    guard, _ = guard_and_keys()
    verify_only = Guard(
        authority=None, verifier=guard.verifier, replay_store=guard.replay_store, audit_log=guard.audit_log
    )
    ran: list[int] = []
    with pytest.raises(ConfigurationError):
        verify_only.run(guard.proposal("search", {}, principal="alice"), lambda: ran.append(1), receipt=True)
    assert ran == [] and list(guard.audit_log.entries()) == []


def test_cli_usage_errors(tmp_path: Path) -> None:
    assert main(["receipt", "verify", str(tmp_path / "missing.json"), "--jwks", str(tmp_path / "none.json")]) == 2
