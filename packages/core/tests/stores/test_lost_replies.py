"""A write that landed but whose reply was lost is retried by the client: the retry
must neither append the audit entry twice, nor charge a hold twice, nor report a
consumed id as fresh."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from execauth_core import verify_chain
from execauth_core.stores import Debit
from execauth_core.stores.urls import Stores

from .conftest import Backend, make_backend

EVENT = {"event": "decision", "executed": False, "time": 1_767_225_600}


@pytest.fixture(
    params=[pytest.param("redis", marks=pytest.mark.redis), pytest.param("postgres", marks=pytest.mark.postgres)]
)
def net(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Backend, Stores]]:
    backend = make_backend(request.param, tmp_path)
    try:
        stores = backend.open()
        stores.audit.append(EVENT)  # tables exist and a pooled connection is warm
        yield backend, stores
    finally:
        backend.close()


def lose_next_reply(backend: Backend, stores: Stores, *, redis_command: str, pg_statement: str) -> list[str]:
    """Let the next such call reach the server and take effect, then drop its reply.

    ``pg_statement`` is a fragment of the SQL, or ``COMMIT`` for the commit of the
    next transaction.
    """
    lost: list[str] = []
    if backend.name == "redis":
        import redis

        client: Any = stores.replay._redis  # type: ignore[attr-defined]
        original = client.parse_response

        def parse(connection: Any, command_name: str, **options: Any) -> Any:
            reply = original(connection, command_name, **options)
            if not lost and command_name == redis_command:
                lost.append(command_name)
                raise redis.ConnectionError("reply lost (injected)")
            return reply

        client.parse_response = parse
        return lost

    import contextlib

    import psycopg

    conn = stores.replay._db._idle[-1].conn  # type: ignore[attr-defined]

    def drop() -> None:
        lost.append(pg_statement)
        conn.close()  # the server went ahead; the client never hears of it
        raise psycopg.OperationalError("server closed the connection unexpectedly (injected)")

    if pg_statement == "COMMIT":
        transaction = conn.transaction

        @contextlib.contextmanager
        def committed_then_lost(*args: Any, **kw: Any) -> Iterator[Any]:
            with transaction(*args, **kw) as tx:
                yield tx
            if not lost:
                drop()

        conn.transaction = committed_then_lost
    else:
        execute = conn.execute

        def execute_then_lose(query: Any, params: Any = None, **kw: Any) -> Any:
            result = execute(query, params, **kw)
            if not lost and pg_statement in str(query):
                drop()
            return result

        conn.execute = execute_then_lose
    return lost


def test_an_append_whose_reply_was_lost_is_recorded_once(net: tuple[Backend, Stores]) -> None:
    backend, stores = net
    lost = lose_next_reply(backend, stores, redis_command="EVALSHA", pg_statement="sha256(body)")
    entry = stores.audit.append({**EVENT, "n": 2})
    assert lost, "the fault was not injected"
    entries = list(stores.audit.entries())
    assert [e.seq for e in entries] == [1, 2]
    assert (entry.seq, entry.digest) == (entries[-1].seq, entries[-1].digest)
    assert verify_chain(entries, expected_head=stores.audit.head())[0] == 2


def test_a_debit_whose_reply_was_lost_charges_once(net: tuple[Backend, Stores]) -> None:
    backend, stores = net
    lost = lose_next_reply(backend, stores, redis_command="EVALSHA", pg_statement="COMMIT")
    assert stores.state.debit("hold-1", [Debit("budget/l", 4, 10, 3600)], now=1000) is None
    assert lost, "the fault was not injected"
    assert stores.state.usage("budget/l", 3600, now=1000) == 4


def test_a_consume_whose_reply_was_lost_reads_as_consumed(net: tuple[Backend, Stores]) -> None:
    # The client cannot know the first try consumed the id: the token is burnt
    # (denied as replayed), never accepted twice.
    backend, stores = net
    lost = lose_next_reply(backend, stores, redis_command="SET", pg_statement="INSERT INTO")
    assert stores.replay.consume("token-1", expires_at=10**6, now=0) is False
    assert lost, "the fault was not injected"
    assert stores.replay.consume("token-1", expires_at=10**6, now=0) is False
