"""Joint admission: consume token ids and append the execution record in one atomic
store call (Redis script, PostgreSQL statement, SQLite transaction), all or nothing.

The guard uses it whenever the replay store offers it for its audit log; memory
stores and mixed backends fall back to consume-then-append.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from execauth_core import (
    AllowListPolicy,
    ApprovalRequired,
    Authority,
    ConfigurationError,
    ExecutionDenied,
    Guard,
    KeySet,
    LocalSigner,
    TokenVerifier,
    verify_chain,
)
from execauth_core.audit import AuditEntry, body_template
from execauth_core.stores.urls import Stores, open_stores
from execauth_core.tokens import MAX_CLOCK_SKEW

from .conftest import BACKENDS, Backend, _param, make_backend, require
from .test_lost_replies import lose_next_reply
from .test_torture import PRELUDE, race_processes

JOINT_BACKENDS = [n for n in BACKENDS if n != "memory"]
NOW = 1_767_225_600


def execution(token_id: str, **extra: Any) -> dict[str, Any]:
    return {"event": "execution", "executed": True, "time": NOW, "token_id": token_id, **extra}


@pytest.fixture(params=[_param(n) for n in JOINT_BACKENDS])
def joint_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    b = make_backend(request.param, tmp_path)
    try:
        yield b
    finally:
        b.close()


def joint_of(stores: Stores) -> Any:
    joint = stores.replay.joint_with(stores.audit)  # type: ignore[attr-defined]
    assert joint is not None, "open_stores pairs the replay store with its audit log"
    return joint


def test_fresh_ids_are_consumed_and_recorded_together(joint_backend: Backend) -> None:
    stores = joint_backend.open()
    joint = joint_of(stores)
    first = joint.consume_and_append([("tok-1", NOW + 60)], execution("tok-1"), now=NOW)
    both = joint.consume_and_append([("tok-2", NOW + 60), ("approval:g-1", NOW + 900)], execution("tok-2"), now=NOW)
    assert isinstance(first, AuditEntry) and isinstance(both, AuditEntry)
    assert (first.seq, both.seq) == (1, 2)
    assert both.body["token_id"] == "tok-2" and both.body["prev"] == first.digest
    entries = list(stores.audit.entries())
    assert [e.digest for e in entries] == [first.digest, both.digest]
    assert verify_chain(entries, expected_head=stores.audit.head())[0] == 2
    # Consumed for every other path too.
    for token_id in ("tok-1", "tok-2", "approval:g-1"):
        assert stores.replay.consume(token_id, expires_at=NOW + 60, now=NOW) is False


def test_a_spent_id_refuses_the_whole_step(joint_backend: Backend) -> None:
    stores = joint_backend.open()
    joint = joint_of(stores)
    assert stores.replay.consume("used", expires_at=NOW + 60, now=NOW)
    stores.audit.append({"event": "decision", "executed": False, "time": NOW})
    head = stores.audit.head()
    # The spent id is named, in the order given; the fresh one beside it is not consumed.
    assert joint.consume_and_append([("fresh", NOW + 60), ("used", NOW + 60)], execution("x"), now=NOW) == "used"
    assert joint.consume_and_append([("used", NOW + 60), ("fresh", NOW + 60)], execution("x"), now=NOW) == "used"
    assert stores.audit.head() == head
    assert stores.replay.consume("fresh", expires_at=NOW + 60, now=NOW) is True
    # The log goes on from where it was.
    after = joint.consume_and_append([("later", NOW + 60)], execution("later"), now=NOW)
    assert isinstance(after, AuditEntry) and after.seq == head[0] + 1
    assert verify_chain(stores.audit.entries(), expected_head=stores.audit.head())[0] == head[0] + 1


def test_a_malformed_event_consumes_nothing(joint_backend: Backend) -> None:
    stores = joint_backend.open()
    joint = joint_of(stores)
    with pytest.raises(ValueError):
        joint.consume_and_append([("tok", NOW + 60)], {"event": "execution", "time": NOW}, now=NOW)
    with pytest.raises(ValueError):
        joint.consume_and_append([], execution("tok"), now=NOW)
    assert stores.audit.head()[0] == 0
    assert stores.replay.consume("tok", expires_at=NOW + 60, now=NOW) is True


def test_threads_race_for_the_same_ids(joint_backend: Backend) -> None:
    stores = joint_backend.open()
    joint = joint_of(stores)
    wins: list[list[str]] = [[] for _ in range(6)]
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def work(k: int) -> None:
        barrier.wait()
        try:
            for i in range(60):
                token_id = f"race-{i:03d}"
                out = joint.consume_and_append([(token_id, NOW + 60)], execution(token_id, by=k), now=NOW)
                if isinstance(out, AuditEntry):
                    wins[k].append(token_id)
                else:
                    assert out == token_id
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    won = sorted(t for per in wins for t in per)
    assert won == [f"race-{i:03d}" for i in range(60)]  # each id exactly once
    entries = list(stores.audit.entries())
    assert verify_chain(entries, expected_head=stores.audit.head())[0] == 60
    assert sorted(e.body["token_id"] for e in entries) == won


JOINT_RACE = (
    PRELUDE
    + """
