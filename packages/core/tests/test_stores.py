"""Replay stores: atomic consume-once, expiry, bounds; across processes for SQLite."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from execauth_core import StoreUnavailable
from execauth_core.stores import MemoryReplayStore, SQLiteAuditLog, SQLiteReplayStore


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    return MemoryReplayStore() if request.param == "memory" else SQLiteReplayStore(tmp_path / "r.db")


def test_consume_once(store: MemoryReplayStore) -> None:
    assert store.consume("a" * 20, expires_at=100, now=0) is True
    assert store.consume("a" * 20, expires_at=100, now=50) is False
    assert store.consume("b" * 20, expires_at=100, now=50) is True


def test_threads_race_for_one_id(store: MemoryReplayStore) -> None:
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for i in range(200):
            wins.append(store.consume(f"token-{i:016d}", expires_at=10**6, now=0))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 200 and wins.count(False) == 7 * 200


def test_memory_store_expires_and_is_bounded() -> None:
    store = MemoryReplayStore(max_entries=3)
    for i in range(3):
        store.consume(f"id-{i}", expires_at=10, now=0)
    with pytest.raises(StoreUnavailable, match="full"):
        store.consume("id-3", expires_at=10, now=5)  # all live: refuse rather than forget
    assert store.consume("id-3", expires_at=30, now=11)  # the old ones expired
    assert len(store) == 1


def test_sqlite_store_purges_expired_rows(tmp_path: Path) -> None:
    store = SQLiteReplayStore(tmp_path / "r.db")
    for i in range(2048):
        store.consume(f"id-{i:08d}", expires_at=i, now=0)
    store.consume("late-id-000000001", expires_at=10**6, now=5000)
    store.consume("late-id-000000002", expires_at=10**6, now=5000)
    import sqlite3

    n = sqlite3.connect(tmp_path / "r.db").execute("SELECT COUNT(*) FROM consumed_tokens").fetchone()[0]
    assert n < 100


# Child processes run small scripts (not multiprocessing targets): test modules
# are imported by path under --import-mode=importlib, so a child could not import them.
CONSUME = """
import sys
from execauth_core.stores import SQLiteReplayStore
store = SQLiteReplayStore(sys.argv[1])
print(sum(store.consume(f"contested-{i:08d}", expires_at=10**6, now=0) for i in range(300)))
"""
APPEND = """
import sys
from execauth_core.stores import SQLiteAuditLog
log = SQLiteAuditLog(sys.argv[1])
for i in range(100):
    log.append({"event": "decision", "executed": False, "time": i})
"""


def run_children(script: str, path: str, n: int) -> list[str]:
    procs = [
        subprocess.Popen([sys.executable, "-c", script, path], stdout=subprocess.PIPE, text=True) for _ in range(n)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    return outs


def test_sqlite_processes_race_without_double_consumption(tmp_path: Path) -> None:
    path = str(tmp_path / "r.db")
    SQLiteReplayStore(path)
    won = [int(out) for out in run_children(CONSUME, path, 4)]
    assert sum(won) == 300  # each of the 300 ids consumed exactly once across 1200 attempts


def test_sqlite_audit_two_writer_processes_make_one_chain(tmp_path: Path) -> None:
    from execauth_core import verify_chain

    path = str(tmp_path / "a.db")
    SQLiteAuditLog(path)
    run_children(APPEND, path, 2)
    log = SQLiteAuditLog(path)
    assert verify_chain(log.entries(), expected_head=log.head())[0] == 200


def test_unopenable_database_is_store_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        SQLiteReplayStore(tmp_path / "no" / "such" / "dir" / "r.db")


def test_audit_event_must_state_executed() -> None:
    from execauth_core.stores import MemoryAuditLog

    with pytest.raises(ValueError, match="explicitly"):
        MemoryAuditLog().append({"event": "denial", "time": 1})
