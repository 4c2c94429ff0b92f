"""State stores (budgets, rate counters): the same contract for every backend,
and no overspend when processes race."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from execauth_core.stores import Debit, MemoryStateStore, SQLiteStateStore


@pytest.fixture(params=["memory", "sqlite"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> MemoryStateStore:
    return MemoryStateStore() if request.param == "memory" else SQLiteStateStore(tmp_path / "s.db")  # type: ignore[return-value]


BUDGET = Debit("budget/u/USD/86400", 60, 100, 86400)
RATE = Debit("rate/u/*/60", 1, 2, 60)


def test_all_or_nothing(state: MemoryStateStore) -> None:
    assert state.debit("h1", [BUDGET, RATE], now=1000) is None
    assert state.debit("h2", [BUDGET, RATE], now=1000) == BUDGET.key  # 120 > 100
    assert state.usage(RATE.key, 60, now=1000) == 1  # the rate was not charged either
    assert state.debit("h3", [RATE], now=1000) is None
    assert state.debit("h4", [RATE], now=1000) == RATE.key


def test_retry_of_a_hold_charges_once(state: MemoryStateStore) -> None:
    assert state.debit("h1", [BUDGET], now=1000) is None
    assert state.debit("h1", [BUDGET], now=1000) is None
    assert state.usage(BUDGET.key, 86400, now=1000) == 60


def test_refund_is_idempotent_and_unknown_ids_are_ignored(state: MemoryStateStore) -> None:
    state.debit("h1", [BUDGET, RATE], now=1000)
    state.refund("h1")
    state.refund("h1")
    state.refund("never-existed")
    assert state.usage(BUDGET.key, 86400, now=1000) == 0 and state.usage(RATE.key, 60, now=1000) == 0


def test_windows_roll_over(state: MemoryStateStore) -> None:
    state.debit("h1", [RATE], now=1000)
    state.debit("h2", [RATE], now=1001)
    assert state.debit("h3", [RATE], now=1019) == RATE.key
    assert state.debit("h4", [RATE], now=1020) is None  # 1020 starts a new 60 s window


def test_threads_never_overspend(state: MemoryStateStore) -> None:
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        barrier.wait()
        for i in range(25):
            wins.append(state.debit(f"h-{n}-{i}", [Debit("budget/x", 7, 1000, 86400)], now=1000) is None)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1000 // 7
    assert state.usage("budget/x", 86400, now=1000) == 7 * (1000 // 7)


SPEND = """
import sys
from execauth_core.stores import Debit, SQLiteStateStore
store = SQLiteStateStore(sys.argv[1])
won = 0
for i in range(int(sys.argv[3])):
    if store.debit(f"{sys.argv[2]}-{i}", [Debit("budget/shared/USD/86400", 3, 3000, 86400)], now=1000) is None:
        won += 1
print(won)
"""


def test_processes_never_overspend_sqlite(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    SQLiteStateStore(path)
    procs = [
        subprocess.Popen([sys.executable, "-c", SPEND, path, f"p{n}", "400"], stdout=subprocess.PIPE, text=True)
        for n in range(4)
    ]
    won = [int(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    # 1600 contested attempts on a budget that holds exactly 1000 of them
    assert sum(won) == 1000
    assert SQLiteStateStore(path).usage("budget/shared/USD/86400", 86400, now=1000) == 3000