joint = stores.replay.joint_with(stores.audit)
won = []
for i in range(n):
    tid = f"joint-{i:06d}"
    event = {"event": "execution", "executed": True, "time": now, "token_id": tid, "writer": tag}
    out = joint.consume_and_append([(tid, now + 600)], event, now=now)
    if isinstance(out, str):
        assert out == tid, out
    else:
        won.append(i)
print(json.dumps(won))
"""
)
JOINT_IDS = 2500  # 4 processes x 2,500 = 10,000 contested attempts


def test_processes_race_joint_admissions(joint_backend: Backend) -> None:
    now = int(time.time())
    t0 = time.perf_counter()
    won = race_processes(JOINT_RACE, joint_backend.url, JOINT_IDS, now)
    took = time.perf_counter() - t0
    winners: dict[int, int] = {}
    for per in won:
        for i in per:
            winners[i] = winners.get(i, 0) + 1
    doubles = sum(1 for c in winners.values() if c > 1)
    log = joint_backend.open().audit
    entries = list(log.entries())
    seq, _ = verify_chain(entries, expected_head=log.head())
    recorded = sorted(int(e.body["token_id"].rsplit("-", 1)[1]) for e in entries)
    print(
        f"\n[torture {joint_backend.name}] joint consume+append: {JOINT_IDS * len(won)} contested attempts by "
        f"{len(won)} processes -> {sum(map(len, won))} won, {doubles} double, chain of {seq} "
        f"({took:.1f} s)"
    )
    assert doubles == 0
    assert sorted(winners) == list(range(JOINT_IDS))
    # One entry per win, none for a refusal.
    assert seq == JOINT_IDS and recorded == list(range(JOINT_IDS))
    by_writer = {f"p{k}": sorted(winners_of(entries, f"p{k}")) for k in range(len(won))}
    assert by_writer == {f"p{k}": sorted(per) for k, per in enumerate(won)}


def winners_of(entries: list[AuditEntry], writer: str) -> list[int]:
    return [int(e.body["token_id"].rsplit("-", 1)[1]) for e in entries if e.body["writer"] == writer]


# -- lost replies ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", [pytest.param("redis", marks=pytest.mark.redis), "postgres"])
def test_a_joint_step_whose_reply_was_lost_is_its_own(kind: str, tmp_path: Path) -> None:
    backend = make_backend(kind, tmp_path)
    try:
        stores = backend.open()
        stores.audit.append({"event": "decision", "executed": False, "time": NOW})  # warm, pooled
        joint = joint_of(stores)
        lost = lose_next_reply(backend, stores, redis_command="EVALSHA", pg_statement="unnest")
        out = joint.consume_and_append([("lost-1", NOW + 60)], execution("lost-1"), now=NOW)
        assert lost, "the reply was not dropped: the test would prove nothing"
        # The retry recognised the step that landed: its entry, once; the id consumed.
        assert isinstance(out, AuditEntry) and out.seq == 2 and out.body["token_id"] == "lost-1"
        entries = list(stores.audit.entries())
        assert verify_chain(entries, expected_head=stores.audit.head())[0] == 2
        assert [e.body.get("token_id") for e in entries] == [None, "lost-1"]
        assert stores.replay.consume("lost-1", expires_at=NOW + 60, now=NOW) is False
    finally:
        backend.close()


@pytest.mark.redis
def test_redis_recognises_its_own_step_after_other_writers_moved_on(tmp_path: Path) -> None:
    import redis

    backend = make_backend("redis", tmp_path)
    try:
        stores = backend.open()
        other = backend.open()  # another replica, its own client
        joint = joint_of(stores)
        client: Any = stores.replay._redis  # type: ignore[attr-defined]
        original = client.parse_response
        lost: list[str] = []

        def parse(connection: Any, command_name: str, **options: Any) -> Any:
            reply = original(connection, command_name, **options)
            if not lost and command_name == "EVALSHA":
                lost.append(command_name)
                # Before the client retries, another replica appends: the head moves on.
                other.audit.append({"event": "denial", "executed": False, "time": NOW})
                raise redis.ConnectionError("reply lost (injected)")
            return reply

        client.parse_response = parse
        out = joint.consume_and_append([("mine", NOW + 60)], execution("mine"), now=NOW)
        assert lost
        assert isinstance(out, AuditEntry) and out.seq == 1 and out.body["token_id"] == "mine"
        entries = list(stores.audit.entries())
        assert [e.body["event"] for e in entries] == ["execution", "denial"]
        assert entries[0].digest == out.digest
        assert verify_chain(entries, expected_head=stores.audit.head())[0] == 2
    finally:
        backend.close()


# -- pairing --------------------------------------------------------------------------


def test_only_stores_of_one_database_pair(tmp_path: Path) -> None:
    memory = open_stores("memory://")
    assert not hasattr(memory.replay, "joint_with")  # memory falls back: nothing to save
    one = open_stores(f"sqlite://{tmp_path}/a.db")
    again = open_stores(f"sqlite://{tmp_path}/./a.db")
    other = open_stores(f"sqlite://{tmp_path}/b.db")
    assert one.replay.joint_with(one.audit) is not None  # type: ignore[attr-defined]
    assert one.replay.joint_with(again.audit) is not None  # type: ignore[attr-defined]  # same file
    assert one.replay.joint_with(other.audit) is None  # type: ignore[attr-defined]
    assert one.replay.joint_with(memory.audit) is None  # type: ignore[attr-defined]
    from execauth_core.stores.sqlite import SQLiteAuditLog, SQLiteReplayStore

    assert SQLiteReplayStore(":memory:").joint_with(SQLiteAuditLog(":memory:")) is None
    # One file under other names (a link, a relative path) is one database.
    (tmp_path / "link.db").symlink_to(tmp_path / "a.db")
    assert one.replay.joint_with(SQLiteAuditLog(tmp_path / "link.db")) is not None  # type: ignore[attr-defined]
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        relative = SQLiteAuditLog("a.db")
        os.chdir(tmp_path.parent)  # the same string now names another file: still the one opened
        assert one.replay.joint_with(relative) is not None  # type: ignore[attr-defined]
        assert SQLiteReplayStore("a.db").joint_with(relative) is None
    finally:
        os.chdir(cwd)
    for s in (one, again, other):
        s.close()


@pytest.mark.parametrize("kind", [pytest.param("redis", marks=pytest.mark.redis), "postgres"])
def test_network_stores_pair_only_on_one_client(kind: str, tmp_path: Path) -> None:
    backend = make_backend(kind, tmp_path)
    try:
        a, b = backend.open(), backend.open()
        assert a.replay.joint_with(a.audit) is not None  # type: ignore[attr-defined]
        # Two clients may name two servers: never assume they are one database.
        assert a.replay.joint_with(b.audit) is None  # type: ignore[attr-defined]
        assert a.replay.joint_with(open_stores("memory://").audit) is None  # type: ignore[attr-defined]
    finally:
        backend.close()


# -- through the guard ----------------------------------------------------------------


def guard_on(stores: Stores) -> Guard:
    signer = LocalSigner.generate()
    authority = Authority(AllowListPolicy(["search"]), signer, issuer="iss", audience="aud")
    verifier = TokenVerifier(keys=KeySet.of_signer(signer), issuer="iss", audience="aud", max_ttl=60)
    return Guard(authority=authority, verifier=verifier, replay_store=stores.replay, audit_log=stores.audit)


class CountingJoint:
    def __init__(self, joint: Any) -> None:
        self.joint, self.calls = joint, 0

    def consume_and_append(self, ids: Any, event: Any, *, now: int) -> Any:
        self.calls += 1
        return self.joint.consume_and_append(ids, event, now=now)


@pytest.mark.parametrize("kind", [_param(n) for n in BACKENDS])
def test_the_guard_admits_through_the_joint_step(kind: str, tmp_path: Path) -> None:
    backend = make_backend(kind, tmp_path)
    try:
        stores = backend.open()
        guard = guard_on(stores)
        counting = None
        if kind != "memory":
            counting = CountingJoint(guard._joint_admission())
            guard._joint = (stores.replay, stores.audit, counting)
        ran: list[int] = []
        req = guard.proposal("search", {"q": "x"}, principal="u")
        decision = guard.authorize(req)
        assert guard.execute(req, decision.token, lambda: ran.append(1) or "ok") == "ok"
        with pytest.raises(ExecutionDenied) as replayed:
            guard.execute(req, decision.token, lambda: ran.append(2))
        assert replayed.value.reason_codes == ("TOKEN_REPLAYED",)
        assert ran == [1]
        if counting is not None:
            assert counting.calls == 2  # both admissions went through the joint step
        events = [(e.body["event"], e.body["executed"]) for e in stores.audit.entries()]
        assert events == [("decision", False), ("execution", True), ("result", True), ("denial", False)]
        assert verify_chain(stores.audit.entries(), expected_head=stores.audit.head())[0] == 4
    finally:
        backend.close()


@pytest.mark.parametrize("kind", [_param(n) for n in BACKENDS])
def test_one_approval_runs_once_through_the_joint_step(kind: str, tmp_path: Path) -> None:
    backend = make_backend(kind, tmp_path)
    try:
        stores = backend.open()
        signer = LocalSigner.generate()
        policy = AllowListPolicy(["transfer"], require_approval=["transfer"])
        guard = Guard(
            authority=Authority(policy, signer, issuer="iss", audience="aud"),
            verifier=TokenVerifier(keys=KeySet.of_signer(signer), issuer="iss", audience="aud", max_ttl=60),
            replay_store=stores.replay,
            audit_log=stores.audit,
        )
        assert (guard._joint_admission() is None) == (kind == "memory")
        req = guard.proposal("transfer", {"amount": "25.00", "to": "bob"}, principal="alice")
        ran: list[str] = []
        with pytest.raises(ApprovalRequired) as info:
            guard.run(req, lambda: ran.append("early"))
        grant = guard.approve(info.value.pending, approver="carol")
        guard.run(req, lambda: ran.append("approved"), approval=grant)
        with pytest.raises(ExecutionDenied) as again:
            guard.run(req, lambda: ran.append("again"), approval=grant)
        assert again.value.reason_codes == ("APPROVAL_USED",)
        assert ran == ["approved"]
        events = [(e.body["event"], e.body["executed"]) for e in stores.audit.entries()]
        assert events == [("denial", False), ("execution", True), ("result", True), ("denial", False)]
    finally:
        backend.close()


def test_the_guard_falls_back_for_mixed_stores(tmp_path: Path) -> None:
    a, b = open_stores(f"sqlite://{tmp_path}/a.db"), open_stores(f"sqlite://{tmp_path}/b.db")
    guard = guard_on(a)
    guard.audit_log = b.audit  # ids in one file, the log in another: no joint step
    assert guard._joint_admission() is None
    req = guard.proposal("search", {"q": "x"}, principal="u")
    assert guard.run(req, lambda: "ran") == "ran"
    entries = list(b.audit.entries())
    assert [e.body["event"] for e in entries] == ["execution", "result"]
    assert a.replay.consume(entries[0].body["token_id"], expires_at=NOW, now=NOW - 1) is False
    # Swapping the audit log back is noticed: the pair is worked out again.
    guard.audit_log = a.audit
    assert guard._joint_admission() is not None


class Refusing:
    """A joint step that answers neither an entry nor one of the ids given."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def consume_and_append(self, ids: Any, event: Any, *, now: int) -> Any:
        return self.answer


