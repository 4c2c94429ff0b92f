"""The effect ledger's contract: every backend (memory, SQLite, Redis, PostgreSQL)
gives the same answers, and one key is taken by exactly one of many racers."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from execauth_core import FixedClock
from execauth_core.audit import verify_chain
from execauth_core.ledger import Ledger, LedgerEntry, LedgerRefusal, LedgerStore, idempotency_key, open_ledger

from .conftest import Backend

T0 = 1_767_225_600
PD = "sha256:" + "ab" * 32
OTHER_PD = "sha256:" + "cd" * 32


@pytest.fixture
def store(backend: Backend) -> Any:
    opened = open_ledger(backend.url)
    try:
        yield opened
    finally:
        opened.close()


def ledger(store: LedgerStore, clock: FixedClock | None = None, **kw: Any) -> Ledger:
    return Ledger(store, clock=clock or FixedClock(T0), **kw)


def begin(led: Ledger, key: str, token: str, pd: str = PD) -> LedgerEntry:
    return led.begin(key, proposal_digest=pd, token_id=token, tool="transfer", call_id="c1")


def refusal(led: Ledger, key: str, token: str, pd: str = PD) -> str:
    with pytest.raises(LedgerRefusal) as info:
        begin(led, key, token, pd)
    return str(info.value.code.value)


def test_default_key_is_derived_from_run_call_and_digest() -> None:
    k = idempotency_key("thread-1", "call_1", PD)
    assert k == idempotency_key("thread-1", "call_1", PD) and k.startswith("ik_") and len(k) == 67
    assert len({k, idempotency_key("thread-2", "call_1", PD), idempotency_key("thread-1", "call_2", PD)}) == 3
    assert k != idempotency_key("thread-1", "call_1", OTHER_PD) != idempotency_key(None, "call_1", PD)


def test_begin_finish_and_a_repeat_returns_the_recorded_result(store: LedgerStore) -> None:
    led = ledger(store)
    entry = begin(led, "k1", "tok-1")
    assert entry.state == "started" and entry.token_id == "tok-1"
    led.finish(entry, ok=True, result={"refund": "r-17", "amount": "25.00"})
    with pytest.raises(LedgerRefusal) as info:
        begin(led, "k1", "tok-2")
    done = info.value.entry
    assert info.value.code.value == "LEDGER_ALREADY_SUCCEEDED"
    assert (done.state, done.status, done.has_result) == ("succeeded", "ok", True)
    assert done.result == {"refund": "r-17", "amount": "25.00"} and done.result_digest.startswith("sha256:")
    assert done.started_at == T0 and done.finished_at == T0
    # A fresh client of the same backend reads the same truth.
    assert store.get("k1") == done


def test_in_flight_failed_and_conflicting_attempts_are_refused(store: LedgerStore) -> None:
    led = ledger(store)
    running = begin(led, "k-run", "tok-1")
    assert refusal(led, "k-run", "tok-2") == "LEDGER_IN_FLIGHT"
    assert refusal(led, "k-run", "tok-1") == "TOKEN_REPLAYED"
    assert refusal(led, "k-run", "tok-3", OTHER_PD) == "LEDGER_KEY_CONFLICT"
    led.finish(running, ok=False, error=RuntimeError("bank said 502"))
    assert refusal(led, "k-run", "tok-4") == "LEDGER_ALREADY_FAILED"
    failed = store.get("k-run")
    assert failed is not None and (failed.state, failed.error, failed.has_result) == ("failed", "RuntimeError", False)


def test_retry_failed_takes_a_failed_key_over_once(store: LedgerStore) -> None:
    led = ledger(store, retry_failed=True)
    led.finish(begin(led, "k", "tok-1"), ok=False)
    again = begin(led, "k", "tok-2")
    assert (again.state, again.attempts, again.token_id) == ("started", 2, "tok-2")
    assert refusal(led, "k", "tok-3") == "LEDGER_IN_FLIGHT"


def test_a_started_entry_past_its_lease_is_unknown_and_never_runs_again(backend: Backend, store: LedgerStore) -> None:
    clock = FixedClock(T0)
    audit = backend.open().audit
    led = Ledger(store, clock=clock, lease=30, audit_log=audit)
    begin(led, "k-crash", "tok-1")  # ... and the process dies before finish()
    clock.advance(31)
    assert refusal(led, "k-crash", "tok-2") == "LEDGER_OUTCOME_UNKNOWN"
    assert [e.key for e in led.list("unknown")] == ["k-crash"]
    assert led.get("k-crash").state == "unknown"  # type: ignore[union-attr]
    assert [e.key for e in led.list("unknown")] == ["k-crash"]  # now stored as unknown, still listed once
    resolved = led.resolve("k-crash", succeeded=True, by="carol", note="bank shows the transfer")
    assert (resolved.state, resolved.status, resolved.resolved_by) == ("succeeded", "resolved", "carol")
    assert led.list("unknown") == []
    assert refusal(led, "k-crash", "tok-3") == "LEDGER_ALREADY_SUCCEEDED"
    last = list(audit.entries())[-1]
    assert last.event == "ledger" and last.body["reason_codes"] == ["LEDGER_RESOLVED"]
    assert last.body["detail"] == {
        "idempotency_key": "k-crash",
        "from": "unknown",
        "to": "succeeded",
        "by": "carol",
        "note": "bank shows the transfer",
    }
    verify_chain(audit.entries())


def test_a_late_outcome_is_still_recorded_after_the_entry_read_as_unknown(store: LedgerStore) -> None:
    clock = FixedClock(T0)
    led = ledger(store, clock, lease=5)
    entry = begin(led, "k-slow", "tok-1")
    clock.advance(10)
    assert led.get("k-slow").state == "unknown"  # type: ignore[union-attr]
    led.finish(entry, ok=True, result="done")
    got = store.get("k-slow")
    assert got is not None and (got.state, got.result) == ("succeeded", "done")


def test_resolve_refuses_entries_in_flight_or_done(store: LedgerStore) -> None:
    from execauth_core import ConfigurationError

    led = ledger(store)
    entry = begin(led, "k", "tok-1")
    with pytest.raises(ConfigurationError, match="wait for its lease"):
        led.resolve("k", succeeded=False, by="carol")
    led.finish(entry, ok=True)
    with pytest.raises(ConfigurationError, match="succeeded"):
        led.resolve("k", succeeded=False, by="carol")
    with pytest.raises(KeyError):
        led.resolve("nope", succeeded=False, by="carol")


def test_release_frees_the_key_and_list_orders_newest_first(store: LedgerStore) -> None:
    clock = FixedClock(T0)
    led = ledger(store, clock)
    led.release(begin(led, "k-a", "tok-1"))
    assert store.get("k-a") is None
    for i in range(3):
        clock.advance(1)
        led.finish(begin(led, f"k-{i}", f"tok-{i + 2}"), ok=True)
    assert [e.key for e in led.list()] == ["k-2", "k-1", "k-0"]
    assert [e.key for e in led.list("succeeded", limit=2)] == ["k-2", "k-1"]


def test_racers_on_one_key_give_one_holder(store: LedgerStore) -> None:
    led = ledger(store)
    barrier = threading.Barrier(8)
    won: list[str] = []
    codes: list[str] = []

    def attempt(n: int) -> None:
        barrier.wait()
        try:
            begin(led, "k-race", f"tok-{n}")
            won.append(f"tok-{n}")
        except LedgerRefusal as exc:
            codes.append(exc.code.value)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and codes == ["LEDGER_IN_FLIGHT"] * 7


def test_entries_survive_a_new_client(shared_backend: Backend) -> None:
    backend = shared_backend
    first = open_ledger(backend.url)
    ledger(first).finish(begin(ledger(first), "k-durable", "tok-1"), ok=True, result=[1, 2])
    first.close()
    second = open_ledger(backend.url)
    try:
        got = second.get("k-durable")
        assert got is not None and (got.state, got.result) == ("succeeded", [1, 2])
    finally:
        second.close()
