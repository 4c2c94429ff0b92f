"""The guard fails closed: every error path denies, records, and never calls the tool."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from execauth_core import (
    AllowListPolicy,
    ApprovalRequired,
    Capability,
    ExecutionDenied,
    FixedClock,
    Guard,
    StoreUnavailable,
    denial_message,
)
from execauth_core._b64 import b64url_decode
from execauth_core.canonical import digest_bytes, signing_input_bytes
from execauth_core.guard import _CAPABILITY_KEY

from .conftest import Tool

DEEP: Any = 1
for _ in range(70):
    DEEP = [DEEP]


def last(guard: Guard) -> Any:
    return list(guard.audit_log.entries())[-1]


def test_allowed_call_runs_once_and_is_recorded(make_guard: Callable[..., Guard], tool: Tool) -> None:
    guard = make_guard()
    req = guard.proposal("search", {"q": "x"}, principal="alice")
    assert guard.run(req, lambda: tool(**req.args)) == "done"
    assert tool.calls == [{"q": "x"}]
    events = [(e.event, e.executed) for e in guard.audit_log.entries()]
    assert events == [("execution", True), ("result", True)]
    assert last(guard).body["detail"] == {"status": "ok", "execution_seq": 1}


def test_denied_by_policy(make_guard: Callable[..., Guard], tool: Tool) -> None:
    guard = make_guard()
    req = guard.proposal("drop_table", {"name": "users"}, principal="alice")
    with pytest.raises(ExecutionDenied) as info:
        guard.run(req, lambda: tool(**req.args))
    assert tool.calls == []
    assert info.value.reason_codes == ("TOOL_NOT_ALLOWED",)
    entry = last(guard)
    assert (entry.event, entry.executed, entry.body["proposal_digest"]) == ("denial", False, req.content_digest())
    assert entry.seq == info.value.audit_seq
    assert "TOOL_NOT_ALLOWED" in denial_message(info.value)


def test_empty_policy_denies_everything(clock: FixedClock, tool: Tool) -> None:
    guard = Guard.local(AllowListPolicy([]), clock=clock)
    req = guard.proposal("search", {}, principal="alice")
    with pytest.raises(ExecutionDenied) as info:
        guard.run(req, lambda: tool())
    assert info.value.reason_codes == ("POLICY_EMPTY",) and tool.calls == []


class Boom(Exception):
    pass


class BrokenReplay:
    def consume(self, token_id: str, *, expires_at: int, now: int) -> bool:
        raise StoreUnavailable("connection refused")


class CrashingReplay:
    def consume(self, token_id: str, *, expires_at: int, now: int) -> bool:
        raise Boom("bug")


class WrongAnswerReplay:
    def consume(self, token_id: str, *, expires_at: int, now: int) -> bool:
        return None  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("store", "code"),
    [(BrokenReplay(), "STORE_UNAVAILABLE"), (CrashingReplay(), "GUARD_ERROR"), (WrongAnswerReplay(), "TOKEN_REPLAYED")],
)
def test_replay_store_failures_deny(make_guard: Callable[..., Guard], tool: Tool, store: Any, code: str) -> None:
    guard = make_guard()
    guard.replay_store = store
    req = guard.proposal("search", {}, principal="alice")
    with pytest.raises(ExecutionDenied) as info:
        guard.run(req, lambda: tool())
    assert info.value.reason_codes == (code,) and tool.calls == []
    assert (last(guard).event, last(guard).executed) == ("denial", False)


class FlakyAudit:
    """Accepts denials but fails to record executions."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def append(self, event: Any) -> Any:
        if event["event"] == "execution":
            raise StoreUnavailable("disk full")
        return self.inner.append(event)

    def entries(self, start: int = 1) -> Any:
        return self.inner.entries(start)

    def head(self) -> Any:
        return self.inner.head()


class DeadAudit:
    def append(self, event: Any) -> Any:
        raise StoreUnavailable("disk gone")

    def entries(self, start: int = 1) -> Any:
        return iter(())

    def head(self) -> Any:
        return (0, "")


def test_unrecordable_execution_does_not_run(make_guard: Callable[..., Guard], tool: Tool) -> None:
    guard = make_guard()
    guard.audit_log = FlakyAudit(guard.audit_log)
    req = guard.proposal("search", {}, principal="alice")
    with pytest.raises(ExecutionDenied) as info:
        guard.run(req, lambda: tool())
    assert tool.calls == [] and info.value.reason_codes == ("STORE_UNAVAILABLE",)
    assert (last(guard).event, last(guard).executed) == ("denial", False)


