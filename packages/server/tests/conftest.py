"""Fixtures: a policy and manifests on disk, store URLs for Redis and PostgreSQL.

Redis and PostgreSQL come from ``REDIS_URL`` / ``DATABASE_URL``; each test gets its own
key prefix / schema. An unreachable server skips, except under ``CI=true`` (fails).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import pytest

pytest.importorskip("starlette")

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").strip().lower() == "true"

POLICY = """\
id: server-tests
epoch: 1
principals:
  - id: alice
    agents: [helper]
    allow_tools: [search_docs, refund]
    max_risk_tier: E3
  - id: bob
    allow_tools: [search_docs]
  - id: carol
    allow_tools: [search_docs]
    rate_limits: [{tool: search_docs, limit: 5, window: 3600}]
"""

TOOLS = """\
- name: search_docs
  version: "1.0"
  effects: [data.read]
  args_schema: {type: object, properties: {q: {type: string}}, required: [q]}
- name: refund
  version: "1.0"
  effects: [payment.refund]
  amount_arg: amount
  currency_arg: currency
  args_schema:
    type: object
    properties: {order: {type: string}, amount: {type: string}, currency: {type: string}}
    required: [order, amount, currency]
- name: drop_table
  version: "1.0"
  effects: [data.delete]
  args_schema: {type: object, properties: {table: {type: string}}, required: [table]}
"""


@pytest.fixture
def server_config(tmp_path: Path) -> dict[str, Any]:
    """A config mapping with the test policy and manifests (absolute paths)."""
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "tools.yaml").write_text(TOOLS)
    return {
        "policy": str(tmp_path / "policy.yaml"),
        "manifests": str(tmp_path / "tools.yaml"),
        "data_dir": str(tmp_path / "data"),
        "limits": {"max_body_bytes": 4096, "read_timeout": 1.0},
    }


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: these tests must run, not skip)")
    pytest.skip(reason)


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), *params.items()]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


@pytest.fixture
def redis_url() -> Iterator[str]:
    try:
        import redis

        admin = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        admin.ping()
    except Exception as exc:
        unavailable(f"redis at {REDIS_URL} unreachable: {type(exc).__name__}")
    prefix = f"execauth-server-test:{secrets.token_hex(6)}:"
    try:
        yield with_query(REDIS_URL, prefix=prefix)
    finally:
        keys = list(admin.scan_iter(match=prefix + "*", count=1000))
        if keys:
            admin.delete(*keys)
        admin.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    try:
        import psycopg

        admin = psycopg.connect(DATABASE_URL, connect_timeout=2, autocommit=True)
    except Exception as exc:
        unavailable(f"postgresql at {DATABASE_URL} unreachable: {type(exc).__name__}")
    schema = f"execauth_server_test_{secrets.token_hex(6)}"
    try:
        yield with_query(DATABASE_URL, schema=schema)
    finally:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()
