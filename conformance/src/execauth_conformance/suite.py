"""The shared conformance suite. An adapter's ``tests/test_conformance.py``::

    import pytest
    from execauth_conformance import ConformanceSuite
    from my_adapter.testing import MyHarness

    class TestMyAdapterConformance(ConformanceSuite):
        @pytest.fixture
        def harness(self):
            return MyHarness()

Every test below is inherited. Overriding, deleting or skipping one is refused when
the class is defined (TypeError), and ``test_suite_is_complete`` pins the list.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from execauth_core import AuthorizationRequest, Guard, StoreUnavailable

from . import results, vectors
from .fixed import vector_guard
from .harness import AdapterHarness, ToolCallCase

ADAPTER_VECTORS = vectors.tests("decisions-v1.json", "adapter")
ALLOW_VECTOR = next(v for v in ADAPTER_VECTORS if v["tcId"] == 1)

SHARED_TESTS = (
    "test_decision_vector",
    "test_denied_calls_tell_the_model_why",
    "test_replayed_token_is_refused",
    "test_missing_token_denies",
    "test_foreign_token_denies",
    "test_store_outage_denies",
    "test_guard_internal_error_denies",
    "test_tool_result_reaches_the_model",
    "test_suite_is_complete",
)


class _Tool:
    """The real tool: counts its calls, returns a recognisable result."""

    def __init__(self, marker: str) -> None:
        self.calls: list[dict[str, Any]] = []
        self.marker = marker

    def __call__(self, **kwargs: Any) -> str:
        self.calls.append(kwargs)
        return self.marker


def _case(vector: dict[str, Any]) -> ToolCallCase:
    r = vector["input"]["request"]
    return ToolCallCase(
        tool=r["tool"], args=r["args"], principal=r["principal"], agent=r["agent"], call_id=r["call_id"]
    )


def _guard(vector: dict[str, Any]) -> Guard:
    i = vector["input"]
    return vector_guard(i["decision_point"], now=i["now"], token_id=i["token_id"], state=i["state"])


def _id(vector: dict[str, Any]) -> str:
    return f"tc{vector['tcId']}"


class ConformanceSuite:
    """Inherit this and supply a ``harness`` fixture returning an :class:`AdapterHarness`."""

    _shared: ClassVar[tuple[str, ...]] = SHARED_TESTS

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in SHARED_TESTS:
            if name in cls.__dict__:
                raise TypeError(f"{cls.__name__} overrides or deletes the shared conformance test {name}")
        for mark in getattr(cls, "pytestmark", []):
            if getattr(mark, "name", "") in ("skip", "skipif", "xfail"):
                raise TypeError(f"{cls.__name__}: conformance tests may not be skipped or xfailed")

    @pytest.fixture
    def harness(self) -> AdapterHarness:
        raise NotImplementedError("supply a `harness` fixture returning your AdapterHarness")

    # -- vectors --------------------------------------------------------------

    @pytest.mark.parametrize("vector", ADAPTER_VECTORS, ids=_id)
    def test_decision_vector(self, harness: AdapterHarness, vector: dict[str, Any]) -> None:
        expected = vector["expected"]
        guard = _guard(vector)
        tool = _Tool(f"tool-ran-{vector['tcId']}")
        outcome = harness.run_tool_call(guard, _case(vector), tool)
        allowed = expected["outcome"] == "ALLOW"
        assert len(tool.calls) == (1 if allowed else 0), "the tool must run exactly when ALLOW"
        assert outcome.executed is allowed
        if allowed:
            assert tool.calls == [vector["input"]["request"]["args"]], "the tool must get exactly the proposed args"
        entries = list(guard.audit_log.entries())
        kind = "execution" if allowed else "denial"
        decisive = [e for e in entries if e.event == kind]
        assert len(decisive) == 1, f"expected one {kind} record, audit has {[e.event for e in entries]}"
        body = decisive[0].body
        assert body["executed"] is allowed
        assert body["reason_codes"] == expected["reason_codes"]
        assert body["record_digest"] == expected["record_digest"]
        results.record(
            harness.name,
            f"decisions/{vector['tcId']}",
            {
                "executed": allowed,
                "outcome": expected["outcome"],
                "record_digest": body["record_digest"],
                "audit": [e.digest for e in entries],
            },
        )

    @pytest.mark.parametrize("vector", [v for v in ADAPTER_VECTORS if v["expected"]["outcome"] != "ALLOW"], ids=_id)
    def test_denied_calls_tell_the_model_why(self, harness: AdapterHarness, vector: dict[str, Any]) -> None:
        outcome = harness.run_tool_call(_guard(vector), _case(vector), _Tool("never"))
        assert not outcome.executed
        assert vector["expected"]["reason_codes"][0] in outcome.model_saw

    # -- generic failure modes ------------------------------------------------

    def test_replayed_token_is_refused(self, harness: AdapterHarness) -> None:
        guard = _guard(ALLOW_VECTOR)
        case = _case(ALLOW_VECTOR)
        request = AuthorizationRequest(
            tool=case.tool, args=case.args, principal=case.principal, agent=case.agent, call_id=case.call_id
        )
        token = guard.authorize(request).token
        assert token is not None
        tool = _Tool("ran")
        first = harness.run_tool_call(guard, case, tool, token_provider=lambda r: token)
        second = harness.run_tool_call(guard, case, tool, token_provider=lambda r: token)
        assert first.executed and not second.executed and len(tool.calls) == 1
        assert "TOKEN_REPLAYED" in second.model_saw
        assert list(guard.audit_log.entries())[-1].body["reason_codes"] == ["TOKEN_REPLAYED"]

    def test_missing_token_denies(self, harness: AdapterHarness) -> None:
        guard = _guard(ALLOW_VECTOR)
        tool = _Tool("ran")
        out = harness.run_tool_call(guard, _case(ALLOW_VECTOR), tool, token_provider=lambda r: None)
        assert not out.executed and tool.calls == [] and "NO_TOKEN" in out.model_saw

    def test_foreign_token_denies(self, harness: AdapterHarness) -> None:
        """A valid token for other arguments never authorizes this call."""
        guard = _guard(ALLOW_VECTOR)
        case = _case(ALLOW_VECTOR)
        other = AuthorizationRequest(
            tool=case.tool,
            args={**case.args, "q": "something else"},
            principal=case.principal,
            agent=case.agent,
            call_id=case.call_id,
        )
        token = guard.authorize(other).token
        tool = _Tool("ran")
        out = harness.run_tool_call(guard, case, tool, token_provider=lambda r: token)
        assert not out.executed and tool.calls == [] and "TOKEN_PROPOSAL_MISMATCH" in out.model_saw

    def test_store_outage_denies(self, harness: AdapterHarness) -> None:
        class Down:
            def consume(self, token_id: str, *, expires_at: int, now: int) -> bool:
                raise StoreUnavailable("replay store unreachable")

        guard = _guard(ALLOW_VECTOR)
        guard.replay_store = Down()
        tool = _Tool("ran")
        out = harness.run_tool_call(guard, _case(ALLOW_VECTOR), tool)
        assert not out.executed and tool.calls == [] and "STORE_UNAVAILABLE" in out.model_saw
        last = list(guard.audit_log.entries())[-1]
        assert (last.event, last.executed, last.body["reason_codes"]) == ("denial", False, ["STORE_UNAVAILABLE"])

    def test_guard_internal_error_denies(self, harness: AdapterHarness) -> None:
        class Broken:
            policy_ref = None

            def evaluate(self, *args: Any, **kwargs: Any) -> Any:
                raise RuntimeError("bug in a policy engine")

        guard = _guard(ALLOW_VECTOR)
        assert guard.authority is not None
        guard.authority.decision_point = Broken()  # type: ignore[assignment]
        tool = _Tool("ran")
        out = harness.run_tool_call(guard, _case(ALLOW_VECTOR), tool)
        assert not out.executed and tool.calls == [] and "GUARD_ERROR" in out.model_saw

    def test_tool_result_reaches_the_model(self, harness: AdapterHarness) -> None:
        tool = _Tool("result-marker-7f3a")
        out = harness.run_tool_call(_guard(ALLOW_VECTOR), _case(ALLOW_VECTOR), tool)
        assert out.executed and len(tool.calls) == 1 and "result-marker-7f3a" in out.model_saw

    def test_suite_is_complete(self, harness: AdapterHarness) -> None:
        assert isinstance(harness, AdapterHarness) and harness.name
        mine = sorted(n for n in dir(type(self)) if n.startswith("test_"))
        assert set(SHARED_TESTS) <= set(mine)
        for name in SHARED_TESTS:
            assert getattr(type(self), name) is getattr(ConformanceSuite, name), f"{name} was replaced"