def test_dead_audit_log_still_denies(make_guard: Callable[..., Guard], tool: Tool) -> None:
    guard = make_guard()
    guard.audit_log = DeadAudit()
    req = guard.proposal("search", {}, principal="alice")
    with pytest.raises(ExecutionDenied) as info:
        guard.run(req, lambda: tool())
    assert tool.calls == []
    assert info.value.reason_codes == ("STORE_UNAVAILABLE", "AUDIT_UNAVAILABLE")
    assert info.value.audit_seq is None


class ExplodingPolicy(AllowListPolicy):
    def evaluate(self, request: Any, *, now: int, approved: bool, **kw: Any) -> Any:
        raise Boom("policy engine bug")


class LyingPolicy(AllowListPolicy):
    """Returns a non-Outcome value: must not be taken as ALLOW."""

    def evaluate(self, request: Any, *, now: int, approved: bool, **kw: Any) -> Any:
        from execauth_core import Evaluation

        return Evaluation("ALLOWED", ("X",), ("x",))  # type: ignore[arg-type]


class BrokenSigner:
    kid = "k"
    public_key = b"\0" * 32

    def sign(self, message: bytes) -> bytes:
        raise TimeoutError("HSM timed out")


@pytest.mark.parametrize("policy_cls", [ExplodingPolicy, LyingPolicy])
def test_decision_point_errors_deny(clock: FixedClock, tool: Tool, policy_cls: type) -> None:
    guard = Guard.local(policy_cls(["search"]), clock=clock)
    req = guard.proposal("search", {}, principal="alice")
    with pytest.raises(ExecutionDenied) as info:
        guard.run(req, lambda: tool())
    assert info.value.reason_codes == ("GUARD_ERROR",) and tool.calls == []


def test_signer_failure_denies(make_guard: Callable[..., Guard], tool: Tool) -> None:
    guard = make_guard()
    assert guard.authority is not None
    guard.authority.signer = BrokenSigner()
    req = guard.proposal("search", {}, principal="alice")
    with pytest.raises(ExecutionDenied) as info:
        guard.run(req, lambda: tool())
    assert info.value.reason_codes == ("GUARD_ERROR",) and tool.calls == []


def test_clock_failure_denies(make_guard: Callable[..., Guard], tool: Tool) -> None:
    guard = make_guard()
    calls = {"n": 0}

    class BadClock:
        def now(self) -> int:
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError("clock gone")
            return 1_767_225_600

    guard.clock = BadClock()
    req = guard.proposal("search", {}, principal="alice")
    with pytest.raises(ExecutionDenied):
        guard.run(req, lambda: tool())
    assert tool.calls == []


@pytest.mark.parametrize("bad", [None, {"tool": "search"}, "search", 42])
def test_not_a_request_denies(make_guard: Callable[..., Guard], tool: Tool, bad: Any) -> None:
    guard = make_guard()
    with pytest.raises(ExecutionDenied) as info:
        guard.run(bad, lambda: tool())
    assert info.value.reason_codes == ("REQUEST_INVALID",) and tool.calls == []
    assert last(guard).executed is False


@pytest.mark.parametrize(
    "args",
    [{"amount": float("nan")}, {"n": 2**60}, {"deep": DEEP}, {"x": object()}],
)
def test_unrepresentable_args_are_refused_at_the_boundary(
    make_guard: Callable[..., Guard], args: dict[str, Any]
) -> None:
    guard = make_guard()
    with pytest.raises(ExecutionDenied) as info:
        guard.proposal("search", args, principal="alice")
    assert info.value.reason_codes == ("REQUEST_INVALID",)
    entry = last(guard)
    assert (entry.event, entry.executed, entry.body["tool"]) == ("denial", False, "search")


@pytest.mark.parametrize("fields", [{"tool": ""}, {"tool": 5}, {"principal": ""}, {"manifest_digest": "md5:x"}])
def test_malformed_proposal_fields_are_recorded_denials(
    make_guard: Callable[..., Guard], fields: dict[str, Any]
) -> None:
    guard = make_guard()
    kwargs: dict[str, Any] = {"tool": "search", "args": {}, "principal": "alice", **fields}
    with pytest.raises(ExecutionDenied) as info:
        guard.proposal(kwargs.pop("tool"), kwargs.pop("args"), **kwargs)
    assert info.value.reason_codes == ("REQUEST_INVALID",) and last(guard).executed is False


