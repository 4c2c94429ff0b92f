"""ExecAuthMiddleware on real uvicorn servers (127.0.0.1, ephemeral ports): every refusal
has its status and reason code, is recorded, and the protected handler never runs."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from execauth_core import KeySet, LocalSigner
from execauth_core._b64 import b64url_decode, b64url_encode
from execauth_core.executor import executor_body, executor_headers
from execauth_core.stores.memory import MemoryAuditLog
from execauth_core.stores.urls import open_stores

from .executor_support import (
    DATABASE_URL,
    REDIS_URL,
    Counter,
    free_port,
    make_executor,
    mint,
    proposal,
    require,
    serving,
    signer,
    tool_app,
    with_query,
)

RFC8032_SEED_2 = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")


class Upstream:
    def __init__(self, url: str, counter: Counter, audit: MemoryAuditLog) -> None:
        self.url = url
        self.counter = counter
        self.audit = audit
        self.http = httpx.Client(base_url=url, timeout=10)

    def post(self, path: str, *, headers: dict[str, str], content: bytes, method: str = "POST") -> httpx.Response:
        return self.http.request(method, path, headers=headers, content=content)

    def denials(self) -> list[Any]:
        return [e for e in self.audit.entries() if e.event == "denial"]


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    counter, audit = Counter(), MemoryAuditLog()
    executor = make_executor(KeySet.of_signer(signer()), audit=audit, max_body_bytes=2048)
    with serving(tool_app(counter, executor, read_timeout=0.5)) as url:
        up = Upstream(url, counter, audit)
        try:
            yield up
        finally:
            up.http.close()


def refused(up: Upstream, response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": response.json()["error"], "reason_code": code}
    assert "Traceback" not in response.text
    assert up.counter.runs == []  # the protected handler did not run
    last = up.denials()[-1]
    assert (last.executed, last.body["reason_codes"][0]) == (False, code)


def test_allowed_call_runs_once_then_replay_is_409(upstream: Upstream) -> None:
    req = proposal()
    token = mint(req, signer=signer())
    headers, body = executor_headers(req, token), executor_body(req)
    ok = upstream.post("/tools/send", headers=headers, content=body)
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"sent": req.args, "principal": "alice"}
    assert upstream.counter.runs == [req.args]
    again = upstream.post("/tools/send", headers=headers, content=body)
    assert again.status_code == 409 and again.json()["reason_code"] == "TOKEN_REPLAYED"
    assert upstream.counter.runs == [req.args]  # still one run
    events = [(e.event, e.executed) for e in upstream.audit.entries()]
    # The result is recorded once the response is out, so it may land after the denial.
    assert sorted(events) == [("denial", False), ("execution", True), ("result", True)]
    result = next(e for e in upstream.audit.entries() if e.event == "result")
    assert result.body["detail"]["http_status"] == 200


def test_direct_call_without_a_token_is_401(upstream: Upstream) -> None:
    r = upstream.post("/tools/send", headers={"Content-Type": "application/json"}, content=b'{"to": "bob"}')
    refused(upstream, r, 401, "NO_TOKEN")
    assert r.headers["www-authenticate"] == "ExecAuth"


def test_unrouted_paths_are_refused_and_public_ones_pass(upstream: Upstream) -> None:
    refused(upstream, upstream.http.get("/tools/anything"), 403, "UNKNOWN_TOOL")
    assert upstream.http.get("/health").json() == {"ok": True}


@pytest.mark.parametrize("how", ["other_signer", "flipped_signature", "expired", "other_audience"])
def test_forged_expired_and_foreign_tokens_are_403(
    upstream: Upstream, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    req = proposal()
    if how == "other_signer":
        token, code = mint(req, signer=LocalSigner(RFC8032_SEED_2)), "TOKEN_KID_UNKNOWN"
    elif how == "flipped_signature":
        head, payload, sig = mint(req, signer=signer()).split(".")
        raw = bytearray(b64url_decode(sig))
        raw[10] ^= 0x01  # one bit of the signature
        token, code = f"{head}.{payload}.{b64url_encode(bytes(raw))}", "TOKEN_SIGNATURE_INVALID"
    elif how == "expired":
        token, code = mint(req, signer=signer(), now=int(time.time()) - 3600), "TOKEN_EXPIRED"
    else:
        token, code = mint(req, signer=signer(), audience="another-executor"), "TOKEN_AUDIENCE_MISMATCH"
    with caplog.at_level(logging.DEBUG):
        r = upstream.post("/tools/send", headers=executor_headers(req, token), content=executor_body(req))
    refused(upstream, r, 403, code)
    assert token not in caplog.text and token.split(".")[2] not in caplog.text


def test_a_token_for_another_body_path_or_method_is_403(upstream: Upstream) -> None:
    req = proposal()
    token = mint(req, signer=signer())
    headers = executor_headers(req, token)
    r = upstream.post("/tools/send", headers=headers, content=b'{"to": "eve", "amount": "10.00"}')
    refused(upstream, r, 403, "TOKEN_PROPOSAL_MISMATCH")
    r = upstream.post("/tools/search", headers=headers, content=executor_body(req))
    refused(upstream, r, 403, "TOKEN_SCOPE_MISMATCH")
    r = upstream.post("/tools/send", headers=headers, content=executor_body(req), method="PUT")
    refused(upstream, r, 403, "UNKNOWN_TOOL")
    r = upstream.http.post("/tools/send?to=eve", headers=headers, content=executor_body(req))
    refused(upstream, r, 400, "REQUEST_INVALID")
    # None of those spent the token: the right call still runs.
    assert upstream.post("/tools/send", headers=headers, content=executor_body(req)).status_code == 200


def test_oversized_bodies_are_413(upstream: Upstream) -> None:
    req = proposal(note="x" * 4000)
    headers = executor_headers(req, mint(req, signer=signer()))
    refused(
        upstream, upstream.post("/tools/send", headers=headers, content=executor_body(req)), 413, "REQUEST_TOO_LARGE"
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: caught while streaming
        body = executor_body(req)
        for i in range(0, len(body), 500):
            yield body[i : i + 500]

    r = upstream.http.post("/tools/send", headers=headers, content=chunks())
    refused(upstream, r, 413, "REQUEST_TOO_LARGE")


def test_wrong_content_type_is_415(upstream: Upstream) -> None:
    req = proposal()
    headers = {**executor_headers(req, mint(req, signer=signer())), "Content-Type": "text/plain"}
    refused(
        upstream,
        upstream.post("/tools/send", headers=headers, content=executor_body(req)),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )


@pytest.mark.parametrize(
    "body", [b'{"to": "bob", "amount": "10.00"', b'{"to": "bob", "to": "eve", "amount": "10.00"}', b"[1]"]
)
def test_malformed_json_and_duplicate_keys_are_400(upstream: Upstream, body: bytes) -> None:
    req = proposal()
    headers = executor_headers(req, mint(req, signer=signer()))
    refused(upstream, upstream.post("/tools/send", headers=headers, content=body), 400, "REQUEST_INVALID")


def test_a_slow_client_is_408(upstream: Upstream) -> None:
    req = proposal()
    headers = executor_headers(req, mint(req, signer=signer()))
    host, port = upstream.url.removeprefix("http://").split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(f"POST /tools/send HTTP/1.1\r\nHost: x\r\n{head}Content-Length: 40\r\n\r\n{{".encode())
        answer = ""
        while '"}' not in answer:  # the head and the JSON body may come in two segments
            chunk = s.recv(65536).decode()
            if not chunk:
                break
            answer += chunk
    assert answer.startswith("HTTP/1.1 408"), answer
    assert '"reason_code":"REQUEST_TIMEOUT"' in answer
    assert upstream.counter.runs == []
    assert upstream.denials()[-1].body["reason_codes"] == ["REQUEST_TIMEOUT"]


def test_store_outage_is_503_and_nothing_runs() -> None:
    port = free_port()
    down = open_stores(f"redis://127.0.0.1:{port}/0?timeout=0.5")
    counter, audit = Counter(), MemoryAuditLog()
    executor = make_executor(KeySet.of_signer(signer()), replay=down.replay, audit=audit)
    req = proposal()
    with serving(tool_app(counter, executor)) as url:
        r = httpx.post(
            url + "/tools/send",
            headers=executor_headers(req, mint(req, signer=signer())),
            content=executor_body(req),
            timeout=10,
        )
    assert r.status_code == 503 and r.json()["reason_code"] == "STORE_UNAVAILABLE"
    assert counter.runs == []
    assert [e.body["reason_codes"] for e in audit.entries()] == [["STORE_UNAVAILABLE"]]
    # Where the store lives is for the record, not for the client.
    assert str(port) not in r.text and "Redis" not in r.text
    assert str(port) in next(iter(audit.entries())).body["detail"]["cause"]
    down.close()


def test_a_failing_handler_is_recorded_as_an_error() -> None:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.routing import Route

    from execauth_server.executor import ExecAuthMiddleware

    async def boom(request: Request) -> None:
        raise RuntimeError("the tool broke")

    audit = MemoryAuditLog()
    executor = make_executor(KeySet.of_signer(signer()), audit=audit)
    app = Starlette(
        routes=[Route("/tools/send", boom, methods=["POST"])],
        middleware=[Middleware(ExecAuthMiddleware, executor=executor)],
    )
    req = proposal()
    with serving(app) as url:
        r = httpx.post(
            url + "/tools/send", headers=executor_headers(req, mint(req, signer=signer())), content=executor_body(req)
        )
    assert r.status_code == 500 and "the tool broke" not in r.text
    assert [(e.event, e.body["detail"].get("status")) for e in audit.entries()][-1] == ("result", "error")


def _shared(kind: str, name: str) -> str:
    import secrets

    if kind == "redis":
        return with_query(REDIS_URL, prefix=f"execauth-test:{name}:{secrets.token_hex(6)}:")
    return with_query(DATABASE_URL, schema=f"execauth_test_{secrets.token_hex(6)}")


def _drop(kind: str, url: str) -> None:
    if kind == "redis":
        from urllib.parse import parse_qs, urlsplit

        import redis

        prefix = parse_qs(urlsplit(url).query)["prefix"][0]
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
        client.close()
    else:
        from urllib.parse import parse_qs, urlsplit

        import psycopg

        schema = parse_qs(urlsplit(url).query)["schema"][0]
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.parametrize(
    "kind", [pytest.param("redis", marks=pytest.mark.redis), pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_replay_across_two_replicas_sharing_a_store_is_409(kind: str) -> None:
    require(kind)
    url = _shared(kind, "replicas")
    a_stores, b_stores = open_stores(url), open_stores(url)  # two replicas, two clients
    counters = Counter(), Counter()
    try:
        keys = KeySet.of_signer(signer())
        apps = [
            tool_app(counters[i], make_executor(keys, replay=s.replay, audit=s.audit))
            for i, s in enumerate((a_stores, b_stores))
        ]
        req = proposal()
        headers = executor_headers(req, mint(req, signer=signer()))
        with serving(apps[0]) as a, serving(apps[1]) as b:
            first = httpx.post(a + "/tools/send", headers=headers, content=executor_body(req), timeout=10)
            second = httpx.post(b + "/tools/send", headers=headers, content=executor_body(req), timeout=10)
        assert first.status_code == 200, first.text
        assert second.status_code == 409 and second.json()["reason_code"] == "TOKEN_REPLAYED"
        assert (len(counters[0].runs), len(counters[1].runs)) == (1, 0)
        kinds = [(e.event, e.executed) for e in a_stores.audit.entries()]
        assert ("execution", True) in kinds and ("denial", False) in kinds  # one shared log
    finally:
        a_stores.close()
        b_stores.close()
        _drop(kind, url)


def test_concurrent_replays_of_one_token_run_it_once(upstream: Upstream) -> None:
    from concurrent.futures import ThreadPoolExecutor

    req = proposal()
    headers, body = executor_headers(req, mint(req, signer=signer())), executor_body(req)

    def fire(_: int) -> int:
        return httpx.post(upstream.url + "/tools/send", headers=headers, content=body, timeout=10).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(fire, range(8)))
    assert statuses == [200] + [409] * 7
    assert upstream.counter.runs == [req.args]


def test_an_unreachable_jwks_refuses_with_503_and_nothing_runs() -> None:
    from execauth_core.remote import JWKSKeys

    counter, audit = Counter(), MemoryAuditLog()
    keys = JWKSKeys(f"http://127.0.0.1:{free_port()}/.well-known/jwks.json", timeout=0.5)
    req = proposal()
    with serving(tool_app(counter, make_executor(keys, audit=audit))) as url:
        r = httpx.post(
            url + "/tools/send", headers=executor_headers(req, mint(req, signer=signer())), content=executor_body(req)
        )
    assert (r.status_code, r.json()["reason_code"]) == (503, "KEYSET_MISSING")
    assert counter.runs == []
    assert [(e.event, e.executed) for e in audit.entries()] == [("denial", False)]


def test_a_public_path_may_not_be_a_tool_route() -> None:
    """public_paths skip the token check for every method: naming a routed tool path
    there would unprotect that tool, so the middleware refuses to be built."""
    from starlette.applications import Starlette

    from execauth_core import ConfigurationError
    from execauth_server.executor import ExecAuthMiddleware

    executor = make_executor(KeySet.of_signer(LocalSigner.generate()))
    with pytest.raises(ConfigurationError, match="/tools/send"):
        ExecAuthMiddleware(Starlette(), executor=executor, public_paths=["/health", "/tools/send"])
    assert ExecAuthMiddleware(Starlette(), executor=executor, public_paths=["/health"]).public_paths == {"/health"}
