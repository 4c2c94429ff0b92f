"""Executor-side verification, framework-free: every refusal has its code, status and record."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from execauth_core import AllowListPolicy, Authority, AuthorizationRequest, FixedClock, KeySet, LocalSigner
from execauth_core._b64 import b64url_encode
from execauth_core.canonical import canonicalize
from execauth_core.errors import ConfigurationError, StoreUnavailable
from execauth_core.executor import (
    Executor,
    ExecutorDenied,
    HTTPCall,
    RouteTable,
    executor_body,
    executor_headers,
)
from execauth_core.stores.memory import MemoryAuditLog, MemoryReplayStore

from .conftest import RFC8032_SEED_1, RFC8032_SEED_2, T0

AUD = "tools.example"
ISS = "execauth-test"
ROUTES = {("POST", "/tools/send"): "send", ("POST", "/tools/search"): "search", ("PUT", "/tools/put"): "put"}


class World:
    def __init__(self) -> None:
        self.clock = FixedClock(T0)
        self.signer = LocalSigner(RFC8032_SEED_1)
        self.audit = MemoryAuditLog()
        self.replay = MemoryReplayStore()
        self.executor = Executor(
            KeySet.of_signer(self.signer),
            audience=AUD,
            issuer=ISS,
            replay_store=self.replay,
            audit_log=self.audit,
            routes=ROUTES,
            clock=self.clock,
            max_body_bytes=1000,
        )

    def token(self, req: AuthorizationRequest, *, audience: str = AUD, signer: LocalSigner | None = None) -> str:
        authority = Authority(
            AllowListPolicy(["send", "search", "put"]), signer or self.signer, issuer=ISS, audience=audience
        )
        decision = authority.decide(req, now=self.clock.now(), token_id=secrets.token_urlsafe(18))
        assert decision.token is not None
        return decision.token

    def call(self, req: AuthorizationRequest, token: str | None = None, **over: Any) -> HTTPCall:
        headers = executor_headers(req, token or self.token(req))
        headers.update(over.pop("headers", {}))
        headers = {k: v for k, v in headers.items() if v is not None}
        return HTTPCall.of(
            over.pop("method", "POST"),
            over.pop("path", "/tools/" + req.tool),
            headers,
            over.pop("body", executor_body(req)),
            query=over.pop("query", ""),
        )

    def refused(self, call: HTTPCall) -> ExecutorDenied:
        before = sum(1 for _ in self.audit.entries())
        with pytest.raises(ExecutorDenied) as info:
            self.executor.admit(call)
        entries = list(self.audit.entries())
        assert len(entries) == before + 1
        assert (entries[-1].event, entries[-1].executed) == ("denial", False)
        assert entries[-1].body["reason_codes"][0] == info.value.reason_code
        assert info.value.audit_seq == entries[-1].seq
        return info.value


@pytest.fixture
def world() -> World:
    return World()


def req(tool: str = "send", **args: Any) -> AuthorizationRequest:
    return AuthorizationRequest(tool=tool, args=args or {"to": "bob", "amount": "10.00"}, principal="alice")


def test_admits_the_exact_call_once(world: World) -> None:
    r = req()
    call = world.call(r)
    verified = world.executor.admit(call)
    assert verified.request == r and verified.args == r.args
    assert verified.proposal_digest == r.content_digest()
    entry = list(world.audit.entries())[-1]
    assert (entry.event, entry.executed, entry.body["token_id"]) == ("execution", True, verified.claims.jti)
    assert entry.body["detail"] == {"executor": AUD, "method": "POST", "path": "/tools/send"}
    denied = world.refused(call)
    assert (denied.status, denied.reason_code) == (409, "TOKEN_REPLAYED")


def test_the_body_may_be_any_json_spelling_of_the_same_args(world: World) -> None:
    r = req(amount="10.00", to="bob")
    call = world.call(r, body=b'{ "to": "bob",\n "amount": "10.00" }')
    assert world.executor.admit(call).args == {"to": "bob", "amount": "10.00"}


def test_empty_body_means_no_args(world: World) -> None:
    r = AuthorizationRequest(tool="search", args={}, principal="alice")
    assert world.executor.admit(world.call(r, body=b"", headers={"Content-Type": None})).args == {}


def test_the_guard_consuming_the_same_jti_does_not_collide(world: World) -> None:
    r = req()
    token = world.token(r)
    from execauth_core.tokens import unverified_claims

    jti = unverified_claims(token)["jti"]
    assert world.replay.consume(jti, expires_at=T0 + 60, now=T0)  # the guard's own use
    world.executor.admit(world.call(r, token))


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"headers": {"Authorization": None}}, 401, "NO_TOKEN"),
        ({"headers": {"Authorization": "Bearer abc"}}, 401, "NO_TOKEN"),
        ({"headers": {"Authorization": "ExecAuth "}}, 401, "NO_TOKEN"),
        ({"headers": {"Authorization": "ExecAuth a.b.c"}}, 403, "TOKEN_MALFORMED"),
        ({"body": b'{"to": "eve", "amount": "10.00"}'}, 403, "TOKEN_PROPOSAL_MISMATCH"),
        ({"path": "/tools/search"}, 403, "TOKEN_SCOPE_MISMATCH"),
        ({"method": "PUT"}, 403, "UNKNOWN_TOOL"),
        ({"path": "/tools/send/"}, 403, "UNKNOWN_TOOL"),
        ({"query": "to=eve"}, 400, "REQUEST_INVALID"),
        ({"headers": {"ExecAuth-Proposal": None}}, 400, "REQUEST_INVALID"),
        ({"headers": {"ExecAuth-Proposal": "!!"}}, 400, "REQUEST_INVALID"),
        ({"headers": {"Content-Type": "text/plain"}}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ({"headers": {"Content-Type": "application/json; charset=latin-1"}}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ({"headers": {"Content-Type": None}}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ({"body": b'{"to": "bob", "to": "eve", "amount": "10.00"}'}, 400, "REQUEST_INVALID"),
        ({"body": b'{"to": '}, 400, "REQUEST_INVALID"),
        ({"body": b'["bob"]'}, 400, "REQUEST_INVALID"),
        ({"body": b'{"n": NaN}'}, 400, "REQUEST_INVALID"),
        ({"body": b'{"x": "' + b"a" * 2000 + b'"}'}, 413, "REQUEST_TOO_LARGE"),
        ({"headers": {"Content-Length": "5000"}}, 413, "REQUEST_TOO_LARGE"),
    ],
)
def test_refusals(world: World, change: dict[str, Any], status: int, code: str) -> None:
    denied = world.refused(world.call(req(), **change))
    assert (denied.status, denied.reason_code) == (status, code)
    assert denied.to_json() == {"error": denied.message, "reason_code": code}
    assert not any(e.executed for e in world.audit.entries())


def test_forged_expired_and_foreign_tokens(world: World) -> None:
    r = req()
    forged = world.token(r, signer=LocalSigner(RFC8032_SEED_2))
    assert world.refused(world.call(r, forged)).reason_code == "TOKEN_KID_UNKNOWN"
    good = world.token(r)
    header, payload, sig = good.split(".")
    flipped = header + "." + payload + "." + ("A" if sig[0] != "A" else "B") + sig[1:]
    assert world.refused(world.call(r, flipped)).reason_code == "TOKEN_SIGNATURE_INVALID"
    other = world.token(r, audience="another-executor")
    assert world.refused(world.call(r, other)).reason_code == "TOKEN_AUDIENCE_MISMATCH"
    world.clock.advance(3600)
    denied = world.refused(world.call(r, good))
    assert (denied.status, denied.reason_code) == (403, "TOKEN_EXPIRED")


def test_a_proposal_header_that_changes_the_principal_is_refused(world: World) -> None:
    r = req()
    token = world.token(r)
    other = r.model_copy(update={"principal": "mallory"})
    denied = world.refused(world.call(other, token))
    assert denied.reason_code == "TOKEN_PROPOSAL_MISMATCH"


def test_a_proposal_header_with_args_is_refused(world: World) -> None:
    r = req()
    fields = r.model_dump(mode="json")
    denied = world.refused(world.call(r, headers={"ExecAuth-Proposal": b64url_encode(canonicalize(fields))}))
    assert (denied.status, denied.reason_code) == (400, "REQUEST_INVALID")


def test_repeated_authorization_headers_are_refused(world: World) -> None:
    r = req()
    headers = [(k, v) for k, v in executor_headers(r, world.token(r)).items()]
    headers.append(("authorization", "ExecAuth x.y.z"))
    denied = world.refused(HTTPCall.of("POST", "/tools/send", headers, executor_body(r)))
    assert denied.reason_code == "REQUEST_INVALID"


class DownReplay:
    def consume(self, token_id: str, *, expires_at: int, now: int) -> bool:
        raise StoreUnavailable("replay store down")


class DownAudit(MemoryAuditLog):
    def append(self, event: Any) -> Any:
        raise StoreUnavailable("audit log down")


def test_store_outage_refuses_with_503(world: World) -> None:
    world.executor.replay_store = DownReplay()  # type: ignore[assignment]
    denied = world.refused(world.call(req()))
    assert (denied.status, denied.reason_code) == (503, "STORE_UNAVAILABLE")


def test_audit_outage_refuses_and_says_it_could_not_record(world: World) -> None:
    world.executor.audit_log = DownAudit()
    with pytest.raises(ExecutorDenied) as info:
        world.executor.admit(world.call(req()))
    assert info.value.status == 503
    assert info.value.reason_codes == ("AUDIT_UNAVAILABLE", "AUDIT_UNAVAILABLE")
    assert info.value.audit_seq is None


def test_verify_checks_without_consuming(world: World) -> None:
    call = world.call(req())
    claims = world.executor.verify(call)
    assert claims.aud == AUD
    world.executor.admit(call)  # verify did not consume


def test_check_head_refuses_early_and_records(world: World) -> None:
    r = req()
    assert world.executor.check_head(world.call(r)) == "send"
    with pytest.raises(ExecutorDenied) as info:
        world.executor.check_head(world.call(r, headers={"Authorization": None}))
    assert info.value.status == 401
    assert list(world.audit.entries())[-1].body["reason_codes"] == ["NO_TOKEN"]


def test_record_result(world: World) -> None:
    verified = world.executor.admit(world.call(req()))
    world.executor.record_result(verified, status="ok", http_status=200)
    last = list(world.audit.entries())[-1]
    assert last.body["event"] == "result"
    assert last.body["detail"] == {"status": "ok", "execution_seq": verified.audit_seq, "http_status": 200}


def test_route_table_pins_one_route_per_tool() -> None:
    with pytest.raises(ConfigurationError, match="already has a route"):
        RouteTable({("POST", "/a"): "t", ("GET", "/a"): "t"})
    with pytest.raises(ConfigurationError):
        RouteTable({("POST", "a"): "t"})
    with pytest.raises(ConfigurationError):
        RouteTable({("POST", "/a?x=1"): "t"})
    table = RouteTable({("post", "/a"): "t"})
    assert table.tool("POST", "/a") == "t" and table.route("t") == ("POST", "/a")
    assert ("POST", "/a") in table and len(table) == 1


def test_executor_headers_needs_a_token() -> None:
    with pytest.raises(ConfigurationError):
        executor_headers(req(), "")


def test_head_problem_finds_without_recording(world: World) -> None:
    r = req()
    assert world.executor.head_problem(world.call(r)) is None
    problem = world.executor.head_problem(world.call(r, headers={"Content-Type": "text/plain"}))
    assert problem is not None and problem[0] == "UNSUPPORTED_MEDIA_TYPE" and problem[2] == "send"
    assert list(world.audit.entries()) == []