def test_unregistered_reason_codes_from_a_decision_point_deny(clock: FixedClock, tool: Tool) -> None:
    from execauth_core import Evaluation, Outcome

    class Sloppy(AllowListPolicy):
        def evaluate(self, request: Any, *, now: int, approved: bool, **kw: Any) -> Any:
            return Evaluation(Outcome.ALLOW, ("LOOKS_FINE_TO_ME",), ("trust me",))

    guard = Guard.local(Sloppy(["search"]), clock=clock)
    req = guard.proposal("search", {}, principal="alice")
    with pytest.raises(ExecutionDenied) as info:
        guard.run(req, lambda: tool())
    assert info.value.reason_codes == ("GUARD_ERROR",) and tool.calls == []


def test_tool_exception_propagates_and_is_recorded(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard()
    req = guard.proposal("search", {}, principal="alice")

    def failing() -> None:
        raise Boom("tool failed")

    with pytest.raises(Boom):
        guard.run(req, failing)
    entry = last(guard)
    assert entry.event == "result" and entry.body["detail"]["status"] == "error"
    assert entry.body["detail"]["error"] == "Boom"


def test_capability_cannot_be_forged() -> None:
    from execauth_core import AuthorizationRequest

    req = AuthorizationRequest(tool="t", args={}, principal="p")
    with pytest.raises(TypeError):
        Capability(object(), req, "jti", 1)
    cap = Capability(_CAPABILITY_KEY, req, "jti", 1)
    cap._spend()
    with pytest.raises(RuntimeError):
        cap._spend()


def test_approval_is_bound_to_the_exact_proposal(make_guard: Callable[..., Guard], tool: Tool) -> None:
    guard = make_guard(require_approval=("transfer",))
    req = guard.proposal("transfer", {"amount": "25.00", "to": "bob"}, principal="alice")
    with pytest.raises(ApprovalRequired) as info:
        guard.run(req, lambda: tool(**req.args))
    assert tool.calls == [] and info.value.reason_codes == ("APPROVAL_REQUIRED",)
    pending = info.value.pending
    assert pending.proposal_digest == req.content_digest() and pending.request == req
    grant = guard.approve(pending, approver="carol")

    changed = guard.proposal("transfer", {"amount": "2500.00", "to": "bob"}, principal="alice")
    with pytest.raises(ApprovalRequired) as info2:
        guard.run(changed, lambda: tool(**changed.args), approval=grant)
    assert info2.value.reason_codes == ("APPROVAL_REQUIRED", "APPROVAL_MISMATCH") and tool.calls == []

    guard.run(req, lambda: tool(**req.args), approval=grant)
    assert tool.calls == [{"amount": "25.00", "to": "bob"}]


def test_forged_or_expired_approval(make_guard: Callable[..., Guard], tool: Tool, clock: FixedClock) -> None:
    guard = make_guard(require_approval=("transfer",))
    req = guard.proposal("transfer", {"amount": "1.00"}, principal="alice")
    with pytest.raises(ApprovalRequired) as info:
        guard.run(req, lambda: tool())
    grant = guard.approve(info.value.pending, approver="carol", ttl=60)
    forged = grant.model_copy(update={"approver": "mallory"})
    with pytest.raises(ApprovalRequired) as bad:
        guard.run(req, lambda: tool(), approval=forged)
    assert bad.value.reason_codes[-1] == "APPROVAL_INVALID"
    clock.advance(61)
    with pytest.raises(ApprovalRequired) as late:
        guard.run(req, lambda: tool(), approval=grant)
    assert late.value.reason_codes[-1] == "APPROVAL_INVALID"
    assert tool.calls == []


def test_async_paths(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard()
    ran: list[str] = []

    async def atool(q: str) -> str:
        await asyncio.sleep(0)
        ran.append(q)
        return q.upper()

    async def main() -> None:
        req = guard.proposal("search", {"q": "a"}, principal="alice")
        assert await guard.arun(req, lambda: atool(**req.args)) == "A"
        bad = guard.proposal("nope", {"q": "b"}, principal="alice")
        with pytest.raises(ExecutionDenied):
            await guard.arun(bad, lambda: atool(**bad.args))
        decision = guard.authorize(guard.proposal("search", {"q": "c"}, principal="alice"))
        req3 = decision.record.request
        assert await guard.aexecute(req3, decision.token, lambda: atool(**req3.args)) == "C"
        with pytest.raises(ExecutionDenied) as info:
            await guard.aexecute(req3, decision.token, lambda: atool(**req3.args))
        assert info.value.reason_codes == ("TOKEN_REPLAYED",)
        # a sync callable is accepted by arun too
        req4 = guard.proposal("search", {"q": "d"}, principal="alice")
        assert await guard.arun(req4, lambda: "sync") == "sync"

    asyncio.run(main())
    assert ran == ["a", "c"]


def test_verify_only_guard_needs_a_token(make_guard: Callable[..., Guard], tool: Tool) -> None:
    guard = make_guard()
    guard.authority = None
    req = guard.proposal("search", {}, principal="alice")
    with pytest.raises(ExecutionDenied) as info:
        guard.run(req, lambda: tool())
    assert info.value.reason_codes == ("NO_TOKEN",) and tool.calls == []


def test_authorize_records_the_decision(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard()
    decision = guard.authorize(guard.proposal("nope", {}, principal="alice"))
    assert decision.outcome.value == "DENY" and decision.token is None
    entry = last(guard)
    assert (entry.event, entry.executed, entry.body["record_digest"]) == ("decision", False, decision.record_digest)


def test_decisions_are_deterministic(make_guard: Callable[..., Guard]) -> None:
    """Same (proposal, policy, clock, keys, token id) -> byte-identical decision."""
    a, b = make_guard(id_factory=lambda: "fixed-token-id-0001"), make_guard(id_factory=lambda: "fixed-token-id-0001")
    req = a.proposal("search", {"q": "x", "n": 1.5}, principal="alice")
    assert a.authorize(req).canonical_bytes() == b.authorize(req).canonical_bytes()


def test_tokens_issued_under_an_old_policy_are_refused(make_guard: Callable[..., Guard], tool: Tool) -> None:
    guard = make_guard()
    req = guard.proposal("search", {}, principal="alice")
    token = guard.authorize(req).token
    assert guard.authority is not None
    guard.authority.decision_point = AllowListPolicy(["search"], epoch=2)  # e.g. the kill switch went on
    with pytest.raises(ExecutionDenied) as info:
        guard.execute(req, token, lambda: tool())
    assert info.value.reason_codes == ("TOKEN_POLICY_STALE",) and tool.calls == []


def test_deny_records_an_outside_denial(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard()
    req = guard.proposal("transfer", {"amount": "5.00"}, principal="alice")
    exc = guard.deny(req, ["APPROVAL_REJECTED"], "rejected by carol", outcome="REQUIRE_APPROVAL")
    assert isinstance(exc, ExecutionDenied) and exc.reason_codes == ("APPROVAL_REJECTED",)
    entry = last(guard)
    assert (entry.event, entry.executed, entry.body["proposal_digest"]) == ("denial", False, req.content_digest())
    assert entry.seq == exc.audit_seq


def test_deny_without_a_proposal_names_the_tool(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard()
    exc = guard.deny(None, ["GUARD_ERROR"], "principal resolver failed", tool="transfer")
    assert exc.tool == "transfer" and exc.proposal_digest is None
    assert (last(guard).event, last(guard).executed, last(guard).body["tool"]) == ("denial", False, "transfer")


def test_hostile_values_still_produce_a_recorded_bounded_denial(make_guard: Callable[..., Guard]) -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no repr for you")

    guard = make_guard()
    for tool_name in (Hostile(), "x\ud800", "y" * 5_000_000):
        with pytest.raises(ExecutionDenied) as info:
            guard.proposal(tool_name, {}, principal="p" * 5_000_000)  # type: ignore[arg-type]
        assert info.value.reason_codes == ("REQUEST_INVALID",) and info.value.audit_seq is not None
        body = last(guard).body
        assert len(body["tool"]) <= 200 and len(body["principal"] or "") <= 200
    assert guard.deny(None, None, "m", tool="t").reason_codes == ("GUARD_ERROR",)  # type: ignore[arg-type]


def test_args_are_a_private_copy(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard()
    inner = {"to": "bob"}
    req = guard.proposal("transfer", {"payee": inner}, principal="alice")
    digest_before = req.content_digest()
    inner["to"] = "mallory"
    assert req.args == {"payee": {"to": "bob"}} and req.content_digest() == digest_before


@pytest.mark.parametrize("tool_name", ["search", "nope"])
def test_the_signed_record_is_the_record_the_decision_carries(make_guard: Callable[..., Guard], tool_name: str) -> None:
    # The guard signs record bytes assembled from the proposal's bytes; whoever checks
    # the decision later recomputes them from the record itself.
    guard = make_guard()
    decision = guard.authorize(guard.proposal(tool_name, {"q": "x", "nested": {"é": [1, 2.5]}}, principal="alice"))
    raw = decision.record.canonical_bytes()
    assert decision.record_digest == digest_bytes(raw)
    assert guard.authority is not None
    key = guard.authority.trusted_keys.get(decision.record_kid)
    assert key is not None
    assert key.verify(signing_input_bytes("decision_record", raw), b64url_decode(decision.record_signature))
