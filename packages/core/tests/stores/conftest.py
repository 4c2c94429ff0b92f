"""Fixtures of the store contract suite: one backend object per store technology.

Redis and PostgreSQL come from ``REDIS_URL`` (default ``redis://127.0.0.1:6379/15``)
and ``DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``). Each
test gets its own key prefix / schema, removed afterwards. An unreachable server
skips those tests with the reason, except under ``CI=true``, where it fails them.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import pytest

from execauth_core.stores.urls import Stores, open_stores

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").strip().lower() == "true"
BACKENDS = ("memory", "sqlite", "redis", "postgres")


def unavailable(reason: str) -> None:
    """Skip for a missing service, but fail in CI, where every backend must run."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the store suite must run on every backend, not skip)")
    pytest.skip(reason)


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), *params.items()]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


_reachable: dict[str, str | None] = {}


def require(kind: str) -> None:
    """Skip (or, in CI, fail) unless the shared ``kind`` server answers."""
    if kind not in _reachable:
        _reachable[kind] = _probe(kind)
    if _reachable[kind] is not None:
        unavailable(_reachable[kind] or "")


def _probe(kind: str) -> str | None:
    try:
        if kind == "redis":
            import redis

            client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
            try:
                client.ping()
            finally:
                client.close()
        else:
            import psycopg

            psycopg.connect(DATABASE_URL, connect_timeout=2).close()
    except ImportError as exc:
        return f"{kind} client not installed ({exc}): pip install 'execauth-core[{kind}]'"
    except Exception as exc:  # any failure means: not reachable
        where = REDIS_URL if kind == "redis" else DATABASE_URL
        return f"{kind} server at {where} unreachable: {type(exc).__name__}: {exc}"
    return None


class Backend:
    """One store technology, namespaced for one test.

    ``open()`` returns a fresh client (a "restarted" replica); ``url`` lets child
    processes open the same stores with ``open_stores``.
    """

    name: str
    url: str

    def __init__(self) -> None:
        self._opened: list[Stores] = []

    def open(self, **kw: Any) -> Stores:
        stores = open_stores(self.url, **kw)
        self._opened.append(stores)
        return stores

    def live_ids(self, stores: Stores) -> int:
        """Consumed token ids the backend still holds."""
        raise NotImplementedError

    def live_state(self, stores: Stores) -> int:
        """Counters plus holds the backend still holds."""
        raise NotImplementedError

    def let_time_pass(self, seconds: float) -> None:
        """Backends that expire by the server's timer (Redis TTLs) need real time to pass."""

    def replay_without_margin(self, stores: Stores) -> Any:
        """A replay store on the same data whose ids expire within seconds of real time."""
        return stores.replay

    def close(self) -> None:
        for stores in self._opened:
            stores.close()


class MemoryBackend(Backend):
    name = "memory"
    url = "memory://"

    def __init__(self) -> None:
        super().__init__()
        self._stores = open_stores("memory://")

    def open(self, **kw: Any) -> Stores:
        return self._stores  # one process, one set: that is all memory stores can share

    def live_ids(self, stores: Stores) -> int:
        return len(stores.replay)  # type: ignore[arg-type]

    def live_state(self, stores: Stores) -> int:
        state: Any = stores.state
        return len(state._used) + len(state._holds)


class SQLiteBackend(Backend):
    name = "sqlite"

    def __init__(self, tmp: Path) -> None:
        super().__init__()
        self.path = tmp / "stores.db"
        self.url = f"sqlite://{self.path}"

    def _count(self, *tables: str) -> int:
        with sqlite3.connect(self.path) as conn:
            return sum(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables)

    def live_ids(self, stores: Stores) -> int:
        return self._count("consumed_tokens")

    def live_state(self, stores: Stores) -> int:
        return self._count("state_counters", "state_holds")


class RedisBackend(Backend):
    name = "redis"

    def __init__(self) -> None:
        super().__init__()
        import redis

        self.prefix = f"execauth-test:{secrets.token_hex(6)}:"
        self.url = with_query(REDIS_URL, prefix=self.prefix)
        self.admin = redis.Redis.from_url(REDIS_URL, socket_timeout=5)

    def _count(self, pattern: str) -> int:
        return sum(1 for _ in self.admin.scan_iter(match=self.prefix + pattern, count=1000))

    def live_ids(self, stores: Stores) -> int:
        return self._count("jti:*")

    def live_state(self, stores: Stores) -> int:
        return self._count("{state}:*")

    def let_time_pass(self, seconds: float) -> None:
        time.sleep(seconds)

    def replay_without_margin(self, stores: Stores) -> Any:
        # Redis expires ids by TTL in real time; the default 300 s replica clock
        # margin is too long to wait for in a test.
        from execauth_core.stores.redis import RedisReplayStore

        return RedisReplayStore(self.admin, prefix=self.prefix, clock_margin=0)

    def close(self) -> None:
        super().close()
        keys = list(self.admin.scan_iter(match=self.prefix + "*", count=1000))
        for i in range(0, len(keys), 500):
            self.admin.delete(*keys[i : i + 500])
        self.admin.close()


class PostgresBackend(Backend):
    name = "postgres"

    def __init__(self) -> None:
        super().__init__()
        self.schema = f"execauth_test_{secrets.token_hex(6)}"
        self.url = with_query(DATABASE_URL, schema=self.schema)

    def _count(self, *tables: str) -> int:
        import psycopg

        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            return sum(
                conn.execute(f'SELECT count(*) FROM "{self.schema}".{t}').fetchone()[0]  # type: ignore[index]
                for t in tables
            )

    def live_ids(self, stores: Stores) -> int:
        return self._count("consumed_tokens")

    def live_state(self, stores: Stores) -> int:
        return self._count("state_counters", "state_holds")

    def close(self) -> None:
        import psycopg

        super().close()
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


def make_backend(name: str, tmp: Path) -> Backend:
    if name == "memory":
        return MemoryBackend()
    if name == "sqlite":
        return SQLiteBackend(tmp)
    require(name)
    return RedisBackend() if name == "redis" else PostgresBackend()


def _param(name: str) -> Any:
    marks = [getattr(pytest.mark, name)] if name in ("redis", "postgres") else []
    return pytest.param(name, marks=marks, id=name)


@pytest.fixture(params=[_param(n) for n in BACKENDS])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = make_backend(request.param, tmp_path)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(params=[_param(n) for n in BACKENDS if n != "memory"])
def shared_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Backends that several processes can share (memory cannot)."""
    b = make_backend(request.param, tmp_path)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def stores(backend: Backend) -> Stores:
    return backend.open()
