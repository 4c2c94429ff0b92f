"""The guard and the effect ledger: a call whose idempotency key already ran, is
running, or has an unknown outcome is refused (and recorded), never run again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from execauth_core import ExecutionDenied, FixedClock, Guard
from execauth_core.current import current_call
from execauth_core.ledger import AlreadyExecuted, Ledger, MemoryLedgerStore, idempotency_key

from .conftest import Tool

MakeGuard = Callable[..., Guard]


def transfer(guard: Guard, call_id: str | None = "call_1", amount: str = "25.00") -> Any:
    return guard.proposal("transfer", {"amount": amount, "to": "bob"}, principal="alice", call_id=call_id)


def last_denial(guard: Guard) -> Any:
    return [e for e in guard.audit_log.entries() if e.event == "denial"][-1]


def test_the_same_call_again_returns_the_recorded_result_and_runs_nothing(make_guard: MakeGuard) -> None:
    guard = make_guard()
    tool = Tool(result={"transfer_id": "t-1"})
    req = transfer(guard)
    assert guard.run(req, lambda: tool(**req.args)) == {"transfer_id": "t-1"}
    with pytest.raises(AlreadyExecuted) as info:
        guard.run(transfer(guard), lambda: tool(**req.args))
    assert info.value.reason_codes == ("LEDGER_ALREADY_SUCCEEDED",)
    assert (info.value.has_result, info.value.result) == (True, {"transfer_id": "t-1"})
    assert info.value.idempotency_key == idempotency_key(None, "call_1", req.content_digest())
    assert len(tool.calls) == 1
    denial = last_denial(guard)
    assert (denial.executed, denial.body["reason_codes"]) == (False, ["LEDGER_ALREADY_SUCCEEDED"])
    # Answered before any decision: one decision, one execution in the log.
    assert [e.event for e in guard.audit_log.entries()].count("execution") == 1


def test_the_tool_receives_its_key_and_the_capability_carries_it(make_guard: MakeGuard) -> None:
    guard = make_guard()
    seen: list[str | None] = []
    req = transfer(guard)
    guard.run(req, lambda: seen.append(current_call().idempotency_key))
    guard.run(transfer(guard, "call_2"), lambda: seen.append(current_call().idempotency_key), idempotency_key="pay-42")
    guard.run(transfer(guard, None), lambda: seen.append(current_call().idempotency_key))
    assert seen == [idempotency_key(None, "call_1", req.content_digest()), "pay-42", None]
    cap = guard._admit(transfer(guard, "call_3"), None, decide=True, approval=None, key="pay-43")
    assert cap.idempotency_key == "pay-43" and cap.ledger_entry is not None


def test_other_arguments_or_another_call_id_are_new_calls(make_guard: MakeGuard) -> None:
    guard, tool = make_guard(), Tool()
    guard.run(transfer(guard), lambda: tool())
    guard.run(transfer(guard, amount="30.00"), lambda: tool())  # same call id, other proposal: new key
    guard.run(transfer(guard, "call_2"), lambda: tool())
    assert len(tool.calls) == 3


def test_a_caller_key_reused_for_other_arguments_is_refused(make_guard: MakeGuard) -> None:
    guard, tool = make_guard(), Tool()
    guard.run(transfer(guard), lambda: tool(), idempotency_key="order-7/refund")
    with pytest.raises(ExecutionDenied) as info:
        guard.run(transfer(guard, amount="99.00"), lambda: tool(), idempotency_key="order-7/refund")
    assert info.value.reason_codes == ("LEDGER_KEY_CONFLICT",) and len(tool.calls) == 1
    with pytest.raises(ExecutionDenied) as bad:
        guard.run(transfer(guard), lambda: tool(), idempotency_key="")
    assert bad.value.reason_codes == ("REQUEST_INVALID",) and len(tool.calls) == 1


def test_a_failed_call_is_not_retried_under_the_same_key(make_guard: MakeGuard) -> None:
    guard, calls = make_guard(), []

    def flaky() -> None:
        calls.append(1)
        raise TimeoutError("the bank did not answer")

    with pytest.raises(TimeoutError):
        guard.run(transfer(guard), flaky)
    with pytest.raises(ExecutionDenied) as info:
        guard.run(transfer(guard), flaky)
    assert info.value.reason_codes == ("LEDGER_ALREADY_FAILED",) and len(calls) == 1


def test_retry_failed_runs_a_failed_key_again_under_a_new_decision(make_guard: MakeGuard, clock: FixedClock) -> None:
    guard = make_guard(ledger=Ledger(MemoryLedgerStore(), clock=clock, retry_failed=True))
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("refused before anything was sent")
        return "sent"

    with pytest.raises(ConnectionError):
        guard.run(transfer(guard), flaky)
    assert guard.run(transfer(guard), flaky) == "sent" and len(calls) == 2
    with pytest.raises(AlreadyExecuted):
        guard.run(transfer(guard), flaky)


def test_a_call_in_flight_is_refused_and_a_replayed_token_keeps_its_code(make_guard: MakeGuard) -> None:
    guard, tool = make_guard(), Tool()
    inner: list[str] = []

    def reentrant() -> None:
        try:
            guard.run(transfer(guard), lambda: tool())
        except ExecutionDenied as exc:
            inner.append(exc.reason_codes[0])

    guard.run(transfer(guard), reentrant)
    assert inner == ["LEDGER_IN_FLIGHT"] and tool.calls == []
    req = transfer(guard, "call_9")
    decision = guard.authorize(req)
    guard.execute(req, decision.token, lambda: tool())
    with pytest.raises(ExecutionDenied) as info:
        guard.execute(req, decision.token, lambda: tool())
    assert info.value.reason_codes == ("TOKEN_REPLAYED",) and len(tool.calls) == 1


def test_a_refused_admission_gives_the_key_back(make_guard: MakeGuard) -> None:
    guard, tool = make_guard(), Tool()
    req = transfer(guard)
    with pytest.raises(ExecutionDenied) as info:
        guard.execute(req, "not-a-token", lambda: tool())
    assert info.value.reason_codes[0].startswith("TOKEN_")
    assert guard.ledger is not None and guard.ledger.get(idempotency_key(None, "call_1", req.content_digest())) is None
    guard.run(req, lambda: tool())
    assert len(tool.calls) == 1


def test_async_run_follows_the_ledger(make_guard: MakeGuard) -> None:
    guard, tool = make_guard(), Tool(result="ok")

    async def go() -> list[str]:
        out = [await guard.arun(transfer(guard), lambda: tool())]
        try:
            await guard.arun(transfer(guard), lambda: tool())
        except AlreadyExecuted as exc:
            out.append(exc.reason_codes[0])
        return out

    assert asyncio.run(go()) == ["ok", "LEDGER_ALREADY_SUCCEEDED"] and len(tool.calls) == 1


def test_the_default_is_durable_beside_the_other_stores(make_guard: MakeGuard, tmp_path: Path) -> None:
    tool = Tool()
    first = make_guard(data_dir=tmp_path)
    first.run(transfer(first), lambda: tool())
    first.close()
    restarted = make_guard(data_dir=tmp_path)
    with pytest.raises(AlreadyExecuted):
        restarted.run(transfer(restarted), lambda: tool())
    assert len(tool.calls) == 1
    off = make_guard(data_dir=tmp_path, ledger=False)
    assert off.ledger is None
    off.run(transfer(off), lambda: tool())
    assert len(tool.calls) == 2


def test_bad_ledger_options_are_refused_when_the_guard_is_built(make_guard: MakeGuard) -> None:
    from execauth_core import ConfigurationError

    with pytest.raises(ConfigurationError, match="ledger is"):
        make_guard(ledger=42)
    with pytest.raises(ConfigurationError, match="lease"):
        Ledger(MemoryLedgerStore(), lease=0)
