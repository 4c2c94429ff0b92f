"""Guard.remote / RemoteAuthority / JWKSKeys against real uvicorn servers, including
authorities that fail or lie: each is a recorded denial and the tool never runs."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from execauth_core import (
    AllowListPolicy,
    Authority,
    AuthorizationRequest,
    ExecutionDenied,
    Guard,
    KeySet,
    LocalSigner,
)
from execauth_core.canonical import canonicalize
from execauth_core.remote import JWKSKeys, RemoteAuthority
from execauth_server.config import hash_secret
from execauth_server.testing import running_server, serving, stop

_open: list[Guard] = []


@pytest.fixture(autouse=True)
def _close_guards() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def remote(url: str, **kw: Any) -> Guard:
    """Guard.remote, closed (HTTP pool, stores) after the test."""
    guard = Guard.remote(url, **kw)
    _open.append(guard)
    return guard


class Tool:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return "ran"


def denied(guard: Guard, tool: str = "search_docs", args: dict[str, Any] | None = None, **kw: Any) -> ExecutionDenied:
    fn = Tool()
    request = guard.proposal(tool, args or {"q": "x"}, principal=kw.pop("principal", "alice"), agent="helper")
    with pytest.raises(ExecutionDenied) as info:
        guard.run(request, fn)
    assert fn.calls == 0, "the tool ran"
    last = list(guard.audit_log.entries())[-1].body
    assert last["event"] == "denial" and last["executed"] is False
    assert list(info.value.reason_codes) == last["reason_codes"]
    return info.value


def test_allow_runs_deny_does_not(server_config: dict[str, Any]) -> None:
    with running_server(server_config) as srv:
        guard = remote(srv.url, credential=srv.credential)
        tool = Tool()
        req = guard.proposal("search_docs", {"q": "x"}, principal="alice", agent="helper")
        assert guard.run(req, tool) == "ran" and tool.calls == 1
        entries = [e.body for e in guard.audit_log.entries()]
        assert entries[0]["event"] == "execution" and entries[0]["executed"] is True
        assert "TOOL_NOT_ALLOWED" in denied(guard, "drop_table", {"table": "t"}).reason_codes
        # the server refuses a principal the credential is not bound to
        bound = {"name": "b", "secret_sha256": hash_secret("bob-only"), "principals": ["bob"]}
    with running_server({**server_config, "callers": [bound]}) as srv:
        assert denied(remote(srv.url, credential="bob-only")).reason_codes == ("CALLER_NOT_BOUND",)
        assert denied(remote(srv.url, credential="nope")).reason_codes == ("CALLER_UNAUTHENTICATED",)


def test_the_agent_process_holds_no_signing_key(server_config: dict[str, Any]) -> None:
    with running_server(server_config) as srv:
        guard = remote(srv.url, credential=srv.credential)
        assert isinstance(guard.authority, RemoteAuthority)
        assert not hasattr(guard.authority, "signer") and srv.credential not in repr(guard.authority)


def test_authority_down_mid_run_is_a_recorded_denial(server_config: dict[str, Any]) -> None:
    with running_server(server_config) as srv:
        guard = remote(srv.url, credential=srv.credential, timeout=2)
        assert guard.run(guard.proposal("search_docs", {"q": "a"}, principal="alice", agent="helper"), Tool()) == "ran"
    # the server is gone now
    assert denied(guard).reason_codes == ("AUTHORITY_UNAVAILABLE",)


def test_killed_multiworker_authority_is_a_recorded_denial(server_config: dict[str, Any]) -> None:
    with running_server(server_config, workers=2) as srv:
        guard = remote(srv.url, credential=srv.credential, timeout=2)
        assert guard.run(guard.proposal("search_docs", {"q": "a"}, principal="alice", agent="helper"), Tool()) == "ran"
        assert srv.process is not None
        stop(srv.process, kill=True)
        assert denied(guard).reason_codes == ("AUTHORITY_UNAVAILABLE",)


def test_policy_check_on_presented_tokens_asks_the_service(server_config: dict[str, Any]) -> None:
    with running_server(server_config) as srv:
        guard = remote(srv.url, credential=srv.credential)
        req = guard.proposal("search_docs", {"q": "x"}, principal="alice", agent="helper")
        token = guard.authorize(req).token
        other = remote(srv.url, credential=srv.credential)  # never decided anything itself
        assert other.execute(req, token, Tool()) == "ran"


# -- authorities that misbehave --------------------------------------------------


class Liar:
    """A real HTTP authority whose answers a test can spoil."""

    def __init__(self) -> None:
        self.signer = LocalSigner.generate()
        self.authority = Authority(
            AllowListPolicy(["search_docs"]), self.signer, issuer="execauth-server", audience="execauth-guard"
        )
        self.spoil: Callable[[dict[str, Any], AuthorizationRequest], Any] = lambda d, r: d
        self.delay = 0.0
        self.in_flight = 0
        self.most_in_flight = 0
        routes = [
            Route("/v1/decide", self.decide, methods=["POST"]),
            Route("/.well-known/jwks.json", self.jwks, methods=["GET"]),
        ]
        self.app = Starlette(routes=routes)

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(KeySet.of_signer(self.signer).to_jwks())

    async def decide(self, request: Request) -> Response:
        req = AuthorizationRequest.model_validate_json(await request.body())
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        decision = self.authority.decide(req, now=int(time.time()), token_id=secrets.token_hex(12))
        spoiled = self.spoil(json.loads(decision.canonical_bytes()), req)
        if isinstance(spoiled, Response):
            return spoiled
        return Response(canonicalize(spoiled), media_type="application/json")


@pytest.fixture
def liar() -> Iterator[tuple[Liar, Guard]]:
    lie = Liar()
    with serving(lie.app) as url:
        yield lie, remote(url, credential="anything", timeout=1)


def _forge_token(d: dict[str, Any], r: AuthorizationRequest) -> dict[str, Any]:
    other = Authority(
        AllowListPolicy(["search_docs"]), LocalSigner.generate(), issuer="execauth-server", audience="execauth-guard"
    )
    d["token"] = other.decide(r, now=int(time.time()), token_id="t" * 24).token
    return d


def _token_for_other_args(d: dict[str, Any], r: AuthorizationRequest, lie: Liar) -> dict[str, Any]:
    other = r.model_copy(update={"args": {"q": "something else"}})
    d["token"] = lie.authority.decide(other, now=int(time.time()), token_id="t" * 24).token
    return d


@pytest.mark.parametrize(
    ("spoil", "code"),
    [
        (lambda d, r: Response("oops", status_code=500), "AUTHORITY_UNAVAILABLE"),
        (lambda d, r: Response("bad gateway", status_code=502), "AUTHORITY_UNAVAILABLE"),
        (lambda d, r: Response(b"not json", media_type="application/json"), "AUTHORITY_ANSWER_INVALID"),
        (lambda d, r: Response(b'{"outcome": "ALLOW"}', media_type="application/json"), "AUTHORITY_ANSWER_INVALID"),
        (lambda d, r: {**d, "record_signature": d["record_signature"][:-4] + "AAAA"}, "AUTHORITY_ANSWER_INVALID"),
        (lambda d, r: {**d, "proposal_digest": "sha256:" + "0" * 64}, "AUTHORITY_ANSWER_INVALID"),
        (lambda d, r: {**d, "token": None}, "AUTHORITY_ANSWER_INVALID"),
        (lambda d, r: {**d, "token": d["token"].rsplit(".", 1)[0] + "."}, "AUTHORITY_ANSWER_INVALID"),
        (_forge_token, "AUTHORITY_ANSWER_INVALID"),
    ],
    ids=[
        "500",
        "502",
        "not-json",
        "not-a-decision",
        "record-signature",
        "other-proposal",
        "allow-without-token",
        "unsigned-token",
        "forged-token",
    ],
)
def test_a_bad_answer_is_a_recorded_denial(liar: tuple[Liar, Guard], spoil: Any, code: str) -> None:
    lie, guard = liar
    lie.spoil = spoil
    assert denied(guard).reason_codes == (code,)


def test_a_token_for_another_proposal_is_refused(liar: tuple[Liar, Guard]) -> None:
    lie, guard = liar
    lie.spoil = lambda d, r: _token_for_other_args(d, r, lie)
    assert denied(guard).reason_codes == ("AUTHORITY_ANSWER_INVALID",)


def test_an_honest_liar_is_believed(liar: tuple[Liar, Guard]) -> None:
    """The checks above refuse the spoiled answers, not every answer."""
    _, guard = liar
    assert guard.run(guard.proposal("search_docs", {"q": "x"}, principal="alice"), Tool()) == "ran"


def test_a_slow_authority_times_out_into_a_denial(liar: tuple[Liar, Guard]) -> None:
    lie, guard = liar
    lie.delay = 2.0
    started = time.monotonic()
    assert denied(guard).reason_codes == ("AUTHORITY_UNAVAILABLE",)
    assert time.monotonic() - started < 1.9


def test_async_decide(server_config: dict[str, Any]) -> None:
    with running_server(server_config) as srv:
        authority = RemoteAuthority(srv.url, credential=srv.credential)
        req = AuthorizationRequest(tool="search_docs", args={"q": "x"}, principal="alice", agent="helper")

        async def go() -> Any:
            try:
                return await authority.adecide(req, now=int(time.time()))
            finally:
                await authority.aclose()

        assert asyncio.run(go()).outcome.value == "ALLOW"


# -- keys ---------------------------------------------------------------------


def test_key_rotation_is_picked_up_from_the_jwks(server_config: dict[str, Any], tmp_path: Any) -> None:
    key_a, key_b = LocalSigner.generate(), LocalSigner.generate()
    key_a.save(tmp_path / "a.key")
    key_b.save(tmp_path / "b.key")
    with running_server({**server_config, "key_file": str(tmp_path / "a.key")}) as srv:
        port = srv.port
        guard = remote(srv.url, credential=srv.credential)
        keys = guard.verifier.keys
        assert isinstance(keys, JWKSKeys)
        keys.min_refresh_interval = 0.0
        assert guard.run(guard.proposal("search_docs", {"q": "1"}, principal="alice", agent="helper"), Tool()) == "ran"
        assert keys.get(key_a.kid) is not None and keys.get(key_b.kid) is None
    config = {
        **server_config,
        "key_file": str(tmp_path / "b.key"),
        "callers": [{"name": "c", "secret_sha256": hash_secret("rotated"), "principals": ["*"]}],
    }
    with running_server(config, port=port):
        guard.authority._credential = "rotated"  # type: ignore[union-attr]  # same workload, its new secret
        assert guard.run(guard.proposal("search_docs", {"q": "2"}, principal="alice", agent="helper"), Tool()) == "ran"
        assert keys.get(key_b.kid) is not None and keys.get(key_a.kid) is None  # A is gone from the JWKS


def test_unknown_kids_refresh_at_a_limited_rate(server_config: dict[str, Any]) -> None:
    with running_server(server_config) as srv:
        keys = JWKSKeys(srv.jwks_url, min_refresh_interval=60)
        assert len(keys) == 1 and keys.fetches == 1
        for _ in range(20):
            assert keys.get("forged-kid-" + "x" * 10) is None
        assert keys.fetches == 1  # no stampede on the service


def test_pins_restrict_the_trusted_kids(server_config: dict[str, Any]) -> None:
    with running_server(server_config) as srv:
        served = KeySet.from_jwks(json.loads(__import__("httpx").get(srv.jwks_url).content))
        kid = next(iter(served)).kid
        assert JWKSKeys(srv.jwks_url, pins={kid}).get(kid) is not None
        assert JWKSKeys(srv.jwks_url, pins={"another"}).get(kid) is None


def test_a_key_carried_in_the_token_header_is_never_used(liar: tuple[Liar, Guard]) -> None:
    import base64

    lie, guard = liar

    def with_jwk(d: dict[str, Any], r: AuthorizationRequest) -> dict[str, Any]:
        head, payload, sig = d["token"].split(".")
        header = json.loads(base64.urlsafe_b64decode(head + "=="))
        header["jwk"] = KeySet.of_signer(lie.signer).to_jwks()["keys"][0]
        d["token"] = base64.urlsafe_b64encode(canonicalize(header)).rstrip(b"=").decode() + "." + payload + "." + sig
        return d

    lie.spoil = with_jwk
    assert denied(guard).reason_codes == ("AUTHORITY_ANSWER_INVALID",)


def test_a_policy_change_stops_unused_tokens(server_config: dict[str, Any], tmp_path: Any) -> None:
    from pathlib import Path

    with running_server(server_config) as srv:
        port = srv.port
        guard = remote(srv.url, credential=srv.credential)
        req = guard.proposal("search_docs", {"q": "x"}, principal="alice", agent="helper")
        token = guard.authorize(req).token
    policy = Path(server_config["policy"])
    policy.write_text(policy.read_text().replace("epoch: 1", "epoch: 2"))
    with running_server({**server_config, "data_dir": str(tmp_path / "data")}, port=port) as srv:
        later = remote(srv.url, credential=srv.credential)
        tool = Tool()
        with pytest.raises(ExecutionDenied) as info:
            later.execute(req, token, tool)
        assert info.value.reason_codes == ("TOKEN_POLICY_STALE",) and tool.calls == 0


def test_remote_guard_keeps_its_records_in_its_own_stores(server_config: dict[str, Any], tmp_path: Any) -> None:
    from execauth_core.stores.sqlite import SQLiteAuditLog

    with running_server(server_config) as srv:
        guard = remote(srv.url, credential=srv.credential, data_dir=tmp_path / "agent")
        assert guard.run(guard.proposal("search_docs", {"q": "x"}, principal="alice", agent="helper"), Tool()) == "ran"
        with pytest.raises(Exception, match="cannot grant approvals"):
            guard.approve(None, approver="someone")  # type: ignore[arg-type]
    log = SQLiteAuditLog(tmp_path / "agent" / "execauth.db")
    try:
        assert [e.event for e in log.entries()] == ["execution", "result"]
    finally:
        log.close()
    assert not list((tmp_path / "agent").glob("*.key"))  # no key on the agent's side


def test_the_envelope_carries_an_approval(server_config: dict[str, Any]) -> None:
    import httpx

    with running_server(server_config) as srv:
        h = {"Authorization": f"Bearer {srv.credential}"}
        req = {"tool": "search_docs", "args": {"q": "x"}, "principal": "alice", "agent": "helper"}
        r = httpx.post(srv.url + "/v1/decide", json={"request": req, "approval": None}, headers=h)
        assert r.status_code == 200 and r.json()["outcome"] == "ALLOW"
        r = httpx.post(srv.url + "/v1/decide", json={"request": req, "extra": 1}, headers=h)
        assert r.status_code == 400 and r.json()["reason_code"] == "REQUEST_INVALID"
        bad = {
            "grant_id": "g" * 20,
            "proposal_digest": "sha256:" + "0" * 64,
            "approver": "x",
            "granted_at": 1,
            "expires_at": 2,
            "kid": "k",
            "signature": "AA",
        }
        r = httpx.post(srv.url + "/v1/decide", json={"request": req, "approval": bad}, headers=h)
        assert r.status_code == 200 and r.json()["record"]["approved"] is False  # a bad grant approves nothing


def test_a_retired_key_published_beside_the_new_one_still_verifies_its_tokens(
    server_config: dict[str, Any], tmp_path: Any
) -> None:
    from execauth_core import KeyStatus, TokenError, TokenVerifier

    key_a, key_b = LocalSigner.generate(), LocalSigner.generate()
    key_a.save(tmp_path / "a.key")
    key_b.save(tmp_path / "b.key")
    with running_server({**server_config, "key_file": str(tmp_path / "a.key")}) as srv:
        port = srv.port
        guard = remote(srv.url, credential=srv.credential)
        req = guard.proposal("search_docs", {"q": "x"}, principal="alice", agent="helper")
        token = guard.authorize(req).token
    now = int(time.time())
    retired = KeySet.of_signer(key_a)
    retired.set_status(key_a.kid, KeyStatus.RETIRED, at=now)
    (tmp_path / "retired.json").write_text(json.dumps(retired.to_jwks()))
    config = {**server_config, "key_file": str(tmp_path / "b.key"), "extra_keys": str(tmp_path / "retired.json")}
    with running_server(config, port=port) as srv:
        executor = TokenVerifier(keys=JWKSKeys(srv.jwks_url), issuer="execauth-server", audience="execauth-guard")
        assert executor.verify(token, request=req, now=now).jti  # signed before A retired
        forged_later = Authority(
            AllowListPolicy(["search_docs"]), key_a, issuer="execauth-server", audience="execauth-guard"
        )
        late = forged_later.decide(req, now=now + 5, token_id="l" * 24).token
        with pytest.raises(TokenError) as info:
            executor.verify(late, request=req, now=now + 5)  # a stolen retired key signs nothing new
        assert info.value.reason_code == "TOKEN_KEY_INACTIVE"


# -- the async guard path -------------------------------------------------------


def test_async_guard_calls_overlap_while_the_authority_thinks(liar: tuple[Liar, Guard]) -> None:
    """``arun`` awaits ``RemoteAuthority.adecide``: two calls in one event loop wait for
    a slow authority together, not one after the other (the loop is not blocked)."""
    lie, guard = liar
    lie.delay = 0.5
    tool = Tool()
    requests = [guard.proposal("search_docs", {"q": str(i)}, principal="alice", agent="helper") for i in range(2)]

    async def go() -> tuple[list[str], float]:
        started = time.monotonic()
        try:
            results = await asyncio.gather(*(guard.arun(r, tool) for r in requests))
        finally:
            await guard.authority.aclose()  # type: ignore[union-attr]
        return list(results), time.monotonic() - started

    results, took = asyncio.run(go())
    assert results == ["ran", "ran"] and tool.calls == 2
    # Both decides were in the authority at once (counted there, not timed here).
    assert lie.most_in_flight == 2, f"the decides did not overlap ({took:.2f} s for two)"
    executed = [e.body for e in guard.audit_log.entries() if e.body["event"] == "execution"]
    assert len(executed) == 2


@pytest.mark.parametrize(
    ("spoil", "code"),
    [
        (lambda d, r: Response("oops", status_code=500), "AUTHORITY_UNAVAILABLE"),
        (lambda d, r: Response(b"not json", media_type="application/json"), "AUTHORITY_ANSWER_INVALID"),
        (lambda d, r: {**d, "record_signature": d["record_signature"][:-4] + "AAAA"}, "AUTHORITY_ANSWER_INVALID"),
        (lambda d, r: {**d, "proposal_digest": "sha256:" + "0" * 64}, "AUTHORITY_ANSWER_INVALID"),
        (lambda d, r: {**d, "token": None}, "AUTHORITY_ANSWER_INVALID"),
        (_forge_token, "AUTHORITY_ANSWER_INVALID"),
        ("slow", "AUTHORITY_UNAVAILABLE"),
        ("down", "AUTHORITY_UNAVAILABLE"),
    ],
    ids=[
        "500",
        "not-json",
        "record-signature",
        "other-proposal",
        "allow-without-token",
        "forged-token",
        "slow",
        "down",
    ],
)
def test_async_guard_failures_are_recorded_denials(liar: tuple[Liar, Guard], spoil: Any, code: str) -> None:
    lie, guard = liar
    if spoil == "slow":
        lie.delay = 2.0
    elif spoil == "down":
        guard.authority.url = "http://127.0.0.1:9"  # type: ignore[union-attr]  # nothing listens there
    else:
        lie.spoil = spoil
    tool = Tool()
    request = guard.proposal("search_docs", {"q": "x"}, principal="alice", agent="helper")

    async def go() -> ExecutionDenied:
        try:
            with pytest.raises(ExecutionDenied) as info:
                await guard.arun(request, tool)
            return info.value
        finally:
            await guard.authority.aclose()  # type: ignore[union-attr]

    denial = asyncio.run(go())
    assert tool.calls == 0, "the tool ran"
    assert denial.reason_codes == (code,)
    last = list(guard.audit_log.entries())[-1].body
    assert last["event"] == "denial" and last["executed"] is False and last["reason_codes"] == [code]


def test_async_guard_cancelled_while_deciding_records_a_denial(liar: tuple[Liar, Guard]) -> None:
    lie, guard = liar
    lie.delay = 0.5
    tool = Tool()
    request = guard.proposal("search_docs", {"q": "x"}, principal="alice", agent="helper")

    async def go() -> None:
        try:
            task = asyncio.ensure_future(guard.arun(request, tool))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            await guard.authority.aclose()  # type: ignore[union-attr]

    asyncio.run(go())
    assert tool.calls == 0
    last = list(guard.audit_log.entries())[-1].body
    assert last["event"] == "denial" and last["executed"] is False and last["reason_codes"] == ["GUARD_ERROR"]


def test_jwks_keys_stop_trusting_a_set_older_than_max_stale(server_config: dict[str, Any]) -> None:
    """An unreachable authority: cached keys verify until ``max_stale`` after the last
    fetch that worked, then nothing does (KEYSET_MISSING); a working fetch restores them."""
    from execauth_core import TokenVerifier
    from execauth_core.errors import TokenError

    req = AuthorizationRequest(tool="search_docs", args={"q": "x"}, principal="alice", agent="helper")
    with running_server({**server_config, "token_ttl": 60}, port=0) as srv:
        port = srv.port
        authority = RemoteAuthority(srv.url, credential=srv.credential)
        try:
            token = authority.decide(req, now=int(time.time())).token
        finally:
            authority.close()
        assert token
        keys = JWKSKeys(srv.jwks_url, max_age=0.2, max_stale=3.0, min_refresh_interval=0.1, timeout=1)
        verifier = TokenVerifier(keys=keys, issuer="execauth-server", audience="execauth-guard")
        assert verifier.verify(token, request=req, now=int(time.time())).jti
        kid = next(iter(keys)).kid
        last_fetch_by = time.monotonic()  # the last fetch that worked happened before this
    # The authority is gone: the cached key still serves within max_stale (stopping the
    # server may take a while on a loaded machine, so the sleeps count from the fetch)...
    time.sleep(max(0.0, last_fetch_by + 0.4 - time.monotonic()))
    assert time.monotonic() - last_fetch_by < 3.0, "the server took too long to stop to test the window"
    assert verifier.verify(token, request=req, now=int(time.time())).jti
    assert keys.fetches >= 2  # it did try to refresh, and failed
    # ...and not after it.
    time.sleep(max(0.0, last_fetch_by + 3.1 - time.monotonic()))
    with pytest.raises(TokenError) as info:
        verifier.verify(token, request=req, now=int(time.time()))
    assert info.value.reason_code == "KEYSET_MISSING"
    assert len(keys) == 0 and keys.get(kid) is None
    # Back on the same port (same data dir, same key): trusted again.
    with running_server({**server_config, "token_ttl": 60}, port=port):
        time.sleep(0.2)
        assert verifier.verify(token, request=req, now=int(time.time())).jti


def test_max_stale_is_at_least_max_age() -> None:
    from execauth_core.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        JWKSKeys("http://127.0.0.1:9/jwks.json", max_age=60, max_stale=10)


def test_one_approval_buys_one_token_at_the_service(server_config: dict[str, Any], tmp_path: Any) -> None:
    """Issue 16 finding, service side: the same grant presented twice to /v1/decide gets
    one ALLOW; the second is a recorded 409 APPROVAL_USED, so an executor that checks
    tokens itself never sees two tokens for one person's decision."""
    from pathlib import Path

    import httpx

    from execauth_core import AuthorizationRequest, PendingApproval

    signer = LocalSigner.generate()
    signer.save(tmp_path / "authority.key")
    policy = Path(server_config["policy"])
    policy.write_text(
        "id: approvals\nepoch: 1\nprincipals:\n"
        "  - id: alice\n    agents: [helper]\n    allow_tools: [search_docs]\n"
        "    require_approval_effects: [data.read]\n"
    )
    config = {**server_config, "key_file": str(tmp_path / "authority.key")}
    req = {"tool": "search_docs", "args": {"q": "payroll"}, "principal": "alice", "agent": "helper"}
    with running_server(config) as srv:
        h = {"Authorization": f"Bearer {srv.credential}"}
        first = httpx.post(srv.url + "/v1/decide", json=req, headers=h, timeout=10)
        assert first.status_code == 200 and first.json()["outcome"] == "REQUIRE_APPROVAL"
        request = AuthorizationRequest.model_validate(req)
        pending = PendingApproval(
            request=request,
            proposal_digest=request.content_digest(),
            reason_codes=("APPROVAL_REQUIRED",),
            requested_at=int(time.time()),
        )
        authority = Authority(AllowListPolicy([]), signer, issuer="x", audience="y")
        grant = authority.grant_approval(pending, approver="carol", now=int(time.time()), grant_id="g" * 24)
        envelope = {"request": req, "approval": json.loads(grant.canonical_bytes())}
        allowed = httpx.post(srv.url + "/v1/decide", json=envelope, headers=h, timeout=10)
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["outcome"] == "ALLOW" and allowed.json()["token"]
        again = httpx.post(srv.url + "/v1/decide", json=envelope, headers=h, timeout=10)
        assert again.status_code == 409 and again.json()["reason_code"] == "APPROVAL_USED"
        assert "token" not in again.json()
        head = httpx.get(srv.url + "/v1/audit/head", headers=h, timeout=10).json()
    from execauth_core.stores.sqlite import SQLiteAuditLog

    log = SQLiteAuditLog(Path(srv.data_dir) / "execauth.db")
    try:
        last = list(log.entries())[-1].body
    finally:
        log.close()
    assert head and (last["event"], last["executed"], last["reason_codes"]) == ("denial", False, ["APPROVAL_USED"])


def test_remote_guard_on_an_unusable_data_dir_is_a_configuration_error(tmp_path: Any) -> None:
    """As Guard.local (issue 15 item 15): a path that cannot be a folder is named in a
    ConfigurationError, not a raw OSError. No server is needed: nothing is asked yet."""
    from execauth_core import ConfigurationError, Guard

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigurationError, match="a-file"):
        Guard.remote("http://127.0.0.1:9", credential="x", data_dir=blocker / "data")
