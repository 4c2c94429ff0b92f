"""open_stores(url): every scheme, its options, and clear errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from execauth_core import ConfigurationError, StoreUnavailable
from execauth_core.stores import (
    MemoryAuditLog,
    MemoryReplayStore,
    MemoryStateStore,
    SQLiteAuditLog,
    SQLiteReplayStore,
    SQLiteStateStore,
)
from execauth_core.stores.urls import _split_options, open_stores


def test_memory() -> None:
    replay, audit, state = open_stores("memory://")
    assert (type(replay), type(audit), type(state)) == (MemoryReplayStore, MemoryAuditLog, MemoryStateStore)


def test_sqlite_absolute_and_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stores = open_stores(f"sqlite://{tmp_path}/a.db?timeout=3")
    assert [type(s) for s in stores] == [SQLiteReplayStore, SQLiteAuditLog, SQLiteStateStore]
    assert {s.path for s in stores} == {f"{tmp_path}/a.db"}  # type: ignore[attr-defined]
    stores.close()
    monkeypatch.chdir(tmp_path)
    rel = open_stores("sqlite:rel.db")
    assert rel.replay.path == "rel.db"  # type: ignore[attr-defined]
    rel.close()
    four = open_stores(f"sqlite:///{tmp_path}/b.db")  # sqlite:////abs, as some tools write it
    assert four.replay.path == f"{tmp_path}/b.db"  # type: ignore[attr-defined]
    four.close()


def test_sqlite_in_a_missing_folder_is_store_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        open_stores(f"sqlite://{tmp_path}/no/such/dir/x.db")


@pytest.mark.parametrize(
    "url",
    [
        "",
        "nonsense",
        "mysql://h/db",
        "sqlite://host/x.db",
        "memory",
        "sqlite:///x.db?timeout=soon",
        "redis://h?timeout=0",
    ],
)
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        open_stores(url)


def test_own_options_are_taken_out_and_the_rest_kept_byte_for_byte() -> None:
    url = "postgresql://u:p%2Bq@h:1/db?options=-c%20a%3Db&schema=x_y&sslmode=require&timeout=1.5&x=a+b"
    assert _split_options(url, ("schema", "timeout")) == (
        "postgresql://u:p%2Bq@h:1/db?options=-c%20a%3Db&sslmode=require&x=a+b",
        {"schema": "x_y", "timeout": "1.5"},
    )
    assert _split_options("redis://h:6379/0?prefix=a%3Ab:", ("prefix",)) == ("redis://h:6379/0", {"prefix": "a:b:"})


def test_postgres_schema_names_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="schema"):
        open_stores('postgresql://u@127.0.0.1:1/db?schema=x";drop')


@pytest.mark.parametrize(
    ("url", "module", "extra"), [("redis://h:1/0", "redis", "redis"), ("postgresql://h/db", "psycopg", "postgres")]
)
def test_a_missing_client_names_the_extra_to_install(
    url: str, module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend the client is not installed, and forget our module that imported it.
    monkeypatch.setitem(sys.modules, module, None)
    import execauth_core.stores as package

    ours = "redis" if extra == "redis" else "postgres"
    monkeypatch.delitem(sys.modules, f"execauth_core.stores.{ours}", raising=False)
    monkeypatch.delattr(package, ours, raising=False)
    with pytest.raises(ConfigurationError, match=rf"pip install 'execauth-core\[{extra}\]'"):
        open_stores(url)


def test_network_stores_connect_lazily() -> None:
    # A server that is down at start-up makes calls fail (the guard denies), not construction.
    from ._servers import free_port

    stores = open_stores(f"postgresql://x@127.0.0.1:{free_port()}/x?timeout=1")
    with pytest.raises(StoreUnavailable):
        stores.replay.consume("id", expires_at=10, now=0)