@pytest.mark.parametrize("answer", [None, "", "someone-else", 0, False, True])
def test_an_odd_joint_answer_denies(answer: Any, tmp_path: Path) -> None:
    stores = open_stores(f"sqlite://{tmp_path}/a.db")
    guard = guard_on(stores)
    guard._joint = (stores.replay, stores.audit, Refusing(answer))
    ran: list[int] = []
    with pytest.raises(ExecutionDenied) as denied:
        guard.run(guard.proposal("search", {"q": "x"}, principal="u"), lambda: ran.append(1))
    assert ran == []
    assert denied.value.reason_codes == ("TOKEN_REPLAYED",)
    assert [e.body["event"] for e in stores.audit.entries()] == ["denial"]


@pytest.mark.redis
def test_redis_keeps_ids_past_expiry_by_the_replica_clock_margin(tmp_path: Path) -> None:
    # Redis expires by TTL in real time: the margin must be in the TTL itself.
    require("redis")
    backend: Any = make_backend("redis", tmp_path)
    try:
        stores = backend.open()
        now = int(time.time())
        assert stores.replay.consume("plain", expires_at=now + 10, now=now)
        joint_of(stores).consume_and_append([("joint", now + 10)], execution("joint"), now=now)
        for key in ("plain", "joint"):
            ttl_ms = backend.admin.pttl(backend.prefix + "jti:" + key)
            assert (10 + MAX_CLOCK_SKEW - 2) * 1000 <= ttl_ms <= (10 + MAX_CLOCK_SKEW) * 1000, (key, ttl_ms)
    finally:
        backend.close()


