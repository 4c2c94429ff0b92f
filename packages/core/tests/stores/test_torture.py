"""Concurrency torture: separate processes (replicas) race for the same token ids,
the same budget and the same audit chain. Zero double consumption, zero
overspend, one chain. Run with ``-s`` to see the counts.

Children run small scripts (``python -c``), not multiprocessing targets: test
modules are imported by path under --import-mode=importlib, so a child could not
import them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from execauth_core import verify_chain
from execauth_core.stores import Debit
from execauth_core.stores.urls import open_stores

from .conftest import Backend, make_backend

PROCESSES = 4
IDS = 2500  # every process tries every id: 4 x 2,500 = 10,000 contested consumes
DEBITS = 2500  # 4 x 2,500 = 10,000 contested debits
APPENDS = 300

# The budget holds exactly 1,000 debits of 3; odd attempts also take a rate slot,
# and the rate holds 300: so exactly 300 odd and 700 even attempts can win.
BUDGET = Debit("budget/torture/USD/86400", 3, 3000, 86400)
RATE = Debit("rate/torture/*/3600", 1, 300, 3600)

PRELUDE = """
import json, sys, time
from execauth_core.stores import Debit
from execauth_core.stores.urls import open_stores
stores = open_stores(sys.argv[1])
tag, n, now = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
print("ready", flush=True)
sys.stdin.readline()  # everyone starts together
"""
CONSUME = (
    PRELUDE
    + """
won = [i for i in range(n) if stores.replay.consume(f"torture-{i:06d}", expires_at=now + 600, now=now)]
print(json.dumps(won))
"""
)
DEBIT = (
    PRELUDE
    + f"""
budget, rate = Debit(*{list(vars(BUDGET).values())!r}), Debit(*{list(vars(RATE).values())!r})
wins = {{"even": 0, "odd": 0}}
for i in range(n):
    odd = i % 2 == 1
    if stores.state.debit(f"{{tag}}-{{i}}", [budget, rate] if odd else [budget], now=now) is None:
        wins["odd" if odd else "even"] += 1
print(json.dumps(wins))
"""
)
APPEND = (
    PRELUDE
    + """
for i in range(n):
    stores.audit.append({"event": "decision", "executed": False, "time": now, "writer": tag, "n": i})
