"""current_call(): the guard tells the running tool which verified call it is."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from execauth_core import CurrentCall, ExecutionDenied, Guard, current_call
from execauth_core.tokens import unverified_claims


def test_outside_a_guarded_call_it_raises_lookup_error() -> None:
    with pytest.raises(LookupError, match="no execauth-guarded call"):
        current_call()


def test_inside_a_guarded_call_it_is_the_verified_request_and_token(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard()
    req = guard.proposal("search", {"q": "x"}, principal="alice")
    seen: list[CurrentCall] = []
    guard.run(req, lambda: seen.append(current_call()))
    assert len(seen) == 1
    assert seen[0].request == req
    claims = unverified_claims(seen[0].token)
    assert claims["proposal_digest"] == req.content_digest()
    # The token the tool sees is the one the guard consumed.
    execution = next(e for e in guard.audit_log.entries() if e.event == "execution")
    assert claims["jti"] == execution.body["token_id"]
    with pytest.raises(LookupError):
        current_call()


def test_execute_with_a_given_token_hands_that_token(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard()
    req = guard.proposal("search", {"q": "y"}, principal="alice")
    token = guard.authorize(req).token
    assert token is not None
    assert guard.execute(req, token, lambda: current_call().token) == token


def test_reset_after_a_failing_tool(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard()
    req = guard.proposal("search", {"q": "z"}, principal="alice")

    def boom() -> None:
        raise RuntimeError("tool failed")

    with pytest.raises(RuntimeError):
        guard.run(req, boom)
    with pytest.raises(LookupError):
        current_call()


def test_a_denied_call_never_sets_it(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard()
    req = guard.proposal("drop_table", {}, principal="alice")
    with pytest.raises(ExecutionDenied):
        guard.run(req, current_call)
    with pytest.raises(LookupError):
        current_call()


def test_nested_calls_each_see_their_own(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard()
    outer = guard.proposal("search", {"q": "outer"}, principal="alice")
    inner = guard.proposal("transfer", {"to": "bob"}, principal="alice")
    seen: list[str] = []

    def outer_tool() -> None:
        seen.append(current_call().request.tool)
        guard.run(inner, lambda: seen.append(current_call().request.tool))
        seen.append(current_call().request.tool)

    guard.run(outer, outer_tool)
    assert seen == ["search", "transfer", "search"]


def test_concurrent_async_calls_see_their_own(make_guard: Callable[..., Guard]) -> None:
    guard = make_guard()

    async def tool(name: str) -> tuple[str, str]:
        await asyncio.sleep(0.01)  # let the other call start in between
        mine = current_call().request.args["q"]
        await asyncio.sleep(0)
        return name, mine

    async def main() -> list[tuple[str, str]]:
        reqs = [guard.proposal("search", {"q": f"q{i}"}, principal="alice") for i in range(5)]
        calls = [guard.arun(r, lambda r=r: tool(r.args["q"])) for r in reqs]
        results = await asyncio.gather(*calls)
        with pytest.raises(LookupError):
            current_call()
        return list(results)

    for name, mine in asyncio.run(main()):
        assert name == mine
