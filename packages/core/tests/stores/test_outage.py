"""Outages: refused, silent, stopped, killed (also mid-transaction) and frozen servers.

Every store call ends in ``StoreUnavailable`` (never another exception, never a
hang past the timeout); a guard on a failing store denies with
``STORE_UNAVAILABLE`` and never calls the tool; when the server is back, service
resumes without repair and no consumed id comes back to life.

These tests start their own throwaway servers (see ``_servers.py``) on free
loopback ports and never touch the shared ones.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from execauth_core import (
    AllowListPolicy,
    Authority,
    ExecutionDenied,
    Guard,
    KeySet,
    LocalSigner,
    StoreUnavailable,
    TokenVerifier,
    verify_chain,
)
from execauth_core.stores import Debit, MemoryAuditLog
from execauth_core.stores.urls import Stores, open_stores

from ..conftest import Tool
from ..court_fixtures import make
from ._servers import PostgresServer, RedisServer, silent_server
from .conftest import unavailable, with_query

TIMEOUT = 1.0
# libpq never waits less than 2 s for a connection; operations on an open
# connection honour TIMEOUT. The slack covers scheduling on a busy 2-core machine.
CONNECT_BOUND = {"redis": TIMEOUT + 1.0, "postgres": 2.0 + 1.0}
CALL_BOUND = TIMEOUT + 1.0
Server = Any  # RedisServer | PostgresServer


def _available(kind: str) -> None:
    try:
        __import__("redis" if kind == "redis" else "psycopg")
    except ImportError:
        unavailable(f"the {kind} client is not installed: pip install 'execauth-core[{kind}]'")
    if kind == "redis" and RedisServer.binary is None:
        unavailable("redis-server is not on PATH: cannot start a throwaway Redis")
    if kind == "postgres" and PostgresServer.bin is None:
        unavailable("no initdb/pg_ctl (looked in /usr/lib/postgresql/*/bin and PATH)")
    if kind == "postgres" and os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root, and there is no 'postgres' user to run initdb/pg_ctl as")


@pytest.fixture(scope="module", params=[pytest.param("redis", marks=pytest.mark.redis), "postgres"])
def own_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    kind = request.param
    _available(kind)
    srv = RedisServer() if kind == "redis" else PostgresServer()
    srv.kind = kind
    try:
        srv.start()
        yield srv
    finally:
        srv.destroy()


@pytest.fixture
def server(own_server: Server) -> Server:
    own_server.resume()
    if not own_server.running:
        own_server.start()
    return own_server


def namespaced(kind: str, url: str) -> str:
    ns = secrets.token_hex(5)
    return with_query(url, prefix=f"t{ns}:") if kind == "redis" else with_query(url, schema=f"t{ns}")


@pytest.fixture
def stores(server: Server) -> Iterator[Stores]:
    s = open_stores(namespaced(server.kind, server.url), timeout=TIMEOUT)
    yield s
    s.close()


def every_call(stores: Stores) -> dict[str, Callable[[], object]]:
    now = int(time.time())
    return {
        "consume": lambda: stores.replay.consume(secrets.token_hex(8), expires_at=now + 60, now=now),
        "append": lambda: stores.audit.append({"event": "denial", "executed": False, "time": now}),
        "head": lambda: stores.audit.head(),
        "entries": lambda: list(stores.audit.entries()),
        "debit": lambda: stores.state.debit(secrets.token_hex(8), [Debit("budget/o", 1, 10, 60)], now=now),
        "refund": lambda: stores.state.refund("some-hold"),
        "usage": lambda: stores.state.usage("budget/o", 60, now=now),
    }


def timed_failure(call: Callable[[], object]) -> float:
    t = time.monotonic()
    with pytest.raises(StoreUnavailable):
        call()
    return time.monotonic() - t


def assert_all_fail(kind: str, what: str, stores: Stores, bound: float) -> None:
    took = {name: timed_failure(call) for name, call in every_call(stores).items()}
    print(f"\n[outage {kind}] {what}: StoreUnavailable after " + ", ".join(f"{k} {v:.2f}s" for k, v in took.items()))
    assert max(took.values()) <= bound, took


# -- nothing there / nothing answering ------------------------------------------------


@pytest.mark.parametrize("kind", [pytest.param("redis", marks=pytest.mark.redis), "postgres"])
def test_connection_refused(kind: str) -> None:
    _available(kind)
    from ._servers import free_port

    url = f"redis://127.0.0.1:{free_port()}/0" if kind == "redis" else f"postgresql://x@127.0.0.1:{free_port()}/x"
    stores = open_stores(url, timeout=TIMEOUT)
    assert_all_fail(kind, "connection refused", stores, CONNECT_BOUND[kind])


@pytest.mark.parametrize("kind", [pytest.param("redis", marks=pytest.mark.redis), "postgres"])
def test_a_server_that_accepts_and_never_answers(kind: str) -> None:
    _available(kind)
    with silent_server() as port:
        url = f"redis://127.0.0.1:{port}/0" if kind == "redis" else f"postgresql://x@127.0.0.1:{port}/x"
        stores = open_stores(url, timeout=TIMEOUT)
        took = timed_failure(every_call(stores)["consume"])
        took_append = timed_failure(every_call(stores)["append"])
    print(f"\n[outage {kind}] silent server: StoreUnavailable after {took:.2f}s / {took_append:.2f}s")
    assert took <= CONNECT_BOUND[kind] and took_append <= CONNECT_BOUND[kind]
    assert took >= TIMEOUT * 0.8  # it really waited for the timeout, rather than failing for another reason


# -- a real server going away and coming back ---------------------------------------------


def test_stopped_server_fails_closed_and_resumes(server: Server, stores: Stores) -> None:
    now = int(time.time())
    assert stores.replay.consume("before-stop", expires_at=now + 600, now=now)
    stores.audit.append({"event": "decision", "executed": False, "time": now})
    assert stores.state.debit("hold-1", [Debit("budget/s", 4, 10, 3600)], now=now) is None
    server.stop()
    assert_all_fail(server.kind, "server stopped", stores, CONNECT_BOUND[server.kind])
    server.start()
    # Back without repair; the consumed id is still consumed.
    assert stores.replay.consume("before-stop", expires_at=now + 600, now=now) is False
    assert stores.replay.consume("after-start", expires_at=now + 600, now=now) is True
    stores.audit.append({"event": "decision", "executed": False, "time": now})
    assert verify_chain(stores.audit.entries(), expected_head=stores.audit.head())[0] >= 2
    assert stores.state.debit("hold-1", [Debit("budget/s", 4, 10, 3600)], now=now) is None  # charged once
    assert stores.state.usage("budget/s", 3600, now=now) == 4


def test_frozen_server_times_out_then_resumes(server: Server, stores: Stores) -> None:
    now = int(time.time())
    assert stores.replay.consume("warm-up", expires_at=now + 600, now=now)  # an open, pooled connection
    server.pause()
    try:
        took = timed_failure(lambda: stores.replay.consume("while-frozen", expires_at=now + 600, now=now))
        took_debit = timed_failure(lambda: stores.state.debit("h", [Debit("b", 1, 5, 60)], now=now))
    finally:
        server.resume()
    print(f"\n[outage {server.kind}] frozen server (SIGSTOP): StoreUnavailable after {took:.2f}s / {took_debit:.2f}s")
    assert took <= CALL_BOUND and took_debit <= CONNECT_BOUND[server.kind]
    assert stores.replay.consume("after-thaw", expires_at=now + 600, now=now) is True
    # The frozen call's outcome was unknown to the client; whatever it was, it cannot be used twice.
    assert stores.replay.consume("while-frozen", expires_at=now + 600, now=now) in (True, False)
    assert stores.replay.consume("while-frozen", expires_at=now + 600, now=now) is False


def test_killed_under_load_resurrects_nothing(server: Server, stores: Stores) -> None:
    now = int(time.time())
    outcomes: list[tuple[str, bool | None]] = []
    appended: list[Any] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            tid = f"load-{i:06d}"
            i += 1
            try:
                outcomes.append((tid, stores.replay.consume(tid, expires_at=now + 600, now=now)))
                appended.append(stores.audit.append({"event": "decision", "executed": False, "time": now, "i": i}))
            except StoreUnavailable:
                outcomes.append((tid, None))
                time.sleep(0.02)
            except BaseException as exc:  # any other type is a failure of the test
                errors.append(exc)
                return

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(0.7)
        server.kill()  # SIGKILL (Redis) / immediate shutdown, no checkpoint (PostgreSQL)
        time.sleep(0.5)
        server.start()
        time.sleep(0.7)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not errors, errors
    consumed = [tid for tid, ok in outcomes if ok is True]
    unknown = [tid for tid, ok in outcomes if ok is None]
    after_restart = [tid for tid, ok in outcomes[len(outcomes) // 2 :] if ok is True]
    resurrected = [tid for tid in consumed if stores.replay.consume(tid, expires_at=now + 600, now=now)]
    lost = [e for e in appended if e.seq > stores.audit.head()[0]]
    print(
        f"\n[outage {server.kind}] killed under load: {len(consumed)} consumed, {len(unknown)} StoreUnavailable, "
        f"{len(resurrected)} resurrected after restart; {len(appended)} appends acknowledged, {len(lost)} lost"
    )
    assert consumed and unknown and after_restart  # it ran before, during and after the outage
    assert resurrected == []
    assert lost == []
    entries = {e.seq: e.digest for e in stores.audit.entries()}
    assert all(entries[e.seq] == e.digest for e in appended)
    assert verify_chain(stores.audit.entries(), expected_head=stores.audit.head())[0] == len(entries)


# Redis runs each operation as one script, so nothing is ever half-done there; its
# mid-operation kill is SIGKILL under load (test_killed_under_load_resurrects_nothing).
@pytest.mark.parametrize("own_server", ["postgres"], indirect=True)
def test_postgres_backend_killed_mid_transaction(server: Server, stores: Stores) -> None:
    import psycopg

    now = int(time.time())
    stores.audit.append({"event": "decision", "executed": False, "time": now})
    assert stores.state.debit("first", [Debit("budget/k", 2, 10, 3600)], now=now) is None
    schema = stores.replay._db.schema  # type: ignore[attr-defined]
    with psycopg.connect(server.url, autocommit=True) as admin, psycopg.connect(server.url) as blocker:
        # Another session holds the head row and the counter row, so our operations
        # stop inside their transactions; then their backends are killed.
        blocker.execute(f'SELECT 1 FROM "{schema}".audit_head FOR UPDATE')
        blocker.execute(f'SELECT 1 FROM "{schema}".state_counters FOR UPDATE')
        results: dict[str, object] = {}

        def attempt(name: str, call: Callable[[], object]) -> None:
            try:
                results[name] = call()
            except BaseException as exc:  # recorded and checked below
                results[name] = exc

        threads = [
            threading.Thread(
                target=attempt,
                args=("append", lambda: stores.audit.append({"event": "denial", "executed": False, "time": now})),
            ),
            threading.Thread(
                target=attempt,
                args=("debit", lambda: stores.state.debit("second", [Debit("budget/k", 3, 10, 3600)], now=now)),
            ),
        ]
        for t in threads:
            t.start()
        killed = 0
        deadline = time.monotonic() + TIMEOUT * 0.7
        while killed < 2 and time.monotonic() < deadline:
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'execauth' AND wait_event_type = 'Lock'"
            ).fetchall()
            killed += len(rows)
            time.sleep(0.02)
        for t in threads:
            t.join(timeout=10)
        blocker.rollback()
    print(f"\n[outage postgres] killed mid-transaction: {killed} backends terminated -> {results}")
    assert killed >= 2
    assert isinstance(results["append"], StoreUnavailable) and isinstance(results["debit"], StoreUnavailable)
    # Nothing half-written: the chain holds, the debit left nothing behind, and both work again.
    assert verify_chain(stores.audit.entries(), expected_head=stores.audit.head())[0] == 1
    assert stores.state.usage("budget/k", 3600, now=now) == 2
    assert stores.state.debit("second", [Debit("budget/k", 3, 10, 3600)], now=now) is None
    assert stores.state.usage("budget/k", 3600, now=now) == 5
    stores.audit.append({"event": "denial", "executed": False, "time": now})
    assert verify_chain(stores.audit.entries(), expected_head=stores.audit.head())[0] == 2


@pytest.mark.parametrize("own_server", ["postgres"], indirect=True)
def test_postgres_a_call_that_gave_up_never_commits_later(server: Server, stores: Stores) -> None:
    """A retry on a fresh session, still waiting for a lock when the caller's deadline
    passes, must end on the server too: else it commits after its caller was told
    ``StoreUnavailable`` (seen in CI: an append reported failed, then present)."""
    import psycopg

    now = int(time.time())
    stores.audit.append({"event": "decision", "executed": False, "time": now})
    schema = stores.audit._db.schema  # type: ignore[attr-defined]
    with psycopg.connect(server.url, autocommit=True) as admin, psycopg.connect(server.url) as blocker:
        blocker.execute(f'SELECT 1 FROM "{schema}".audit_head FOR UPDATE')
        outcome: list[object] = []

        def append() -> None:
            try:
                outcome.append(stores.audit.append({"event": "denial", "executed": False, "time": now}))
            except StoreUnavailable as exc:
                outcome.append(exc)

        thread = threading.Thread(target=append)
        started = time.monotonic()
        thread.start()
        # Kill the pooled session once it waits for the lock, late in the call: the
        # retry on a fresh session then has much less than the full timeout left.
        waiting = "SELECT pid FROM pg_stat_activity WHERE application_name = 'execauth' AND wait_event_type = 'Lock'"
        while not admin.execute(waiting).fetchall():
            assert time.monotonic() - started < TIMEOUT, "the append never waited for the lock"
            time.sleep(0.01)
        time.sleep(max(0.0, started + TIMEOUT * 0.4 - time.monotonic()))
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'execauth' AND wait_event_type = 'Lock'"
        ).fetchall()
        thread.join(timeout=10)
        took = time.monotonic() - started
        # The caller has given up; now the lock comes free.
        blocker.rollback()
        time.sleep(TIMEOUT)
        print(f"\n[outage postgres] retry past the deadline: killed {len(killed)}, {outcome} after {took:.2f}s")
    assert len(killed) == 1
    assert len(outcome) == 1 and isinstance(outcome[0], StoreUnavailable)
    assert took <= CALL_BOUND
    # Only the first entry: the abandoned retry did not commit when the lock came free.
    assert stores.audit.head()[0] == 1
    assert verify_chain(stores.audit.entries(), expected_head=stores.audit.head())[0] == 1


# -- through a real Guard ----------------------------------------------------------------


def guard_on(replay: Any, audit: Any) -> Guard:
    signer = LocalSigner.generate()
    authority = Authority(AllowListPolicy(["search"]), signer, issuer="iss", audience="aud")
    verifier = TokenVerifier(keys=KeySet.of_signer(signer), issuer="iss", audience="aud", max_ttl=60)
    return Guard(authority=authority, verifier=verifier, replay_store=replay, audit_log=audit)


def test_guard_denies_on_a_replay_store_outage_and_resumes(server: Server, stores: Stores) -> None:
    audit = MemoryAuditLog()
    guard, tool = guard_on(stores.replay, audit), Tool()
    used = guard.proposal("search", {"q": "before"}, principal="u")
    token = guard.authorize(used).token
    assert guard.execute(used, token, lambda: tool(**used.args)) == "done"
    server.stop()
    req = guard.proposal("search", {"q": "during"}, principal="u")
    t = time.monotonic()
    with pytest.raises(ExecutionDenied) as denied:
        guard.run(req, lambda: tool(**req.args))
    took = time.monotonic() - t
    assert denied.value.reason_codes == ("STORE_UNAVAILABLE",)
    assert len(tool.calls) == 1  # only the call before the outage
    last = list(audit.entries())[-1]
    assert (last.event, last.executed, last.body["reason_codes"]) == ("denial", False, ["STORE_UNAVAILABLE"])
    assert denied.value.audit_seq == last.seq
    server.start()
    assert guard.run(req, lambda: tool(**req.args)) == "done"
    with pytest.raises(ExecutionDenied) as replayed:  # consumed before the outage, still consumed
        guard.execute(used, token, lambda: tool(**used.args))
    assert replayed.value.reason_codes == ("TOKEN_REPLAYED",)
    assert len(tool.calls) == 2
    print(f"\n[outage {server.kind}] guard with its replay store down: denied STORE_UNAVAILABLE in {took:.2f}s")


def test_guard_with_every_store_down_still_denies(server: Server, stores: Stores) -> None:
    guard, tool = guard_on(stores.replay, stores.audit), Tool()
    server.stop()
    req = guard.proposal("search", {"q": "x"}, principal="u")
    with pytest.raises(ExecutionDenied) as denied:
        guard.run(req, lambda: tool(**req.args))
    # The denial could not be recorded in the log that is down: the exception says so.
    assert denied.value.reason_codes == ("STORE_UNAVAILABLE", "AUDIT_UNAVAILABLE")
    assert denied.value.audit_seq is None
    assert tool.calls == []
    server.start()
    assert guard.run(req, lambda: tool(**req.args)) == "done"
    assert [e.event for e in stores.audit.entries()] == ["execution", "result"]


def test_court_denies_on_a_state_store_outage(server: Server, stores: Stores) -> None:
    guard, _, clock = make(state=stores.state)
    tool = Tool()
    args = {"order": "A-1", "amount": "150.00", "currency": "USD"}
    req = guard.proposal("refund", args, principal="user-42", agent="billing-bot")
    assert guard.run(req, lambda: tool(**req.args)) == "done"
    server.stop()
    with pytest.raises(ExecutionDenied) as denied:
        guard.run(req, lambda: tool(**req.args))
    assert denied.value.reason_codes == ("STORE_UNAVAILABLE",)
    assert len(tool.calls) == 1
    assert list(guard.audit_log.entries())[-1].body["reason_codes"] == ["STORE_UNAVAILABLE"]
    server.start()
    assert guard.run(req, lambda: tool(**req.args)) == "done"
    # The budget counts the two calls that ran, not the denied one.
    assert stores.state.usage("budget/user-42/USD/86400", 86400, now=clock.now()) == 2 * 15000
