"""The audit chain detects edits, deletions, reordering and truncation."""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from execauth_core import AuditIntegrityError, Checkpoint, ExecutionDenied, Guard, KeySet, LocalSigner, verify_chain
from execauth_core.cli import main as cli
from execauth_core.stores import MemoryAuditLog, SQLiteAuditLog

from .conftest import Tool


def fill(guard: Guard, n: int = 4) -> None:
    tool = Tool()
    for i in range(n):
        req = guard.proposal("search" if i % 2 == 0 else "forbidden", {"i": i}, principal="alice")
        try:
            guard.run(req, lambda r=req: tool(**r.args))
        except ExecutionDenied:
            pass


@pytest.fixture
def db(make_guard: Callable[..., Guard], tmp_path: Path) -> Path:
    guard = make_guard(data_dir=tmp_path)
    fill(guard)  # 2 executions (2 entries each) + 2 denials = 6 entries
    assert guard.audit_log.head()[0] == 6
    return tmp_path / "execauth.db"


def tamper(db: Path, sql: str, *params: object) -> None:
    conn = sqlite3.connect(db)
    conn.execute(sql, params)
    conn.commit()
    conn.close()


def verify(db: Path) -> tuple[int, str]:
    log = SQLiteAuditLog(db)
    return verify_chain(log.entries(), expected_head=log.head())


def body(db: Path, seq: int) -> dict:
    conn = sqlite3.connect(db)
    raw = conn.execute("SELECT body FROM audit_log WHERE seq = ?", (seq,)).fetchone()[0]
    conn.close()
    return json.loads(raw)


def test_intact_chain_verifies(db: Path) -> None:
    assert verify(db)[0] == 6


@pytest.mark.parametrize(
    "field", ["executed", "outcome", "reason_codes", "proposal_digest", "tool", "time", "policy_digest", "detail"]
)
def test_edit_of_any_field_is_detected(db: Path, field: str) -> None:
    b = body(db, 3)
    b[field] = {
        "executed": True,
        "outcome": "ALLOW",
        "reason_codes": ["TOOL_ALLOWED"],
        "proposal_digest": "sha256:" + "a" * 64,
        "tool": "search",
        "time": 1,
        "policy_digest": None,
        "detail": {"x": 1},
    }[field]
    tamper(db, "UPDATE audit_log SET body = ? WHERE seq = 3", json.dumps(b).encode())
    with pytest.raises(AuditIntegrityError) as info:
        verify(db)
    assert info.value.seq == 3


def test_edit_with_recomputed_digest_breaks_the_next_link(db: Path) -> None:
    from execauth_core import digest

    b = body(db, 2)
    b["executed"] = False
    tamper(db, "UPDATE audit_log SET body = ?, digest = ? WHERE seq = 2", json.dumps(b).encode(), digest(b))
    with pytest.raises(AuditIntegrityError) as info:
        verify(db)
    assert info.value.seq == 3


def test_deletion_is_detected(db: Path) -> None:
    tamper(db, "DELETE FROM audit_log WHERE seq = 4")
    with pytest.raises(AuditIntegrityError) as info:
        verify(db)
    assert info.value.seq == 4


def test_reordering_is_detected(db: Path) -> None:
    b2, b3 = body(db, 2), body(db, 3)
    conn = sqlite3.connect(db)
    d2, d3 = (conn.execute("SELECT digest FROM audit_log WHERE seq = ?", (s,)).fetchone()[0] for s in (2, 3))
    conn.execute("UPDATE audit_log SET body = ?, digest = ? WHERE seq = 2", (json.dumps(b3).encode(), d3))
    conn.execute("UPDATE audit_log SET body = ?, digest = ? WHERE seq = 3", (json.dumps(b2).encode(), d2))
    conn.commit()
    conn.close()
    with pytest.raises(AuditIntegrityError) as info:
        verify(db)
    assert info.value.seq == 2


