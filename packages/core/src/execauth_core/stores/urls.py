"""Open the three stores (replay, audit, state) from one URL.

==============================================  ===========================================
``memory://``                                   in-process; gone with the process
``sqlite:///var/lib/execauth/execauth.db``      one file (absolute path ``/var/lib/...``);
                                                ``sqlite:relative/path.db`` for a relative one
``redis://[:password@]host:6379/0``             Redis (also ``rediss://`` for TLS)
``postgresql://user[:password]@host:5432/db``   PostgreSQL (also ``postgres://``)
==============================================  ===========================================

Query parameters understood here (and removed before the URL reaches the client):
``timeout`` (seconds, every backend), ``prefix`` (Redis key namespace),
``schema`` (PostgreSQL schema) and ``result_commit`` (PostgreSQL: ``durable``, the
default, or ``async`` for result entries; see
:class:`~execauth_core.stores.postgres.PostgresAuditLog`). The Redis and PostgreSQL clients are imported
only when such a URL is opened.
"""

from __future__ import annotations

from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit, urlunsplit

from ..audit import AuditLog
from ..errors import ConfigurationError
from .base import ReplayStore, StateStore

__all__ = ["Stores", "open_stores", "sqlite_path"]


class Stores(NamedTuple):
    """The three stores a deployment shares: unpack as ``replay, audit, state``."""

    replay: ReplayStore
    audit: AuditLog
    state: StateStore

    def close(self) -> None:
        """Close whatever the stores hold open (connections, files)."""
        for store in self:
            close = getattr(store, "close", None)
            if close is not None:
                close()


def _split_options(url: str, names: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    kept, ours = [], {}
    for piece in parts.query.split("&") if parts.query else ():
        key, _, value = piece.partition("=")
        if unquote(key) in names:
            ours[unquote(key)] = unquote(value)
        else:
            kept.append(piece)  # byte for byte: libpq reads "+" literally, form decoding would not
    return urlunsplit(parts._replace(query="&".join(kept))), ours


def _timeout(ours: dict[str, str], given: float | None) -> dict[str, Any]:
    if given is not None:
        return {"timeout": float(given)}
    if "timeout" not in ours:
        return {}
    try:
        value = float(ours["timeout"])
    except ValueError:
        raise ConfigurationError(f"timeout must be a number of seconds, got {ours['timeout']!r}") from None
    if not value > 0:
        raise ConfigurationError("timeout must be positive")
    return {"timeout": value}


def sqlite_path(url: str) -> str:
    """The file a ``sqlite:`` URL names.

    Raises:
        ConfigurationError: not a well-formed SQLite URL.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite" or parts.netloc or not parts.path:
        raise ConfigurationError("a SQLite URL is sqlite:///absolute/path.db or sqlite:relative/path.db")
    path = unquote(parts.path)
    if path.startswith("//"):  # sqlite:////abs/path.db, as some tools write it
        path = path[1:]
    return path


def open_stores(url: str, *, timeout: float | None = None) -> Stores:
    """Open the replay store, audit log and state store that ``url`` names.

    The three stores share one client (Redis) or connection pool (PostgreSQL).
    Network stores connect lazily: a server that is down now makes calls fail
    with ``StoreUnavailable`` (and the guard deny) until it is back.

    Args:
        url: see the table in this module's docstring.
        timeout: seconds before an unanswered store call fails; overrides the
            URL's ``timeout`` parameter. Defaults: 2 s for Redis and PostgreSQL,
            5 s (the lock wait) for SQLite.

    Raises:
        ConfigurationError: unknown scheme, malformed URL, or the client library
            for that backend is not installed (the message says what to install).
    """
    if not isinstance(url, str) or ":" not in url:
        raise ConfigurationError("a store URL looks like memory://, sqlite:///path.db, redis://... or postgresql://...")
    scheme = url.split(":", 1)[0].lower()
    if scheme == "memory":
        from .memory import MemoryAuditLog, MemoryReplayStore, MemoryStateStore

        return Stores(MemoryReplayStore(), MemoryAuditLog(), MemoryStateStore())
    if scheme == "sqlite":
        from .sqlite import SQLiteAuditLog, SQLiteReplayStore, SQLiteStateStore

        _, ours = _split_options(url, ("timeout",))
        path = sqlite_path(url)
        kw = _timeout(ours, timeout)
        return Stores(SQLiteReplayStore(path, **kw), SQLiteAuditLog(path, **kw), SQLiteStateStore(path, **kw))
    if scheme in ("redis", "rediss"):
        from . import redis as redis_stores  # raises ConfigurationError naming the extra if redis is missing

        bare, ours = _split_options(url, ("timeout", "prefix"))
        kw = _timeout(ours, timeout)
        client = redis_stores.redis_client(bare, **kw)
        prefix = ours.get("prefix", redis_stores.DEFAULT_PREFIX)
        return Stores(
            redis_stores.RedisReplayStore(client, prefix=prefix),
            redis_stores.RedisAuditLog(client, prefix=prefix, **kw),
            redis_stores.RedisStateStore(client, prefix=prefix),
        )
    if scheme in ("postgresql", "postgres"):
        from . import postgres as pg_stores  # raises ConfigurationError naming the extra if psycopg is missing

        bare, ours = _split_options(url, ("timeout", "schema", "result_commit"))
        db = pg_stores.PostgresConnections(
            bare, schema=ours.get("schema", pg_stores.DEFAULT_SCHEMA), **_timeout(ours, timeout)
        )
        audit = pg_stores.PostgresAuditLog(db, result_commit=ours.get("result_commit", "durable"))
        return Stores(pg_stores.PostgresReplayStore(db), audit, pg_stores.PostgresStateStore(db))
    raise ConfigurationError(f"unknown store URL scheme {scheme!r}: use memory, sqlite, redis or postgresql")


def open_beside(url: str, kinds: Any, *, timeout: float | None = None) -> Any:
    """A store kept beside the others at ``url`` (the approval queue, the effect ledger):
    ``kinds`` has the classes ``memory``, ``sqlite``, ``redis`` and ``postgres``, built
    from the same URLs, options and database as :func:`open_stores`.

    Raises:
        ConfigurationError: unknown scheme or malformed URL.
    """
    if not isinstance(url, str) or ":" not in url:
        raise ConfigurationError("a store URL looks like memory://, sqlite:///path.db, redis://... or postgresql://...")
    scheme = url.split(":", 1)[0].lower()
    if scheme == "memory":
        return kinds.memory()
    if scheme == "sqlite":
        _, ours = _split_options(url, ("timeout",))
        return kinds.sqlite(sqlite_path(url), **_timeout(ours, timeout))
    if scheme in ("redis", "rediss"):
        from . import redis as redis_stores

        bare, ours = _split_options(url, ("timeout", "prefix"))
        client = redis_stores.redis_client(bare, **_timeout(ours, timeout))
        return kinds.redis(client, prefix=ours.get("prefix", redis_stores.DEFAULT_PREFIX))
    if scheme in ("postgresql", "postgres"):
        from . import postgres as pg

        bare, ours = _split_options(url, ("timeout", "schema", "result_commit"))
        t = _timeout(ours, timeout)
        return kinds.postgres(bare, schema=ours.get("schema", pg.DEFAULT_SCHEMA), timeout=t.get("timeout"))
    raise ConfigurationError(f"unknown store URL scheme {scheme!r}: use memory, sqlite, redis or postgresql")