print(json.dumps(n))
"""
)


def race_processes(script: str, url: str, n: int, now: int) -> list[Any]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, url, f"p{k}", str(n), str(now)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(PROCESSES if script is not APPEND else 2)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            for pipe in (p.stdin, p.stdout):
                if pipe is not None:
                    pipe.close()
    assert [p.returncode for p in procs] == [0] * len(procs)
    return [json.loads(out) for out in outs]


def check_consumption(name: str, won: list[list[int]]) -> None:
    winners: dict[int, int] = {}
    for per_process in won:
        for i in per_process:
            winners[i] = winners.get(i, 0) + 1
    doubles = sum(1 for c in winners.values() if c > 1)
    attempts = IDS * len(won)
    print(
        f"\n[torture {name}] consume: {attempts} contested attempts by {len(won)} workers on {IDS} ids -> "
        f"{sum(map(len, won))} won, {doubles} double consumptions, {IDS - len(winners)} ids never consumed"
    )
    assert doubles == 0
    assert sorted(winners) == list(range(IDS))


def check_budget(name: str, wins: list[dict[str, int]], budget_used: int, rate_used: int) -> None:
    even, odd = sum(w["even"] for w in wins), sum(w["odd"] for w in wins)
    print(
        f"[torture {name}] debit: {DEBITS * len(wins)} contested attempts -> {even + odd} won "
        f"(budget {budget_used}/{BUDGET.limit}, rate {rate_used}/{RATE.limit}), "
        f"overspend {max(0, budget_used - BUDGET.limit) + max(0, rate_used - RATE.limit)}"
    )
    assert (even, odd) == (700, 300)
    assert budget_used == BUDGET.amount * (even + odd) == BUDGET.limit
    assert rate_used == odd == RATE.limit  # all-or-nothing: no rate charge for a refused budget


def test_processes_race_for_ids_and_budget(shared_backend: Backend) -> None:
    now = int(time.time())
    t0 = time.perf_counter()
    won = race_processes(CONSUME, shared_backend.url, IDS, now)
    t1 = time.perf_counter()
    check_consumption(shared_backend.name, won)
    wins = race_processes(DEBIT, shared_backend.url, DEBITS, now)
    t2 = time.perf_counter()
    state = shared_backend.open().state
    check_budget(
        shared_backend.name,
        wins,
        state.usage(BUDGET.key, BUDGET.window, now=now),
        state.usage(RATE.key, RATE.window, now=now),
    )
    print(f"[torture {shared_backend.name}] {PROCESSES} processes: consume {t1 - t0:.1f} s, debit {t2 - t1:.1f} s")


def test_two_writer_processes_make_one_chain(shared_backend: Backend) -> None:
    race_processes(APPEND, shared_backend.url, APPENDS, int(time.time()))
    log = shared_backend.open().audit
    entries = list(log.entries())
    seq, _ = verify_chain(entries, expected_head=log.head())
    by_writer = {w: sorted(e.body["n"] for e in entries if e.body["writer"] == w) for w in ("p0", "p1")}
    print(f"\n[torture {shared_backend.name}] audit: 2 writer processes x {APPENDS} appends -> one chain of {seq}")
    assert seq == 2 * APPENDS
    assert by_writer == {"p0": list(range(APPENDS)), "p1": list(range(APPENDS))}


def test_memory_threads_race_for_ids_and_budget() -> None:
    # Memory stores live in one process, so its racers are threads.
    stores = open_stores("memory://")
    now = int(time.time())
    won: list[list[int]] = [[] for _ in range(PROCESSES)]
    wins = [{"even": 0, "odd": 0} for _ in range(PROCESSES)]
    barrier = threading.Barrier(PROCESSES)

    def work(k: int) -> None:
        barrier.wait()
        won[k] = [i for i in range(IDS) if stores.replay.consume(f"torture-{i:06d}", expires_at=now + 600, now=now)]
        for i in range(DEBITS):
            odd = i % 2 == 1
            if stores.state.debit(f"t{k}-{i}", [BUDGET, RATE] if odd else [BUDGET], now=now) is None:
                wins[k]["odd" if odd else "even"] += 1

    threads = [threading.Thread(target=work, args=(k,)) for k in range(PROCESSES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check_consumption("memory (threads)", won)
    check_budget(
        "memory (threads)",
        wins,
        stores.state.usage(BUDGET.key, BUDGET.window, now=now),
        stores.state.usage(RATE.key, RATE.window, now=now),
    )


FORK = """
import os, sys
from execauth_core.stores.urls import open_stores
stores = open_stores(sys.argv[1])
db = stores.replay._db
assert stores.replay.consume("before-fork", expires_at=10**6, now=0)
parent_session = db._idle[-1].conn.info.backend_pid
pid = os.fork()
if pid == 0:
    fresh = stores.replay.consume("in-child", expires_at=10**6, now=0)
    replayed = stores.replay.consume("before-fork", expires_at=10**6, now=0)
    own_session = db._idle[-1].conn.info.backend_pid
    sys.exit(0 if fresh and not replayed and own_session != parent_session else 3)  # finalizers run
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert stores.replay.consume("after-fork", expires_at=10**6, now=0)
# The parent kept its session: the child neither used it nor closed it on exit.
assert db._idle[-1].conn.info.backend_pid == parent_session
print("ok")
"""


def test_a_forked_worker_gets_its_own_postgres_sessions(tmp_path: Path) -> None:
    # Pre-fork servers (gunicorn...) may build the guard before forking workers.
    backend = make_backend("postgres", tmp_path)
    try:
        out = subprocess.run(
            [sys.executable, "-c", FORK, backend.url], capture_output=True, text=True, timeout=120, check=False
        )
        assert (out.returncode, out.stdout.strip()) == (0, "ok"), out.stderr
    finally:
        backend.close()
