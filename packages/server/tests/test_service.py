"""The authority service on a real uvicorn server: decisions, callers, bad input, faults."""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from execauth_core import AuthorizationDecision, AuthorizationRequest, KeySet, TokenVerifier
from execauth_core.stores.sqlite import SQLiteAuditLog
from execauth_server.config import hash_secret
from execauth_server.testing import RunningServer, running_server

SEARCH = {"tool": "search_docs", "args": {"q": "refund policy"}, "principal": "alice", "agent": "helper"}


def post(srv: RunningServer, body: Any, *, secret: str | None = None, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret or srv.credential}", **kw.pop("headers", {})}
    return httpx.post(srv.url + "/v1/decide", json=body, headers=headers, timeout=5, **kw)


def audit(srv: RunningServer) -> list[dict[str, Any]]:
    log = SQLiteAuditLog(srv.data_dir / "execauth.db")
    try:
        return [e.body for e in log.entries()]
    finally:
        log.close()


def last_denial(srv: RunningServer) -> dict[str, Any]:
    entries = [e for e in audit(srv) if e["event"] == "denial"]
    assert entries, "no denial was recorded"
    return entries[-1]


@pytest.fixture
def srv(server_config: dict[str, Any]) -> Any:
    bound = {
        "name": "alice-bot",
        "secret_sha256": hash_secret("alice-secret"),
        "principals": ["alice"],
        "agents": ["helper"],
    }
    with running_server({**server_config, "callers": [bound]}) as s:
        yield s


def test_allow_carries_a_token_that_verifies_with_pyjwt_from_the_served_jwks(srv: RunningServer) -> None:
    r = post(srv, SEARCH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    decision = AuthorizationDecision.model_validate_json(r.content)
    assert decision.outcome.value == "ALLOW" and decision.token
    jwks = httpx.get(srv.jwks_url).json()
    (jwk,) = jwks["keys"]
    key = jwt.PyJWK(jwk)
    claims = jwt.decode(
        decision.token, key.key, algorithms=["EdDSA"], audience="execauth-guard", issuer="execauth-server"
    )
    request = AuthorizationRequest.model_validate(SEARCH)
    assert claims["proposal_digest"] == request.content_digest() == decision.proposal_digest
    # and with core's own verifier, from the same JWKS
    verifier = TokenVerifier(keys=KeySet.from_jwks(jwks), issuer="execauth-server", audience="execauth-guard")
    assert verifier.verify(decision.token, request=request, now=int(time.time())).jti == claims["jti"]
    assert audit(srv)[-1]["event"] == "decision"


def test_deny_has_no_token_and_is_recorded(srv: RunningServer) -> None:
    r = post(srv, {**SEARCH, "tool": "drop_table", "args": {"table": "users"}})
    body = r.json()
    assert r.status_code == 200 and body["outcome"] == "DENY" and body["token"] is None
    assert "TOOL_NOT_ALLOWED" in body["reason_codes"]
    last = audit(srv)[-1]
    assert (last["event"], last["executed"], last["outcome"]) == ("decision", False, "DENY")


def test_tool_audiences_give_the_tool_its_own_audience(server_config: dict[str, Any]) -> None:
    with running_server({**server_config, "tool_audiences": {"search_docs": "docs-executor"}}) as srv:
        token = post(srv, SEARCH).json()["token"]
        jwk = jwt.PyJWK(httpx.get(srv.jwks_url).json()["keys"][0])
        assert jwt.decode(token, jwk.key, algorithms=["EdDSA"], audience="docs-executor")["aud"] == "docs-executor"


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "no credential"),
        ({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, "not a Bearer"),
        ({"Authorization": "Bearer not-a-known-secret"}, "unknown credential"),
        ({"Authorization": "Token abc"}, "not a Bearer"),
    ],
)
def test_unauthenticated_callers_get_401_and_a_recorded_denial(
    srv: RunningServer, headers: dict[str, str], detail: str
) -> None:
    r = httpx.post(srv.url + "/v1/decide", json=SEARCH, headers=headers)
    assert r.status_code == 401 and r.json()["reason_code"] == "CALLER_UNAUTHENTICATED"
    assert detail in r.json()["message"] and r.headers["www-authenticate"] == "Bearer"
    d = last_denial(srv)
    assert d["reason_codes"] == ["CALLER_UNAUTHENTICATED"] and d["executed"] is False
    assert r.json()["audit_seq"] == len(audit(srv))


