"""The quickstart: a scripted agent proposes tool calls; the guard disposes.

One call is allowed and executed, one is denied by policy, one reuses a spent
token and is denied as a replay, one needs a person's approval of the exact
arguments. Then the audit log is verified. Runs on the SQLite default in a
local folder; no server, no network, no model. The folder's audit log keeps the
records of every run (it is append-only): the demo says how many this run added.
"""

from __future__ import annotations

import json
import secrets
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, TextIO

from .audit import verify_chain
from .errors import ApprovalRequired, ExecutionDenied, denial_message
from .guard import Guard
from .policy import AllowListPolicy
from .stores.sqlite import SQLiteAuditLog


def _say(out: TextIO, text: str) -> None:
    out.write(text + "\n")


def cli_command() -> str:
    """How to call this same CLI from any shell: the full path of the `execauth`
    script that is running, else this interpreter with `-m execauth_core`."""
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "execauth":
        found = shutil.which(argv0) if Path(argv0).name == argv0 else argv0
        if found and Path(found).is_file():
            return shlex.quote(str(Path(found).absolute()))
    return f"{shlex.quote(sys.executable)} -m execauth_core"


def run_demo(data_dir: str | Path, out: TextIO) -> int:
    """Run the quickstart; returns a process exit code (0 when all went as designed)."""
    policy = AllowListPolicy(["search_docs", "send_refund"], require_approval=["send_refund"], policy_id="demo")
    guard = Guard.local(policy, data_dir=data_dir)
    executed: list[str] = []

    def search_docs(query: str) -> str:
        executed.append(f"search_docs({query!r})")
        return f"3 documents match {query!r}"

    def delete_database(name: str) -> str:  # pragma: no cover - must never run
        executed.append(f"delete_database({name!r})")
        return "dropped"

    def send_refund(order: str, amount: str) -> str:
        executed.append(f"send_refund({order!r}, {amount!r})")
        return f"refunded {amount} on {order}"

    _say(out, f"execauth demo: policy '{policy.policy_ref.id}' {policy.policy_ref.digest}")
    _say(out, f"  data in {Path(data_dir).resolve()}")
    records_before = guard.audit_log.head()[0]
    if records_before:
        _say(out, f"  its audit log already holds {records_before} records from earlier runs: this run appends")

    run = secrets.token_hex(4)  # each run is a new agent run: its calls are new calls for the ledger

    def propose(n: int, tool: str, args: dict[str, Any]) -> Any:
        _say(out, f"\n[{n}] agent proposes {tool}({json.dumps(args)})")
        return guard.proposal(tool, args, principal="user-42", agent="support-bot", call_id=f"{run}-call-{n}")

    ok = True
    # 1. allowed: decided, token issued, verified, consumed, executed.
    req = propose(1, "search_docs", {"query": "refund policy"})
    decision = guard.authorize(req)
    _say(out, f"    decision {decision.outcome.value} {list(decision.reason_codes)}")
    result = guard.execute(req, decision.token, lambda: search_docs(**req.args))
    _say(out, f"    EXECUTED -> {result}")

    # 2. denied by policy: no token, never executed.
    req2 = propose(2, "delete_database", {"name": "prod"})
    try:
        guard.run(req2, lambda: delete_database(**req2.args))
        ok = False
    except ExecutionDenied as exc:
        _say(out, f"    DENIED  -> {denial_message(exc)}")

    # 3. replay: the agent presents call 1's token again.
    _say(out, "\n[3] agent re-presents the token of call 1")
    try:
        guard.execute(req, decision.token, lambda: search_docs(**req.args))
        ok = False
    except ExecutionDenied as exc:
        _say(out, f"    DENIED  -> {denial_message(exc)}")

    # 4. approval: bound to the exact arguments a person saw.
    req4 = propose(4, "send_refund", {"order": "A-1001", "amount": "25.00"})
    try:
        guard.run(req4, lambda: send_refund(**req4.args))
        ok = False
    except ApprovalRequired as exc:
        _say(
            out,
            f"    PAUSED  -> waiting for a person's approval of {exc.pending.proposal_digest[:23]}... "
            f"({exc.outcome}); nothing ran",
        )
        grant = guard.approve(exc.pending, approver="alice@example.com")
        _say(out, f"    alice approves {exc.pending.proposal_digest[:23]}...")
        changed = guard.proposal(
            "send_refund",
            {"order": "A-1001", "amount": "2500.00"},
            principal="user-42",
            agent="support-bot",
            call_id="call-4",
        )
        try:
            guard.run(changed, lambda: send_refund(**changed.args), approval=grant)
            ok = False
        except ExecutionDenied as denied:
            _say(out, f"    model changed amount to 2500.00 -> DENIED {list(denied.reason_codes)}")
        result = guard.run(req4, lambda: send_refund(**req4.args), approval=grant)
        _say(out, f"    EXECUTED -> {result}")

    _say(out, f"\ntools that actually ran: {executed}")
    audit = guard.audit_log
    head = verify_chain(audit.entries(), expected_head=audit.head())
    denials = sum(1 for e in audit.entries() if e.event == "denial")
    _say(
        out,
        f"audit log verified: {head[0]} records ({head[0] - records_before} from this run), "
        f"head {head[1][:23]}..., {denials} denials in all (executed: false)",
    )
    if records_before:
        _say(out, f"  the log keeps every run's records; delete {Path(data_dir)} to start over")
    if isinstance(audit, SQLiteAuditLog):
        _say(
            out, f"check it yourself: {cli_command()} audit verify --db {shlex.quote(str(Path(audit.path).resolve()))}"
        )
    ok = _checkpoint_and_prove(guard, out) and ok
    expected = ["search_docs('refund policy')", "send_refund('A-1001', '25.00')"]
    if executed != expected:
        ok = False
    _say(out, "demo: OK" if ok else "demo: UNEXPECTED RESULT")
    return 0 if ok else 1


def _checkpoint_and_prove(guard: Guard, out: TextIO) -> bool:
    """Sign a checkpoint of the log's Merkle tree, then prove the first denial is in it
    with nothing but the checkpoint and the public key."""
    import base64

    from .audit import canonical_body
    from .keys import KeySet
    from .tlog import leaf_hash, verify_inclusion
    from .tlog_checkpoint import Checkpointer, open_checkpoint

    audit: Any = guard.audit_log
    if not hasattr(audit, "inclusion_proof") or guard.authority is None:
        return True
    signer = guard.authority.signer
    cp = Checkpointer(audit, signer, origin="execauth.local/audit").checkpoint()
    _say(out, f"\ncheckpoint signed: {cp.size} records, root {base64.b64encode(cp.root).decode()[:16]}...")
    denial = next(e for e in audit.entries() if e.event == "denial")
    proof = audit.inclusion_proof(denial.seq - 1, cp.size)
    trusted = open_checkpoint(cp.note, KeySet.of_signer(signer), origin=cp.origin)
    verify_inclusion(leaf_hash(canonical_body(denial.body)), denial.seq - 1, trusted.size, proof, trusted.root)
    _say(out, f"denial record {denial.seq} is in the signed log: inclusion proof of {len(proof)} hashes verifies")
    if isinstance(audit, SQLiteAuditLog):
        _say(
            out,
            f"prove it yourself: {cli_command()} audit proof"
            f" --db {shlex.quote(str(Path(audit.path).resolve()))} --seq {denial.seq}",
        )
    return True