def test_tail_truncation_is_detected_by_the_head_record(db: Path) -> None:
    tamper(db, "DELETE FROM audit_log WHERE seq >= 5")
    with pytest.raises(AuditIntegrityError) as info:
        verify(db)
    assert info.value.seq == 5


def test_truncation_with_forged_head_is_detected_by_a_signed_checkpoint(db: Path, signer: LocalSigner) -> None:
    log = SQLiteAuditLog(db)
    cp = Checkpoint.sign(log, signer, now=1)
    keys = KeySet.of_signer(signer)
    assert verify_chain(log.entries(), checkpoint=Checkpoint.from_json(cp.to_json(), keys))[0] == 6
    conn = sqlite3.connect(db)
    d4 = conn.execute("SELECT digest FROM audit_log WHERE seq = 4").fetchone()[0]
    conn.execute("DELETE FROM audit_log WHERE seq >= 5")
    conn.execute("UPDATE audit_head SET seq = 4, digest = ?", (d4,))
    conn.commit()
    conn.close()
    assert verify(db)[0] == 4  # the attacker fixed the head; only the checkpoint knows
    with pytest.raises(AuditIntegrityError) as info:
        verify_chain(log.entries(), checkpoint=cp)
    assert info.value.seq == 5


def test_checkpoint_signature_is_checked(db: Path, signer: LocalSigner) -> None:
    from execauth_core import ConfigurationError

    cp = Checkpoint.sign(SQLiteAuditLog(db), signer, now=1).to_json()
    cp["seq"] = 2
    with pytest.raises(ConfigurationError, match="does not verify"):
        Checkpoint.from_json(cp, KeySet.of_signer(signer))
    with pytest.raises(ConfigurationError, match="trusted"):
        Checkpoint.from_json(
            Checkpoint.sign(SQLiteAuditLog(db), LocalSigner.generate(), now=1).to_json(), KeySet.of_signer(signer)
        )


def test_cli_audit_verify_prints_first_bad_seq(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["audit", "verify", "--db", str(db)]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 6
    tamper(db, "DELETE FROM audit_log WHERE seq = 2")
    assert cli(["audit", "verify", "--db", str(db)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["first_bad_seq"] == 2


def test_cli_checkpoint_roundtrip(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cp = tmp_path / "cp.json"
    assert (
        cli(["audit", "checkpoint", "--db", str(db), "--key", str(tmp_path / "authority.key"), "--out", str(cp)]) == 2
    )
    # the fixture's guard used an in-memory signer; make a key file for the checkpoint
    capsys.readouterr()
    assert cli(["keys", "generate", "--out", str(tmp_path / "k")]) == 0
    capsys.readouterr()
    key, jwks = tmp_path / "k" / "authority.key", tmp_path / "k" / "jwks.json"
    assert cli(["audit", "checkpoint", "--db", str(db), "--key", str(key), "--out", str(cp)]) == 0
    assert cli(["audit", "verify", "--db", str(db), "--checkpoint", str(cp), "--jwks", str(jwks)]) == 0
    tamper(db, "DELETE FROM audit_log WHERE seq = 6")
    tamper(db, "UPDATE audit_head SET seq = 5, digest = (SELECT digest FROM audit_log WHERE seq = 5)")
    capsys.readouterr()
    assert cli(["audit", "verify", "--db", str(db), "--checkpoint", str(cp), "--jwks", str(jwks)]) == 1
    assert json.loads(capsys.readouterr().out)["first_bad_seq"] == 6


def test_memory_log_is_bounded_and_verifies(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard()
    guard.audit_log = MemoryAuditLog(max_entries=5)
    fill(guard, 10)
    entries = list(guard.audit_log.entries())
    assert len(entries) == 5 and entries[-1].seq == guard.audit_log.head()[0]
    for a, b in itertools.pairwise(entries):
        assert b.body["prev"] == a.digest
