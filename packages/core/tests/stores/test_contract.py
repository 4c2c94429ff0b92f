"""The store contract: every backend (memory, SQLite, Redis, PostgreSQL) passes the
same tests for the replay store, the audit log and the state store."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest

from execauth_core import StoreUnavailable, verify_chain
from execauth_core.stores import Debit
from execauth_core.stores.urls import Stores
from execauth_core.tokens import MAX_CLOCK_SKEW

from .conftest import Backend

BUDGET = Debit("budget/u/USD/86400", 60, 100, 86400)
RATE = Debit("rate/u/*/60", 1, 2, 60)


def event(i: int, **extra: Any) -> dict[str, Any]:
    return {"event": "decision", "executed": False, "time": 1_767_225_600 + i, "n": i, **extra}


def race(n: int, work: Any) -> None:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(k: int) -> None:
        barrier.wait()
        try:
            work(k)
        except BaseException as exc:  # surfaced below: a thread's failure fails the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


# -- replay -------------------------------------------------------------------


def test_consume_once(stores: Stores) -> None:
    assert stores.replay.consume("a" * 24, expires_at=100, now=0) is True
    assert stores.replay.consume("a" * 24, expires_at=100, now=50) is False
    assert stores.replay.consume("b" * 24, expires_at=100, now=50) is True


def test_ids_are_compared_exactly(stores: Stores) -> None:
    ids = ["x" * 200, "x" * 199, "X" * 200, "tok-1", "tok-10", "tok:1", "tök-1", "tok-1 "]
    assert [stores.replay.consume(i, expires_at=10**6, now=0) for i in ids] == [True] * len(ids)
    assert [stores.replay.consume(i, expires_at=10**6, now=1) for i in ids] == [False] * len(ids)


def test_live_ids_survive_purges(backend: Backend, stores: Stores) -> None:
    base = int(time.time())
    assert stores.replay.consume("long-lived", expires_at=base + 600, now=base)
    # Enough traffic, late enough, to trigger every backend's periodic purge.
    for i in range(1100):
        stores.replay.consume(f"filler-{i:05d}", expires_at=base + 1, now=base + 300)
    assert stores.replay.consume("long-lived", expires_at=base + 600, now=base + 599) is False


def test_expired_ids_are_forgotten(backend: Backend, stores: Stores) -> None:
    replay = backend.replay_without_margin(stores)
    base = int(time.time())
    for i in range(50):
        replay.consume(f"short-{i:03d}", expires_at=base + 1, now=base)
    replay.consume("long", expires_at=base + 1000, now=base)
    assert backend.live_ids(stores) == 51
    backend.let_time_pass(2.2)
    later = base + 1 + MAX_CLOCK_SKEW + 61  # past the replica clock margin and every purge interval
    for i in range(3):
        assert replay.consume(f"late-{i}", expires_at=later + 1000, now=later)
    assert backend.live_ids(stores) == 4  # "long" and the three late ones: nothing grows unbounded
    assert replay.consume("long", expires_at=base + 1000, now=later) is False


def test_shared_ids_outlive_expiry_by_the_replica_clock_margin(shared_backend: Backend) -> None:
    # Another replica whose clock runs up to MAX_CLOCK_SKEW behind still accepts the
    # token, so a shared store keeps its id that long after expires_at.
    replay = shared_backend.open().replay
    base = int(time.time())
    assert replay.consume("margin-id", expires_at=base + 1, now=base)
    for i in range(1100):  # enough traffic, late enough, to trigger every periodic purge
        replay.consume(f"filler-{i:05d}", expires_at=base + 1, now=base + MAX_CLOCK_SKEW - 10)
    assert replay.consume("margin-id", expires_at=base + 1, now=base + MAX_CLOCK_SKEW - 10) is False


def test_threads_race_for_the_same_ids(stores: Stores) -> None:
    wins = [0] * 8

    def work(k: int) -> None:
        for i in range(150):
            wins[k] += stores.replay.consume(f"contested-{i:04d}", expires_at=10**6, now=0)

    race(8, work)
    assert sum(wins) == 150


# Restarts and second clients need a backend that outlives a client: not memory.


def test_consumed_ids_survive_a_client_restart(shared_backend: Backend) -> None:
    stores = shared_backend.open()
    assert stores.replay.consume("before-restart", expires_at=10**6, now=0)
    stores.close()
    again = shared_backend.open()
    assert again.replay.consume("before-restart", expires_at=10**6, now=1) is False
    assert again.replay.consume("after-restart", expires_at=10**6, now=1) is True


# -- audit --------------------------------------------------------------------


def test_append_links_every_entry(stores: Stores) -> None:
    log = stores.audit
    entries = [log.append(event(i)) for i in range(1, 21)]
    assert [e.seq for e in entries] == list(range(1, 21))
    assert log.head() == (20, entries[-1].digest)
    for prev, cur in itertools.pairwise(entries):
        assert cur.body["prev"] == prev.digest
    assert verify_chain(log.entries(), expected_head=log.head()) == log.head()


def test_entries_round_trip_exactly_and_in_order(stores: Stores) -> None:
    odd = {"unicode": "zürich ✓ 𝄞", "nested": {"b": [1, 2, {"c": None}], "a": True}, "big": 2**53 - 1}
    written = [stores.audit.append(event(i, **odd)) for i in range(1, 6)]
    read = list(stores.audit.entries())
    assert [(e.seq, e.digest, dict(e.body)) for e in read] == [(e.seq, e.digest, dict(e.body)) for e in written]
    assert [e.seq for e in stores.audit.entries(4)] == [4, 5]
    assert list(stores.audit.entries(6)) == []


def test_empty_log(stores: Stores) -> None:
    assert stores.audit.head()[0] == 0
    assert list(stores.audit.entries()) == []
    assert verify_chain(stores.audit.entries(), expected_head=stores.audit.head())[0] == 0


def test_malformed_event_is_refused_and_nothing_is_written(stores: Stores) -> None:
    stores.audit.append(event(1))
    head = stores.audit.head()
    with pytest.raises(ValueError, match="explicitly"):
        stores.audit.append({"event": "denial", "time": 1})
    with pytest.raises(ValueError, match="unknown audit event"):
        stores.audit.append({"event": "nope", "executed": False, "time": 1})
    assert stores.audit.head() == head
    assert len(list(stores.audit.entries())) == 1


def test_long_log_pages_through(stores: Stores) -> None:
    for i in range(1, 1031):  # past the Redis (512) and PostgreSQL (1000) page sizes
        stores.audit.append(event(i))
    assert [e.seq for e in stores.audit.entries()] == list(range(1, 1031))
    assert verify_chain(stores.audit.entries(), expected_head=stores.audit.head())[0] == 1030


def test_threads_append_one_chain(stores: Stores) -> None:
    race(4, lambda k: [stores.audit.append(event(i, writer=k)) for i in range(40)])
    assert verify_chain(stores.audit.entries(), expected_head=stores.audit.head())[0] == 160


def test_two_clients_interleave_into_one_chain(shared_backend: Backend) -> None:
    stores, other = shared_backend.open(), shared_backend.open()
    for i in range(10):
        stores.audit.append(event(i, writer="a"))
        other.audit.append(event(i, writer="b"))
        other.audit.append(event(i, writer="b2"))
    assert verify_chain(other.audit.entries(), expected_head=stores.audit.head())[0] == 30
    writers = [e.body["writer"] for e in stores.audit.entries()]
    assert writers == ["a", "b", "b2"] * 10


def test_identical_events_from_two_clients_are_each_recorded(shared_backend: Backend) -> None:
    # Same body, same second, from two replicas: two records, never one taken for the other.
    clients = [shared_backend.open(), shared_backend.open()]
    race(2, lambda k: [clients[k].audit.append(event(0)) for _ in range(60)])
    log = clients[0].audit
    assert verify_chain(log.entries(), expected_head=log.head())[0] == 120


def test_the_log_continues_after_a_client_restart(shared_backend: Backend) -> None:
    stores = shared_backend.open()
    for i in range(3):
        stores.audit.append(event(i))
    head = stores.audit.head()
    stores.close()
    again = shared_backend.open()
    assert again.audit.head() == head
    assert again.audit.append(event(4)).body["prev"] == head[1]
    assert verify_chain(again.audit.entries(), expected_head=again.audit.head())[0] == 4


# -- state --------------------------------------------------------------------


def test_debits_are_all_or_nothing(stores: Stores) -> None:
    state = stores.state
    assert state.debit("h1", [BUDGET, RATE], now=1000) is None
    assert state.debit("h2", [BUDGET, RATE], now=1000) == BUDGET.key  # 120 > 100
    assert state.usage(RATE.key, 60, now=1000) == 1  # the rate was not charged either
    assert state.usage(BUDGET.key, 86400, now=1000) == 60
    assert state.debit("h3", [RATE], now=1000) is None
    assert state.debit("h4", [RATE], now=1000) == RATE.key
    assert state.usage(RATE.key, 60, now=1000) == 2


def test_the_first_refusing_counter_is_named_in_the_given_order(stores: Stores) -> None:
    full_a, full_b = Debit("z-counter", 5, 4, 60), Debit("a-counter", 5, 4, 60)
    ok = Debit("m-counter", 1, 10, 60)
    assert stores.state.debit("h1", [ok, full_a, full_b], now=1000) == "z-counter"
    assert stores.state.debit("h2", [full_b, ok, full_a], now=1000) == "a-counter"
    assert stores.state.usage("m-counter", 60, now=1000) == 0


def test_a_limit_is_reachable_exactly(stores: Stores) -> None:
    d = Debit("budget/exact", 25, 100, 3600)
    assert [stores.state.debit(f"h{i}", [d], now=1000) for i in range(5)] == [None] * 4 + ["budget/exact"]
    assert stores.state.usage("budget/exact", 3600, now=1000) == 100
    assert stores.state.debit("zero", [Debit("budget/exact", 0, 100, 3600)], now=1000) is None


def test_a_retried_hold_charges_once(stores: Stores) -> None:
    assert stores.state.debit("h1", [BUDGET], now=1000) is None
    assert stores.state.debit("h1", [BUDGET], now=1000) is None
    assert stores.state.usage(BUDGET.key, 86400, now=1000) == 60


def test_a_hold_id_reused_for_other_debits_is_refused(stores: Stores) -> None:
    assert stores.state.debit("h1", [BUDGET], now=1000) is None
    with pytest.raises(StoreUnavailable, match="reused"):
        stores.state.debit("h1", [RATE], now=1000)
    assert stores.state.usage(RATE.key, 60, now=1000) == 0
    assert stores.state.usage(BUDGET.key, 86400, now=1000) == 60


def test_a_refused_hold_can_be_retried(stores: Stores) -> None:
    big = Debit("budget/r", 80, 100, 86400)
    assert stores.state.debit("h1", [big], now=1000) is None
    assert stores.state.debit("h2", [big], now=1000) == "budget/r"
    stores.state.refund("h1")
    assert stores.state.debit("h2", [big], now=1000) is None  # nothing was recorded for h2 the first time
    assert stores.state.usage("budget/r", 86400, now=1000) == 80


def test_refund_is_idempotent_and_unknown_ids_are_ignored(stores: Stores) -> None:
    stores.state.debit("h1", [BUDGET, RATE], now=1000)
    stores.state.debit("h2", [RATE], now=1000)
    stores.state.refund("h1")
    stores.state.refund("h1")
    stores.state.refund("never-existed")
    assert stores.state.usage(BUDGET.key, 86400, now=1000) == 0
    assert stores.state.usage(RATE.key, 60, now=1000) == 1  # h2 still stands


def test_windows_roll_over(stores: Stores) -> None:
    stores.state.debit("h1", [RATE], now=1000)
    stores.state.debit("h2", [RATE], now=1001)
    assert stores.state.debit("h3", [RATE], now=1019) == RATE.key
    assert stores.state.debit("h4", [RATE], now=1020) is None  # 1020 starts a new 60 s window
    assert stores.state.usage(RATE.key, 60, now=1020) == 1


def test_ended_windows_are_forgotten(backend: Backend, stores: Stores) -> None:
    base = int(time.time())
    short = Debit("rate/short", 1, 100, 1)
    for i in range(20):
        assert stores.state.debit(f"short-{i}", [short], now=base) is None
    assert backend.live_state(stores) == 21  # one counter, twenty holds
    backend.let_time_pass(2.2)
    later = base + 61  # past every backend's purge interval
    assert stores.state.debit("late", [Debit("rate/late", 1, 100, 3600)], now=later) is None
    assert backend.live_state(stores) == 2  # the late counter and its hold
    stores.state.refund("short-0")  # its window ended: nothing comes back to life
    assert stores.state.usage("rate/short", 1, now=base) == 0


def test_threads_never_overspend(stores: Stores) -> None:
    wins = [0] * 8
    d = Debit("budget/x", 7, 1000, 86400)

    def work(k: int) -> None:
        for i in range(25):
            wins[k] += stores.state.debit(f"h-{k}-{i}", [d], now=1000) is None

    race(8, work)
    assert sum(wins) == 1000 // 7
    assert stores.state.usage("budget/x", 86400, now=1000) == 7 * (1000 // 7)


def test_state_survives_a_client_restart(shared_backend: Backend) -> None:
    stores = shared_backend.open()
    assert stores.state.debit("h1", [BUDGET], now=1000) is None
    stores.close()
    again = shared_backend.open()
    assert again.state.usage(BUDGET.key, 86400, now=1000) == 60
    assert again.state.debit("h1", [BUDGET], now=1000) is None  # the hold is remembered: no second charge
    assert again.state.usage(BUDGET.key, 86400, now=1000) == 60
    again.state.refund("h1")
    assert again.state.usage(BUDGET.key, 86400, now=1000) == 0
