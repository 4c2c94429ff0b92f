"""``execauth audit checkpoint | proof | consistency | verify | export | verify-bundle``
on a SQLite log, the checkpointer's cadence, and checkpoint notes."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import pytest

from execauth_core import tlog
from execauth_core.audit import canonical_body
from execauth_core.cli import main as cli
from execauth_core.keys import KeySet, LocalSigner
from execauth_core.stores import MemoryAuditLog, SQLiteAuditLog
from execauth_core.tlog_checkpoint import (
    CheckpointedLog,
    Checkpointer,
    CheckpointError,
    key_id,
    open_checkpoint,
    sign_checkpoint,
    vkey,
)

ORIGIN = "execauth.local/audit"


def event(i: int) -> dict[str, object]:
    return {"event": "denial", "executed": False, "time": 1000 + i, "reason_codes": ["POLICY_DENIED"], "n": i}


@pytest.fixture
def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    assert cli(["keys", "generate", "--out", str(tmp_path / "k")]) == 0
    capsys.readouterr()
    return str(tmp_path / "k" / "authority.key"), str(tmp_path / "k" / "jwks.json")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    log = SQLiteAuditLog(path)
    for i in range(10):
        log.append(event(i))
    log.close()
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = cli(list(args))
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip().startswith("{") else {"raw": out}


def test_checkpoint_proof_consistency_roundtrip(
    db: Path, tmp_path: Path, keys: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    key, jwks = keys
    note_file = tmp_path / "cp.note"
    code, cp = run(capsys, "audit", "checkpoint", "--db", str(db), "--key", key, "--out", str(note_file))
    assert code == 0 and cp["size"] == 10 and cp["seq"] == 10 and cp["origin"] == ORIGIN
    note = note_file.read_text(encoding="utf-8")
    assert note.startswith(f"{ORIGIN}\n10\n{cp['root']}\ntime ") and "\n\n\u2014 " in note
    signed = open_checkpoint(note, KeySet.load(jwks), origin=ORIGIN)

    code, proof = run(capsys, "audit", "proof", "--db", str(db), "--seq", "4")
    assert code == 0 and proof["size"] == 10 and proof["root"] == cp["root"]
    tlog.verify_inclusion(
        base64.b64decode(proof["leaf_hash"]), 3, 10, [base64.b64decode(p) for p in proof["proof"]], signed.root
    )
    log = SQLiteAuditLog(db)
    for i in range(10, 15):
        log.append(event(i))
    code, cons = run(capsys, "audit", "consistency", "--db", str(db), "--from", "10")
    assert code == 0 and cons["to"] == 15 and cons["from_root"] == cp["root"]
    tlog.verify_consistency(
        10,
        15,
        signed.root,
        base64.b64decode(cons["to_root"]),
        [base64.b64decode(p) for p in cons["proof"]],
    )
    code, report = run(capsys, "audit", "verify", "--db", str(db), "--jwks", jwks, "--checkpoint", str(note_file))
    assert code == 0 and report["checkpoint_seq"] == 10 and report["unsigned_records"] == 5
    code, report = run(capsys, "audit", "verify", "--db", str(db), "--jwks", jwks, "--max-unsigned", "4")
    assert code == 1 and report["first_bad_seq"] == 11 and "max-unsigned" in report["message"]
    code, report = run(capsys, "audit", "verify", "--db", str(db), "--jwks", jwks, "--max-age", "86400")
    assert code == 0 and report["checkpoint_age"] is not None and report["checkpoint_age"] < 86400
    assert cli(["audit", "proof", "--db", str(db), "--seq", "99"]) == 2
    assert "execauth: error: no entry 99" in capsys.readouterr().err


def test_export_and_offline_bundle_verification(
    db: Path, tmp_path: Path, keys: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    key, jwks = keys
    assert cli(["audit", "checkpoint", "--db", str(db), "--key", key]) == 0
    capsys.readouterr()
    bundle = tmp_path / "bundle.jsonl"
    code, out = run(capsys, "audit", "export", "--db", str(db), "--jwks", jwks, "--out", str(bundle))
    assert code == 0 and out["entries"] == 10
    lines = bundle.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    assert header["v"] == "execauth.audit-bundle/1" and header["first"] == 1 and header["last"] == 10
    db.unlink()  # offline: nothing but the bundle and the public keys
    code, report = run(capsys, "audit", "verify-bundle", str(bundle), "--jwks", jwks)
    assert code == 0 and report["ok"] and report["records"] == 10

    def verdict(text: str) -> dict:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(text, encoding="utf-8")
        code, report = run(capsys, "audit", "verify-bundle", str(bad), "--jwks", jwks)
        assert code == 1 and report["ok"] is False, report
        return report

    entry = json.loads(lines[4])
    entry["body"]["n"] = 99
    assert verdict("\n".join([*lines[:4], json.dumps(entry), *lines[5:]]) + "\n")["first_bad_seq"] == 4
    assert verdict("\n".join([*lines[:4], *lines[5:]]) + "\n")["first_bad_seq"] == 4  # deleted
    assert verdict("\n".join(lines[:-2]) + "\n")["first_bad_seq"] == 9  # truncated: 9 and 10 gone
    entry = json.loads(lines[3])
    entry["proof"][0] = base64.b64encode(b"\x00" * 32).decode()
    assert verdict("\n".join([*lines[:3], json.dumps(entry), *lines[4:]]) + "\n")["first_bad_seq"] == 3
    other = tmp_path / "other"
    assert cli(["keys", "generate", "--out", str(other)]) == 0
    capsys.readouterr()
    code, report = run(capsys, "audit", "verify-bundle", str(bundle), "--jwks", str(other / "jwks.json"))
    assert code == 1 and "trusted key" in report["message"]


def test_progress_bar_goes_to_stderr(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["audit", "verify", "--db", str(db), "--progress"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["ok"] is True
    assert "verifying [" in captured.err and "10/10" in captured.err


def test_text_body_is_named_not_a_traceback(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE audit_log SET body = CAST(body AS TEXT) WHERE seq = 7")
    code, report = run(capsys, "audit", "verify", "--db", str(db))
    assert code == 1 and report["first_bad_seq"] == 7 and "wrong types" in report["message"]


def test_old_sqlite_log_without_a_tree_gets_one(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE audit_tree")
    log = SQLiteAuditLog(db)
    size, root = log.tree_head()
    leaves = [tlog.leaf_hash(canonical_body(e.body)) for e in log.entries()]
    assert size == 10 and root == tlog.root_from_leaves(leaves)


def test_checkpointer_cadence_every_n_and_interval() -> None:
    signer = LocalSigner.generate()
    log = MemoryAuditLog()
    clock_now = [5000]

    class Clock:
        def now(self) -> int:
            return clock_now[0]

    wrapped = CheckpointedLog(log, Checkpointer(log, signer, origin=ORIGIN, every=4, clock=Clock()))
    for i in range(9):
        wrapped.append(event(i))
    sizes = [open_checkpoint(n, KeySet.of_signer(signer)).size for n in log.checkpoints()]
    assert sizes == [4, 8]
    timed = CheckpointedLog(log, Checkpointer(log, signer, origin=ORIGIN, interval=60, clock=Clock()))
    timed.append(event(9))  # 10 entries; the newest stored checkpoint (size 8) is 0 s old
    assert len(log.checkpoints()) == 2
    clock_now[0] += 61
    timed.append(event(10))
    assert [open_checkpoint(n, KeySet.of_signer(signer)).size for n in log.checkpoints()] == [4, 8, 11]
    on_demand = timed.checkpointer.checkpoint()
    assert on_demand.size == 11 and on_demand.time == clock_now[0]


def test_note_format_and_refusals() -> None:
    signer = LocalSigner.generate()
    ks = KeySet.of_signer(signer)
    root = tlog.leaf_hash(b"x")
    cp = sign_checkpoint(ORIGIN, 3, root, signer, now=7)
    body, sig = cp.note.split("\n\n")
    assert body == f"{ORIGIN}\n3\n{base64.b64encode(root).decode()}\ntime 7"
    blob = base64.b64decode(sig.split(" ")[2])
    assert blob[:4] == key_id(ORIGIN, signer.public_key) and len(blob) == 68
    assert vkey(ORIGIN, signer.public_key).startswith(f"{ORIGIN}+{blob[:4].hex()}+")
    assert open_checkpoint(cp.note, ks, origin=ORIGIN).size == 3
    # a cosignature line of an unknown key is ignored
    assert open_checkpoint(cp.note + "\u2014 witness.example AAAAAAAAAAAA\n", ks).size == 3
    for bad in (
        cp.note.replace("\n3\n", "\n4\n"),  # size changed under the signature
        cp.note.replace("\u2014 ", "-- "),
        cp.note.split("\n\n")[0] + "\n",
        "",
        cp.note.replace(ORIGIN, "other.example/log"),
    ):
        with pytest.raises(CheckpointError):
            open_checkpoint(bad, ks)
    with pytest.raises(CheckpointError):
        open_checkpoint(cp.note, ks, origin="other.example/log")


def test_older_json_checkpoint_still_accepted(
    db: Path, tmp_path: Path, keys: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from execauth_core.audit import Checkpoint

    key, jwks = keys
    log = SQLiteAuditLog(db)
    cp = Checkpoint.sign(log, LocalSigner.load(key), now=1)
    path = tmp_path / "old.json"
    path.write_text(json.dumps(cp.to_json()), encoding="utf-8")
    code, report = run(capsys, "audit", "verify", "--db", str(db), "--jwks", jwks, "--checkpoint", str(path))
    assert code == 0 and report["checkpoint_seq"] == 10
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM audit_log WHERE seq >= 9")
        conn.execute("UPDATE audit_head SET seq = 8, digest = (SELECT digest FROM audit_log WHERE seq = 8)")
    code, report = run(capsys, "audit", "verify", "--db", str(db), "--jwks", jwks, "--checkpoint", str(path))
    assert code == 1 and report["first_bad_seq"] == 9


def test_max_age_fails_on_an_old_checkpoint(
    db: Path, tmp_path: Path, keys: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    key, jwks = keys
    log = SQLiteAuditLog(db)
    size, root = log.tree_head()
    old = tmp_path / "old.note"
    old.write_text(sign_checkpoint(ORIGIN, size, root, LocalSigner.load(key), now=1_000_000).note, encoding="utf-8")
    args = ["audit", "verify", "--db", str(db), "--jwks", jwks, "--checkpoint", str(old)]
    code, report = run(capsys, *args, "--max-age", "3600")
    assert code == 1 and report["first_bad_seq"] == 11 and "max-age" in report["message"]
    code, report = run(capsys, *args, "--max-age", str(10**12))
    assert code == 0 and report["checkpoint_seq"] == 10 and report["unsigned_records"] == 0
    code, report = run(capsys, "audit", "verify", "--db", str(db), "--max-age", "3600")
    assert code == 1 and "no signed checkpoint" in report["message"]


def test_a_guard_on_a_checkpointed_log(tmp_path: Path) -> None:
    """The cadence driven by a guard's own appends; denials end up provably in the log."""
    from execauth_core import ExecutionDenied, Guard
    from execauth_core.policy import AllowListPolicy
    from execauth_core.tlog_verify import verify_log

    signer = LocalSigner.generate()
    guard = Guard.local(AllowListPolicy(["search"]), data_dir=tmp_path, signer=signer)
    log = guard.audit_log
    guard.audit_log = CheckpointedLog(log, Checkpointer(log, signer, origin=ORIGIN, every=3))  # type: ignore[arg-type]
    for i in range(4):
        req = guard.proposal("search" if i % 2 == 0 else "delete_everything", {"i": i}, principal="alice")
        try:
            guard.run(req, lambda: "ok")
        except ExecutionDenied:
            pass
    sizes = [open_checkpoint(n, KeySet.of_signer(signer)).size for n in log.checkpoints()]  # type: ignore[attr-defined]
    assert sizes == [3, 6]  # 2 executions (2 entries each) and 2 denials
    report = verify_log(log, keys=KeySet.of_signer(signer), origin=ORIGIN)
    assert report.ok and report.records == 6 and report.unsigned == 0
    denial = next(e for e in log.entries() if e.event == "denial")
    proof = log.inclusion_proof(denial.seq - 1, 6)  # type: ignore[attr-defined]
    tlog.verify_inclusion(leaf_hash_of(denial), denial.seq - 1, 6, proof, log.root_at(6))  # type: ignore[attr-defined]
    guard.close()


def leaf_hash_of(entry: object) -> bytes:
    return tlog.leaf_hash(canonical_body(entry.body))  # type: ignore[attr-defined]
