"""Two uvicorn worker processes share one truth through the configured store URL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from execauth_core.stores.urls import open_stores
from execauth_server.testing import running_server

LIMITED = {"tool": "search_docs", "args": {"q": "x"}, "principal": "carol"}


def _two_workers_share_state(config: dict[str, Any], store_url: str) -> None:
    # the test policy allows carol 5 searches an hour: across both workers, exactly 5 ALLOW
    with running_server({**config, "stores": store_url}, workers=2) as srv:
        outcomes = []
        headers = {"Authorization": f"Bearer {srv.credential}"}
        for i in range(12):
            # a fresh connection each time, so the kernel spreads them over the workers
            with httpx.Client(headers=headers, timeout=10) as client:
                r = client.post(srv.url + "/v1/decide", json={**LIMITED, "call_id": f"c{i}"})
                assert r.status_code == 200, r.text
                outcomes.append(r.json()["outcome"])
        assert outcomes.count("ALLOW") == 5 and outcomes[5:] == ["DEFER"] * 7  # rate limited: try later
        head = httpx.get(srv.url + "/v1/audit/head", headers=headers).json()
        assert head["seq"] == 12  # one decision entry per call, in one chain
    stores = open_stores(store_url)
    try:
        from execauth_core import verify_chain

        seq, digest = verify_chain(stores.audit.entries())
        assert (seq, digest) == (head["seq"], head["head"])
    finally:
        stores.close()


def test_two_workers_share_sqlite(server_config: dict[str, Any], tmp_path: Any) -> None:
    _two_workers_share_state(server_config, f"sqlite:{tmp_path / 'shared.db'}")


def test_two_workers_share_redis(server_config: dict[str, Any], redis_url: str) -> None:
    _two_workers_share_state(server_config, redis_url)


def test_two_workers_share_postgresql(server_config: dict[str, Any], postgres_url: str) -> None:
    _two_workers_share_state(server_config, postgres_url)


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_read_one_key(server_config: dict[str, Any], workers: int) -> None:
    with running_server(server_config, workers=workers) as srv:
        kids = {httpx.get(srv.jwks_url, headers={"Connection": "close"}).json()["keys"][0]["kid"] for _ in range(6)}
        assert len(kids) == 1 and (srv.data_dir / "authority.key").stat().st_mode & 0o077 == 0