@pytest.mark.parametrize(
    "body",
    [
        {**SEARCH, "principal": "bob", "agent": None},  # another principal
        {**SEARCH, "agent": "other-agent"},  # the right principal, another agent
        {**SEARCH, "agent": None},  # no agent named, the credential is bound to one
    ],
)
def test_a_credential_acts_only_for_its_principals_and_agents(srv: RunningServer, body: dict[str, Any]) -> None:
    r = post(srv, body, secret="alice-secret")
    assert r.status_code == 403 and r.json()["reason_code"] == "CALLER_NOT_BOUND"
    d = last_denial(srv)
    assert (d["reason_codes"], d["executed"], d["principal"]) == (["CALLER_NOT_BOUND"], False, body["principal"])
    assert d["detail"]["caller"] == "alice-bot"
    assert post(srv, SEARCH, secret="alice-secret").json()["outcome"] == "ALLOW"


def test_oversized_body_is_413_whether_declared_or_streamed(srv: RunningServer) -> None:
    big = {**SEARCH, "args": {"q": "x" * 5000}}
    r = post(srv, big)
    assert r.status_code == 413 and r.json()["reason_code"] == "REQUEST_TOO_LARGE"

    def chunks() -> Any:  # no Content-Length: refused while streaming
        yield b'{"tool": "search_docs", "args": {"q": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}, "principal": "alice"}'

    r = httpx.post(
        srv.url + "/v1/decide",
        content=chunks(),
        headers={"Authorization": f"Bearer {srv.credential}", "Content-Type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["reason_code"] == "REQUEST_TOO_LARGE"
    assert last_denial(srv)["reason_codes"] == ["REQUEST_TOO_LARGE"]


def test_a_slow_client_gets_408(srv: RunningServer) -> None:
    host, port = "127.0.0.1", srv.port
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(
            b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + srv.credential.encode() + b'\r\nContent-Length: 200\r\n\r\n{"tool"'
        )
        started = time.monotonic()
        answer = ""
        while "REQUEST_TIMEOUT" not in answer and time.monotonic() - started < 4:
            piece = s.recv(4096).decode()
            if not piece:
                break
            answer += piece
        assert time.monotonic() - started < 4
    assert answer.startswith("HTTP/1.1 408") and "REQUEST_TIMEOUT" in answer
    assert last_denial(srv)["reason_codes"] == ["REQUEST_TIMEOUT"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b'{"tool": "search_docs", "tool": "drop_table", "args": {}, "principal": "alice"}', "duplicate"),
        (b'{"tool": "search_docs", "args": {', "strict JSON"),
        (b'{"tool": "search_docs", "args": {"n": NaN}, "principal": "alice"}', "strict JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"tool": "", "args": {}, "principal": "alice"}', "not an AuthorizationRequest"),
        (b'{"tool": "t", "args": {}, "principal": "alice", "surprise": 1}', "not an AuthorizationRequest"),
    ],
)
def test_malformed_bodies_are_400_request_invalid(srv: RunningServer, content: bytes, fragment: str) -> None:
    r = httpx.post(
        srv.url + "/v1/decide",
        content=content,
        headers={"Authorization": f"Bearer {srv.credential}", "Content-Type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["reason_code"] == "REQUEST_INVALID"
    assert fragment in r.json()["message"]
    assert "Traceback" not in r.text
    assert last_denial(srv)["reason_codes"] == ["REQUEST_INVALID"]


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(srv: RunningServer, ctype: str | None) -> None:
    headers = {"Authorization": f"Bearer {srv.credential}"}
    if ctype:
        headers["Content-Type"] = ctype
    r = httpx.post(srv.url + "/v1/decide", content=json.dumps(SEARCH).encode(), headers=headers)
    assert r.status_code == 415 and r.json()["reason_code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert last_denial(srv)["reason_codes"] == ["UNSUPPORTED_MEDIA_TYPE"]


def test_store_outage_is_503_and_never_a_500(server_config: dict[str, Any]) -> None:
    with socket.socket() as s:  # a port with nothing listening: the store is down
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with running_server({**server_config, "stores": f"redis://127.0.0.1:{dead}/0?timeout=0.5"}) as srv:
        r = post(srv, SEARCH)
        assert r.status_code == 503 and r.json()["reason_code"] == "STORE_UNAVAILABLE"
        assert r.json()["audit_seq"] is None  # the audit log is down too: nothing to record in
        ready = httpx.get(srv.url + "/readyz")
        assert ready.status_code == 503 and ready.json()["reason_code"] == "STORE_UNAVAILABLE"
        assert httpx.get(srv.url + "/healthz").status_code == 200


def test_secrets_never_reach_the_logs(srv: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    post(srv, SEARCH, secret="alice-secret")
    post(srv, SEARCH, secret="wrong-secret-value")
    httpx.post(
        srv.url + "/v1/decide",
        content=b"{",
        headers={"Authorization": "Bearer wrong-secret-value", "Content-Type": "application/json"},
    )
    text = caplog.text + json.dumps(audit(srv))
    assert "alice-secret" not in text and "wrong-secret-value" not in text and srv.credential not in text


def test_jwks_caching_headers_and_304(srv: RunningServer) -> None:
    r = httpx.get(srv.jwks_url)
    assert r.status_code == 200 and "max-age=" in r.headers["cache-control"] and r.headers["etag"]
    again = httpx.get(srv.jwks_url, headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert httpx.get(srv.jwks_url, headers={"If-None-Match": '"other"'}).status_code == 200
    assert "d" not in r.json()["keys"][0]


def test_results_and_audit_head(srv: RunningServer) -> None:
    token = post(srv, SEARCH).json()["record"]["token_id"]
    h = {"Authorization": f"Bearer {srv.credential}"}
    r = httpx.post(srv.url + "/v1/results", json={"token_id": token, "status": "ok"}, headers=h)
    assert r.status_code == 200 and r.json()["recorded"]
    head = httpx.get(srv.url + "/v1/audit/head", headers=h).json()
    assert head["seq"] == r.json()["audit_seq"] == len(audit(srv)) and head["head"].startswith("sha256:")
    assert audit(srv)[-1]["detail"]["status"] == "ok"
    bad = httpx.post(srv.url + "/v1/results", json={"token_id": token, "status": "maybe"}, headers=h)
    assert bad.status_code == 400 and bad.json()["reason_code"] == "REQUEST_INVALID"
    assert httpx.get(srv.url + "/v1/audit/head").status_code == 401


def test_openapi_health_and_versioned_paths(srv: RunningServer) -> None:
    doc = httpx.get(srv.url + "/openapi.json").json()
    assert doc["openapi"].startswith("3.1") and "/v1/decide" in doc["paths"]
    assert "/.well-known/jwks.json" in doc["paths"]
    assert httpx.get(srv.url + "/healthz").json()["status"] == "ok"
    assert httpx.get(srv.url + "/readyz").json()["status"] == "ready"
    assert httpx.post(srv.url + "/decide", json=SEARCH).status_code == 404
    assert httpx.get(srv.url + "/v1/decide").status_code == 405


def test_no_stack_trace_reaches_a_client(server_config: dict[str, Any], tmp_path: Path) -> None:
    import httpx

    from execauth_server.app import create_app
    from execauth_server.testing import config_for, serving

    app = create_app(
        config_for(
            {**server_config, "callers": [{"name": "t", "secret_sha256": hash_secret("s"), "principals": ["*"]}]}
        )
    )

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals /etc/passwd")

    app.state.service.decide = broken
    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        r = client.post("/v1/decide", json=SEARCH, headers={"Authorization": "Bearer s"})
    assert r.status_code == 500 and r.json()["reason_code"] == "GUARD_ERROR"
    assert "internals" not in r.text and "Traceback" not in r.text
    seq = r.json()["audit_seq"]
    entry = list(app.state.service.stores.audit.entries())[seq - 1].body
    assert (entry["event"], entry["executed"], entry["reason_codes"]) == ("denial", False, ["GUARD_ERROR"])
    app.state.service.close()


def _report(srv: RunningServer, token_id: str, secret: str, status: str = "ok") -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret}"}
    return httpx.post(srv.url + "/v1/results", json={"token_id": token_id, "status": status}, headers=headers)


def test_a_result_is_accepted_only_for_an_issued_token_from_its_caller_once(server_config: dict[str, Any]) -> None:
    callers = [
        {"name": "alice-bot", "secret_sha256": hash_secret("alice-secret"), "principals": ["alice"]},
        {"name": "bob-bot", "secret_sha256": hash_secret("bob-secret"), "principals": ["bob"]},
    ]
    with running_server({**server_config, "callers": callers}) as s:
        alice = post(s, SEARCH, secret="alice-secret").json()
        assert alice["outcome"] == "ALLOW"
        token_id = alice["record"]["token_id"]
        deny = post(s, {**SEARCH, "tool": "drop_table", "args": {"table": "t"}}, secret="alice-secret").json()
        assert deny["outcome"] != "ALLOW" and deny["record"]["token_id"] is None

        unknown = _report(s, "u" * 24, "alice-secret")
        assert unknown.status_code == 403 and unknown.json()["reason_code"] == "CALLER_NOT_BOUND"
        foreign = _report(s, token_id, "bob-secret")
        assert foreign.status_code == 403 and foreign.json()["reason_code"] == "CALLER_NOT_BOUND"
        # The same answer for a foreign token as for an unknown one: nothing about alice's.
        assert foreign.json()["message"] == unknown.json()["message"]

        first = _report(s, token_id, "alice-secret")
        assert first.status_code == 200 and first.json()["recorded"] is True
        again = _report(s, token_id, "alice-secret", status="error")
        assert again.status_code == 409 and again.json()["reason_code"] == "TOKEN_REPLAYED"

        entries = audit(s)
        results = [e for e in entries if e["event"] == "result"]
        assert len(results) == 1 and results[0]["token_id"] == token_id
        assert results[0]["detail"]["caller"] == "alice-bot"
        refused = [e for e in entries if e["event"] == "denial" and e["detail"].get("via") == "server"]
        codes = [e["reason_codes"] for e in refused[-3:]]
        assert codes == [["CALLER_NOT_BOUND"], ["CALLER_NOT_BOUND"], ["TOKEN_REPLAYED"]]
        assert all(e["executed"] is False for e in refused)
        for r in (unknown, foreign, again):
            assert r.json()["audit_seq"] is not None


@pytest.mark.parametrize("store", ["redis", "postgres"])
def test_result_reports_on_shared_stores(server_config: dict[str, Any], store: str, request: Any) -> None:
    """The mark and the once-only count live in the shared state store (Redis, PostgreSQL)."""
    url = request.getfixturevalue(f"{store}_url")
    callers = [{"name": "alice-bot", "secret_sha256": hash_secret("alice-secret"), "principals": ["alice"]}]
    with running_server({**server_config, "callers": callers, "stores": url}) as s:
        token_id = post(s, SEARCH, secret="alice-secret").json()["record"]["token_id"]
        assert _report(s, "u" * 24, "alice-secret").status_code == 403
        assert _report(s, token_id, "alice-secret").status_code == 200
        assert _report(s, token_id, "alice-secret").json()["reason_code"] == "TOKEN_REPLAYED"


def test_unauthenticated_refusals_are_recorded_up_to_a_limit_then_summarized(server_config: dict[str, Any]) -> None:
    callers = [{"name": "alice-bot", "secret_sha256": hash_secret("alice-secret"), "principals": ["alice"]}]
    config = {
        **server_config,
        "callers": callers,
        "limits": {**server_config["limits"], "unauthenticated_per_minute": 5},
    }
    with running_server(config) as s:
        before = len(audit(s))
        answers = [post(s, SEARCH, secret="wrong-secret") for _ in range(25)]
        codes = [r.status_code for r in answers]
        assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}, codes
        assert answers[-1].json()["reason_code"] == "RATE_LIMITED" and int(answers[-1].headers["retry-after"]) >= 1
        # Another route shares the bucket; a bad body without a credential is refused the same way.
        assert (
            httpx.post(s.url + "/v1/results", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 429
        )
        added = audit(s)[before:]
        assert [e["reason_codes"] for e in added] == [["CALLER_UNAUTHENTICATED"]] * 5 + [["RATE_LIMITED"]]
        assert added[-1]["detail"]["suppressed"] == 1 and added[-1]["executed"] is False
        # A caller with a valid secret is not limited, even for a bad body, and is named.
        assert post(s, SEARCH, secret="alice-secret").json()["outcome"] == "ALLOW"
        bad = httpx.post(
            s.url + "/v1/decide", content=b"{}", headers={"Authorization": "Bearer alice-secret", "Content-Type": "x/y"}
        )
        assert bad.status_code == 415
        assert audit(s)[-1]["reason_codes"] == ["UNSUPPORTED_MEDIA_TYPE"]
        assert audit(s)[-1]["detail"]["caller"] == "alice-bot"
        during = len(audit(s))
    # Stopping the service writes what it suppressed since the last summary.
    final = audit(s)[during:]
    assert len(final) == 1 and final[0]["reason_codes"] == ["RATE_LIMITED"]
    assert final[0]["detail"]["suppressed"] == 20 and final[0]["detail"]["by_source"] == {"127.0.0.1": 20}


def test_the_unauthenticated_limit_writes_at_most_one_summary_per_interval() -> None:
    from execauth_server.app import _UnauthenticatedLimit

    limit = _UnauthenticatedLimit(60, interval=10.0, max_sources=2)
    assert all(limit.admit("a", 0.0) for _ in range(60)) and not limit.admit("a", 0.0)
    assert limit.take_summary(0.0) == ({"a": 1}, 0.0)
    assert not limit.admit("a", 0.5)  # half a token refilled
    assert limit.take_summary(5.0) is None  # within the interval: no second summary
    assert limit.admit("a", 2.0)  # one a second comes back
    assert limit.admit("b", 0.0) and limit.admit("c", 0.0)  # past max_sources: shared bucket
    assert set(limit._buckets) == {"a", "b", "(other)"}  # max_sources, plus the shared one
    assert limit.take_summary(10.5) == ({"a": 1}, 0.5)


def test_a_result_the_audit_log_could_not_record_may_be_reported_again(server_config: dict[str, Any]) -> None:
    from execauth_core.errors import StoreUnavailable
    from execauth_core.stores.memory import MemoryAuditLog
    from execauth_core.stores.urls import Stores, open_stores
    from execauth_server.app import AuthorityService, create_app
    from execauth_server.config import parse_config
    from execauth_server.testing import serving

    class FlakyAudit(MemoryAuditLog):
        down = False

        def append(self, event: Any) -> Any:
            if self.down and event.get("event") == "result":
                raise StoreUnavailable("audit log down (test)")
            return super().append(event)

    callers = [{"name": "alice-bot", "secret_sha256": hash_secret("alice-secret"), "principals": ["alice"]}]
    config = parse_config({**server_config, "callers": callers}, base=Path.cwd())
    memory = open_stores("memory://")
    audit_log = FlakyAudit()
    service = AuthorityService(config, stores=Stores(memory.replay, audit_log, memory.state))
    with serving(create_app(config, service=service)) as url:
        fake = RunningServer(
            url=url, credential="alice-secret", data_dir=config.data_dir, config=config, config_file=Path()
        )
        token_id = post(fake, SEARCH).json()["record"]["token_id"]
        audit_log.down = True
        down = _report(fake, token_id, "alice-secret")
        assert down.status_code == 503 and down.json()["reason_code"] == "STORE_UNAVAILABLE"
        audit_log.down = False
        assert _report(fake, token_id, "alice-secret").status_code == 200
        assert _report(fake, token_id, "alice-secret").status_code == 409
    service.close()
    assert [e.body["event"] for e in audit_log.entries()].count("result") == 1
