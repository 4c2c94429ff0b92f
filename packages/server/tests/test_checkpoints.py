"""The service signs audit checkpoints at its cadence and serves them, with proofs, on a real server."""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from execauth_core import KeySet
from execauth_core.audit import canonical_body
from execauth_core.errors import ConfigurationError
from execauth_core.stores.urls import open_stores
from execauth_core.tlog import leaf_hash, verify_consistency, verify_inclusion
from execauth_core.tlog_checkpoint import SignedCheckpoint, open_checkpoint
from execauth_core.tlog_verify import verify_log
from execauth_server.config import parse_config
from execauth_server.testing import RunningServer, running_server

ORIGIN = "execauth-server/audit"
SEARCH = {"tool": "search_docs", "args": {"q": "x"}, "principal": "alice", "agent": "helper"}


def decide(srv: RunningServer, n: int) -> None:
    h = {"Authorization": f"Bearer {srv.credential}"}
    for i in range(n):
        r = httpx.post(srv.url + "/v1/decide", json={**SEARCH, "call_id": f"c{time.monotonic_ns()}-{i}"}, headers=h)
        assert r.status_code == 200, r.text


def jwks(srv: RunningServer) -> KeySet:
    return KeySet.from_jwks(httpx.get(srv.jwks_url).json())


def checkpoint(srv: RunningServer, **kw: Any) -> SignedCheckpoint:
    r = httpx.get(srv.url + "/v1/audit/checkpoint", **kw)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    return open_checkpoint(r.content, jwks(srv), origin=ORIGIN)


def b64(items: list[str]) -> list[bytes]:
    return [base64.b64decode(x) for x in items]


def stored_entry(srv: RunningServer, seq: int) -> Any:
    stores = open_stores(srv.config.store_url)
    try:
        return next(iter(stores.audit.entries(seq)))
    finally:
        stores.close()


def test_checkpoints_are_signed_served_and_proofs_verify(server_config: dict[str, Any]) -> None:
    with running_server({**server_config, "checkpoints": {"every": 3}}) as srv:
        none = httpx.get(srv.url + "/v1/audit/checkpoint")
        assert none.status_code == 404 and none.json()["reason_code"] == "CHECKPOINT_MISSING"
        assert httpx.get(srv.url + "/v1/audit/proof?seq=1").json()["reason_code"] == "CHECKPOINT_MISSING"

        decide(srv, 2)
        refused = httpx.post(srv.url + "/v1/decide", json=SEARCH)  # no credential: a recorded denial
        assert refused.status_code == 401
        seq = refused.json()["audit_seq"]
        assert seq == 3
        cp = checkpoint(srv)  # no credential needed: checkpoints are public by default
        assert cp.size == 3

        # The inclusion proof of the denial, checked against a leaf computed here from the stored entry.
        entry = stored_entry(srv, seq)
        assert entry.body["event"] == "denial" and entry.body["executed"] is False
        leaf = leaf_hash(canonical_body(entry.body))
        proof = httpx.get(srv.url + f"/v1/audit/proof?seq={seq}").json()
        assert proof["size"] == cp.size and base64.b64decode(proof["root"]) == cp.root
        assert base64.b64decode(proof["leaf_hash"]) == leaf
        verify_inclusion(leaf, seq - 1, cp.size, b64(proof["proof"]), cp.root)
        first = stored_entry(srv, 1)
        p1 = httpx.get(srv.url + "/v1/audit/proof?seq=1&size=3").json()
        verify_inclusion(leaf_hash(canonical_body(first.body)), 0, 3, b64(p1["proof"]), cp.root)
        with pytest.raises(ValueError):  # the proof of entry 1 does not prove entry 3
            verify_inclusion(leaf, 0, 3, b64(p1["proof"]), cp.root)

        decide(srv, 4)  # 7 entries: the next checkpoint at 6, 7 unsigned
        cp2 = checkpoint(srv)
        assert cp2.size == 6
        cons = httpx.get(srv.url + f"/v1/audit/consistency?from={cp.size}&to={cp2.size}").json()
        assert (cons["from"], cons["to"]) == (3, 6)
        verify_consistency(cp.size, cp2.size, cp.root, cp2.root, b64(cons["proof"]))
        default = httpx.get(srv.url + "/v1/audit/consistency?from=3").json()
        assert default["to"] == 6 and default["proof"] == cons["proof"]

        # Bad and out-of-range queries are 400 REQUEST_INVALID, never a 500.
        for path in (
            "/v1/audit/proof",
            "/v1/audit/proof?seq=0",
            "/v1/audit/proof?seq=abc",
            "/v1/audit/proof?seq=-1",
            "/v1/audit/proof?seq=1&seq=2",
            "/v1/audit/proof?seq=7",  # beyond the checkpoint's size
            "/v1/audit/proof?seq=1&size=99",  # beyond the log
            "/v1/audit/consistency?from=7",
            "/v1/audit/consistency?from=1&to=99",
            "/v1/audit/consistency",
        ):
            r = httpx.get(srv.url + path)
            assert r.status_code == 400 and r.json()["reason_code"] == "REQUEST_INVALID", (path, r.text)

        doc = httpx.get(srv.url + "/openapi.json").json()
        assert {"/v1/audit/checkpoint", "/v1/audit/proof", "/v1/audit/consistency"} <= set(doc["paths"])
        report = verify_log_of(srv)
        assert report.ok and report.checkpoint_seq == 6 and report.unsigned == 1, report.message


