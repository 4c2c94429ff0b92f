"""Replay stores: atomic consume-once, expiry, bounds; across processes for SQLite."""

from __future__ import annotations

import multiprocessing as mp
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


def _consume_many(path: str, start: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    store = SQLiteReplayStore(path)
    won = sum(store.consume(f"contested-{i:08d}", expires_at=10**6, now=0) for i in range(start, start + 300))
    out.put(won)


def test_sqlite_processes_race_without_double_consumption(tmp_path: Path) -> None:
    path = str(tmp_path / "r.db")
    SQLiteReplayStore(path)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_consume_many, args=(path, 0, out)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sum(results) == 300  # each of the 300 ids consumed exactly once across 1200 attempts


def _append_many(path: str, n: int) -> None:
    log = SQLiteAuditLog(path)
    for i in range(n):
        log.append({"event": "decision", "executed": False, "time": i})


def test_sqlite_audit_two_writer_processes_make_one_chain(tmp_path: Path) -> None:
    from execauth_core import verify_chain

    path = str(tmp_path / "a.db")
    SQLiteAuditLog(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(path, 100)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    log = SQLiteAuditLog(path)
    assert verify_chain(log.entries(), expected_head=log.head())[0] == 200


def test_unopenable_database_is_store_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        SQLiteReplayStore(tmp_path / "no" / "such" / "dir" / "r.db")


def test_audit_event_must_state_executed() -> None:
    from execauth_core.stores import MemoryAuditLog

    with pytest.raises(ValueError, match="explicitly"):
        MemoryAuditLog().append({"event": "denial", "time": 1})
