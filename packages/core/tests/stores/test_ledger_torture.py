"""The ledger across processes: four processes racing on one key run the tool once;
a process killed (SIGKILL) between start and outcome leaves an entry that the next
attempt reports as unknown, never re-runs, and that ``execauth ledger resolve``
reconciles. The tool counts its executions in a file it appends to.

Children run small scripts (``python -c``), as in test_torture.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from execauth_core import verify_chain
from execauth_core.stores.urls import open_stores

from .conftest import Backend, _param, make_backend

PROCESSES = 4

CHILD = """
import os, signal, sys, time
from execauth_core import AllowListPolicy, ExecutionDenied, Guard
from execauth_core.current import current_call
from execauth_core.ledger import Ledger, open_ledger
url, effects, mode = sys.argv[1], sys.argv[2], sys.argv[3]
class Later:  # the resumed attempt comes after the lease of the killed one has passed
    def now(self):
        return int(time.time()) + 600
# A lease long enough that the attempt right after the kill sees it in flight on a
# loaded machine; the resumed attempt's clock is past it.
ledger = Ledger(open_ledger(url), lease=300, clock=Later() if mode == "resume" else None)
guard = Guard.local(AllowListPolicy(["transfer"]), stores=url, ledger=ledger)
req = guard.proposal("transfer", {"to": "bob", "amount": "5.00"}, principal="alice", call_id="call-1")

def transfer():
    with open(effects, "a") as f:
        f.write(f"{os.getpid()} {current_call().idempotency_key}\\n")
    if mode == "crash":
        os.kill(os.getpid(), signal.SIGKILL)  # after the effect, before the outcome is recorded
    time.sleep(0.2)
    return "sent"

print("ready", flush=True)
sys.stdin.readline()
try:
    guard.run(req, transfer)
    print("ran", flush=True)
except ExecutionDenied as exc:
    print(exc.reason_codes[0], flush=True)
"""


@pytest.fixture(params=[_param("sqlite"), _param("postgres")])
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The file and the server a deployment shares between worker processes."""
    b = make_backend(request.param, tmp_path)
    try:
        yield b
    finally:
        b.close()


def child(url: str, effects: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(effects), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def go(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str]]:
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    out = []
    for p in procs:
        text, _ = p.communicate(timeout=60)
        out.append((p.returncode, text.strip()))
    return out


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "execauth_core", "ledger", *args], capture_output=True, text=True, timeout=60
    )


def test_four_processes_racing_on_one_key_run_the_tool_once(durable: Backend, tmp_path: Path) -> None:
    effects = tmp_path / "effects.txt"
    results = go([child(durable.url, effects, "race") for _ in range(PROCESSES)])
    assert [rc for rc, _ in results] == [0] * PROCESSES
    said = sorted(text for _, text in results)
    assert said.count("ran") == 1, said
    assert set(said) - {"ran"} <= {"LEDGER_IN_FLIGHT", "LEDGER_ALREADY_SUCCEEDED"}, said
    assert len(effects.read_text().splitlines()) == 1
    stores = open_stores(durable.url)
    try:
        entries = list(stores.audit.entries())
        verify_chain(entries)
        assert sum(1 for e in entries if e.event == "execution") == 1
        denials = [e.body["reason_codes"][0] for e in entries if e.event == "denial"]
        assert sorted(denials) == [s for s in said if s != "ran"]  # every refusal recorded
    finally:
        stores.close()


def test_a_crash_between_start_and_outcome_is_unknown_then_reconciled(durable: Backend, tmp_path: Path) -> None:
    url, effects = durable.url, tmp_path / "effects.txt"
    [(rc, _)] = go([child(url, effects, "crash")])
    assert rc == -signal.SIGKILL
    [(_, early)] = go([child(url, effects, "race")])  # within the lease: still in flight
    assert early == "LEDGER_IN_FLIGHT"
    [(_, resumed)] = go([child(url, effects, "resume")])
    assert resumed == "LEDGER_OUTCOME_UNKNOWN"
    lines = effects.read_text().splitlines()
    assert len(lines) == 1  # the effect happened once, before the kill; never again
    key = lines[0].split()[1]

    listed = cli("list", "--unknown", "--json", "--store", url)
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert (entry["key"], entry["state"], entry["stored_state"], entry["tool"]) == (
        key,
        "unknown",
        "unknown",
        "transfer",
    )
    resolved = cli("resolve", key, "--succeeded", "--note", "bank shows one transfer", "--by", "ops", "--store", url)
    assert resolved.returncode == 0, resolved.stderr
    assert json.loads(resolved.stdout)["state"] == "succeeded"
    shown = json.loads(cli("show", key, "--store", url).stdout)
    assert (shown["state"], shown["resolved_by"], shown["note"]) == ("succeeded", "ops", "bank shows one transfer")
    [(_, after)] = go([child(url, effects, "race")])
    assert after == "LEDGER_ALREADY_SUCCEEDED"
    assert len(effects.read_text().splitlines()) == 1
    stores = open_stores(url)
    try:
        entries = list(stores.audit.entries())
        verify_chain(entries)
        [resolution] = [e for e in entries if e.event == "ledger"]
        assert resolution.body["detail"]["by"] == "ops" and resolution.body["detail"]["idempotency_key"] == key
    finally:
        stores.close()