def verify_log_of(srv: RunningServer) -> Any:
    stores = open_stores(srv.config.store_url)
    try:
        return verify_log(stores.audit, keys=jwks(srv), origin=ORIGIN)
    finally:
        stores.close()


def test_interval_signs_an_idle_tail_on_a_timer(server_config: dict[str, Any]) -> None:
    with running_server({**server_config, "checkpoints": {"interval": 1, "origin": "example.com/log"}}) as srv:
        decide(srv, 2)
        # The timer may sign after the first decision too (a loaded machine): wait for
        # the checkpoint that covers the idle tail, both records.
        deadline = time.monotonic() + 10
        size = None
        while time.monotonic() < deadline:
            r = httpx.get(srv.url + "/v1/audit/checkpoint")
            if r.status_code == 200:
                size = open_checkpoint(r.content, jwks(srv), origin="example.com/log").size
                if size == 2:
                    break
            time.sleep(0.1)
        assert size == 2, f"no checkpoint of both records within 10 s of an interval of 1 s (last: {size})"


def test_private_checkpoints_need_a_caller(server_config: dict[str, Any]) -> None:
    with running_server({**server_config, "checkpoints": {"every": 1, "public": False}}) as srv:
        decide(srv, 1)
        for path in ("/v1/audit/checkpoint", "/v1/audit/proof?seq=1", "/v1/audit/consistency?from=0"):
            r = httpx.get(srv.url + path)
            assert r.status_code == 401 and r.json()["reason_code"] == "CALLER_UNAUTHENTICATED"
        assert checkpoint(srv, headers={"Authorization": f"Bearer {srv.credential}"}).size == 1


def test_no_cadence_configured_signs_nothing(server_config: dict[str, Any]) -> None:
    with running_server(server_config) as srv:
        decide(srv, 3)
        r = httpx.get(srv.url + "/v1/audit/checkpoint")
        assert r.status_code == 404 and r.json()["reason_code"] == "CHECKPOINT_MISSING"
        stores = open_stores(f"sqlite:{Path(srv.data_dir) / 'execauth.db'}")
        try:
            assert stores.audit.checkpoints() == []  # type: ignore[attr-defined]
        finally:
            stores.close()


def test_two_workers_share_one_log_without_forks(server_config: dict[str, Any], tmp_path: Path) -> None:
    url = f"sqlite:{tmp_path / 'shared.db'}"
    with running_server({**server_config, "stores": url, "checkpoints": {"every": 2}}, workers=2) as srv:
        h = {"Authorization": f"Bearer {srv.credential}"}
        for i in range(20):
            with httpx.Client(headers=h, timeout=10) as client:  # fresh connections spread over the workers
                assert client.post(srv.url + "/v1/decide", json={**SEARCH, "call_id": f"w{i}"}).status_code == 200
        cp = checkpoint(srv)
        assert cp.size == 20
        report = verify_log_of(srv)
        assert report.ok and report.records == 20 and report.unsigned == 0, report.message
        stores = open_stores(url)
        try:
            sizes = [open_checkpoint(n, jwks(srv)).size for n in stores.audit.checkpoints()]  # type: ignore[attr-defined]
        finally:
            stores.close()
        # Each worker re-reads the newest stored checkpoint before signing: no size is signed twice here.
        assert sizes == sorted(set(sizes)) and sizes[-1] == 20 and len(sizes) <= 10


@pytest.mark.parametrize(
    "value",
    [
        {"every": 0},
        {"every": "5"},
        {"interval": -1},
        {"interval": True},
        {"origin": "has space"},
        {"origin": "a+b"},
        {"public": "yes"},
        {"cadence": 5},
        [1],
    ],
)
def test_bad_checkpoint_config_is_refused(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="checkpoints"):
        parse_config({"checkpoints": value})


def test_checkpoint_config_is_read() -> None:
    cfg = parse_config({"checkpoints": {"every": 100, "interval": 60, "origin": "auth.example/audit", "public": False}})
    assert (cfg.checkpoint_every, cfg.checkpoint_interval, cfg.checkpoint_origin, cfg.checkpoints_public) == (
        100,
        60,
        "auth.example/audit",
        False,
    )
    assert parse_config({}).checkpoint_every is None and parse_config({}).checkpoints_public
