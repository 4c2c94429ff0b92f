"""The reference harness runs the two-phase commit vector: guard.run takes preflight ->
commit -> execute by itself, and its audit entries carry the vector's record digests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from execauth_conformance import ReferenceHarness, ToolCallCase, vectors
from execauth_conformance.fixed import AUDIENCE, ISSUER, decision_point, trusted_signer
from execauth_core import FixedClock, Guard


def _ids(*first: str) -> Callable[[], str]:
    def gen() -> Iterator[str]:
        yield from first
        n = 0
        while True:
            n += 1
            yield f"{first[-1]}-{n:04d}"

    it = gen()
    return lambda: next(it)


@pytest.mark.parametrize("vector", vectors.tests("commit-v1.json", "reference"), ids=lambda v: f"tc{v['tcId']}")
def test_reference_harness_runs_the_commit_vector(vector: dict[str, Any]) -> None:
    i, e = vector["input"], vector["expected"]
    guard = Guard.local(
        decision_point(i["decision_point"], now=i["now"], state=i["state"]),
        clock=FixedClock(i["now"]),
        signer=trusted_signer(),
        issuer=ISSUER,
        audience=AUDIENCE,
        id_factory=_ids(i["preflight_id"], i["token_id"]),
    )
    calls: list[dict[str, Any]] = []

    def tool(**kwargs: Any) -> str:
        calls.append(kwargs)
        return "sent"

    r = i["request"]
    case = ToolCallCase(
        tool=r["tool"], args=r["args"], principal=r["principal"], agent=r["agent"], call_id=r["call_id"]
    )
    outcome = ReferenceHarness().run_tool_call(guard, case, tool)
    assert outcome.executed and calls == [r["args"]]
    entries = list(guard.audit_log.entries())
    assert [x.event for x in entries] == ["decision", "execution", "result"]
    assert entries[0].body["record_digest"] == e["preflight"]["record_digest"]
    assert entries[0].body["reason_codes"] == e["preflight"]["reason_codes"]
    assert entries[1].body["record_digest"] == e["commit"]["record_digest"]
    assert entries[1].body["token_id"] == e["commit"]["token_claims"]["jti"]