def test_sqlite_joint_step_is_one_transaction(tmp_path: Path) -> None:
    # A crash between the two writes cannot leave an id consumed and unrecorded:
    # here the append fails inside the transaction, and the id is not consumed.
    stores = open_stores(f"sqlite://{tmp_path}/a.db")
    joint = joint_of(stores)
    audit: Any = stores.audit
    original = audit._write

    def failing(event: Any) -> Any:
        original(event)
        raise RuntimeError("disk full (injected)")

    audit._write = failing
    with pytest.raises(RuntimeError):
        joint.consume_and_append([("tok", NOW + 60)], execution("tok"), now=NOW)
    audit._write = original
    assert stores.audit.head()[0] == 0
    assert stores.replay.consume("tok", expires_at=NOW + 60, now=NOW) is True
    token = secrets.token_hex(4)
    assert isinstance(joint.consume_and_append([(token, NOW + 60)], execution(token), now=NOW), AuditEntry)


# -- PostgreSQL: result entries may commit asynchronously -------------------------------


@pytest.mark.postgres
def test_postgres_async_result_commit_relaxes_only_result_entries(tmp_path: Path) -> None:
    from execauth_core.stores.postgres import PostgresAuditLog

    backend: Any = make_backend("postgres", tmp_path)
    try:
        stores = open_stores(backend.url + "&result_commit=async")
        backend._opened.append(stores)  # closed with the backend, even if an assertion fails
        assert stores.audit._async_results is True  # type: ignore[attr-defined]
        stores.audit.append({"event": "decision", "executed": False, "time": NOW})  # tables, a pooled session
        conn = stores.audit._db._idle[-1].conn  # type: ignore[attr-defined]
        seen: list[str] = []
        execute = conn.execute

        def recording(query: Any, params: Any = None, **kw: Any) -> Any:
            seen.append(str(query))
            return execute(query, params, **kw)

        conn.execute = recording
        joint_of(stores).consume_and_append([("tok", NOW + 60)], execution("tok"), now=NOW)
        stores.audit.append({"event": "result", "executed": True, "time": NOW, "token_id": "tok", "detail": {}})
        stores.audit.append({"event": "denial", "executed": False, "time": NOW})
        relaxed = ["set_config('synchronous_commit', 'off', true)" in q for q in seen if "sha256(body)" in q]
        assert relaxed == [False, True, False]  # execution (joint), result, denial
        # The setting lasted for that statement's transaction only.
        assert execute("SHOW synchronous_commit").fetchone() == ("on",)
        # And the server really applies it: inside a transaction that is rolled back,
        # the relaxed statement leaves synchronous_commit off for that transaction.
        audit: Any = stores.audit
        a, b, c = body_template({"event": "result", "executed": True, "time": NOW, "detail": {}})
        with conn.transaction(force_rollback=True):
            execute(audit._append_async, {"a": a, "b": b, "c": c, "writer": "probe"}).fetchone()
            assert execute("SHOW synchronous_commit").fetchone() == ("off",)
        with conn.transaction(force_rollback=True):
            execute(audit._append, {"a": a, "b": b, "c": c, "writer": "probe"}).fetchone()
            assert execute("SHOW synchronous_commit").fetchone() == ("on",)
        entries = list(stores.audit.entries())
        assert [e.body["event"] for e in entries] == ["decision", "execution", "result", "denial"]
        assert verify_chain(entries, expected_head=stores.audit.head())[0] == 4
        stores.close()
        assert open_stores(backend.url).audit._async_results is False  # type: ignore[attr-defined]  # durable default
        with pytest.raises(ConfigurationError, match="result_commit"):
            open_stores(backend.url + "&result_commit=sometimes")
        with pytest.raises(ConfigurationError, match="result_commit"):
            PostgresAuditLog(backend.url, result_commit="off")
    finally:
        backend.close()
