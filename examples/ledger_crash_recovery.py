"""A payment that crashes mid-effect and is recovered without a duplicate.

    python examples/ledger_crash_recovery.py

1. A worker process runs a guarded ``transfer``: the bank (a file here) records the
   transfer, then the worker is killed (SIGKILL) before it can record the outcome.
2. The agent retries the same call from a new process: the effect ledger refuses it
   (``LEDGER_IN_FLIGHT`` within the lease, ``LEDGER_OUTCOME_UNKNOWN`` after), and
   the bank is not called again.
3. An operator looks at the bank, finds the transfer under the call's idempotency key,
   and resolves the entry as succeeded (``execauth ledger resolve`` does the same).
4. A further retry gets the recorded outcome, ``LEDGER_ALREADY_SUCCEEDED``. The bank
   holds exactly one transfer.

Runs offline; everything lives in a temporary folder (or the folder given as argument).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from execauth_core import AllowListPolicy, ExecutionDenied, Guard, idempotency_key
from execauth_core.current import current_call
from execauth_core.ledger import Ledger, SQLiteLedgerStore

LEASE = 2  # seconds a started call may take before its missing outcome reads as unknown


def guard_in(folder: Path) -> Guard:
    ledger = Ledger(SQLiteLedgerStore(folder / "execauth.db"), lease=LEASE)
    return Guard.local(AllowListPolicy(["transfer"]), data_dir=folder, ledger=ledger)


def attempt(folder: Path, *, crash: bool) -> str:
    """One attempt of the agent's call ``call_1`` in run ``run-7``: what it says."""
    guard = guard_in(folder)
    bank = folder / "bank.txt"

    def transfer(amount: str, to: str) -> str:
        key = current_call().idempotency_key  # a real payment API would dedupe on it too
        with bank.open("a", encoding="utf-8") as f:
            f.write(f"{key} {amount} -> {to}\n")
        if crash:
            os.kill(os.getpid(), signal.SIGKILL)  # after the effect, before the outcome is recorded
        return "transferred"

    req = guard.proposal("transfer", {"amount": "25.00", "to": "bob"}, principal="alice", call_id="call_1")
    # The agent framework's run id, the tool-call id and the proposal: the same call,
    # retried or resumed anywhere, has the same key.
    key = idempotency_key("run-7", "call_1", req.content_digest())
    try:
        return guard.run(req, lambda: transfer(**req.args), idempotency_key=key)
    except ExecutionDenied as exc:
        return f"refused: {exc.reason_codes[0]}"
    finally:
        guard.close()


def main(folder: Path) -> int:
    here = Path(__file__).resolve()
    print("1. worker runs the transfer and is killed mid-effect")
    worker = subprocess.run([sys.executable, str(here), "--worker", str(folder)], check=False)  # noqa: S603 - this file
    print(f"   worker exit status {worker.returncode} (SIGKILL is {-signal.SIGKILL})")
    print(f"2. retry at once: {attempt(folder, crash=False)}")
    time.sleep(LEASE + 1.1)  # the worker never comes back
    print(f"   retry after the lease: {attempt(folder, crash=False)}")
    bank = (folder / "bank.txt").read_text(encoding="utf-8").splitlines()
    print(f"3. the bank holds {len(bank)} transfer: {bank[0]}")
    ledger = Ledger(SQLiteLedgerStore(folder / "execauth.db"), lease=LEASE, audit_log=guard_in(folder).audit_log)
    [unknown] = ledger.list("unknown")
    resolved = ledger.resolve(unknown.key, succeeded=True, by="ops", note="bank statement shows it")
    print(f"   resolved {resolved.key[:15]}... as {resolved.state} by {resolved.resolved_by}")
    print(f"4. retry again: {attempt(folder, crash=False)}")
    bank = (folder / "bank.txt").read_text(encoding="utf-8").splitlines()
    print(f"   the bank holds {len(bank)} transfer")
    return 0 if len(bank) == 1 else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        attempt(Path(sys.argv[2]), crash=True)
        sys.exit(0)  # not reached: the worker kills itself
    if len(sys.argv) > 1:
        sys.exit(main(Path(sys.argv[1])))
    with tempfile.TemporaryDirectory() as tmp:
        sys.exit(main(Path(tmp)))
