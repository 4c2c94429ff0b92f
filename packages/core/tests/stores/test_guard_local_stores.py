"""``Guard.local(policy, stores=URL)``: replicas configured with one store URL act as one."""

from __future__ import annotations

from pathlib import Path

import pytest

from execauth_core import AllowListPolicy, ConfigurationError, ExecutionDenied, FixedClock, Guard, LocalSigner
from execauth_core.audit import verify_chain

from .conftest import Backend

T0 = 1_767_225_600


def test_replicas_given_one_store_url_share_replay_and_log(shared_backend: Backend) -> None:
    signer = LocalSigner(bytes(range(32)))  # one authority key, as replicas of one service have
    a, b = (
        Guard.local(AllowListPolicy(["search"]), stores=shared_backend.url, signer=signer, clock=FixedClock(T0))
        for _ in range(2)
    )
    calls: list[str] = []
    try:
        req = a.proposal("search", {"q": "x"}, principal="alice")
        token = a.authorize(req).token
        assert b.execute(req, token, lambda: calls.append("b")) is None
        with pytest.raises(ExecutionDenied) as denied:
            a.execute(req, token, lambda: calls.append("a"))
    finally:
        a.close()
        b.close()
    assert denied.value.reason_codes == ("TOKEN_REPLAYED",)
    assert calls == ["b"]
    log = shared_backend.open().audit
    events = [e.body["event"] for e in log.entries()]
    assert events == ["decision", "execution", "result", "denial"]
    assert verify_chain(log.entries(), expected_head=log.head())[0] == 4


def test_data_dir_keeps_the_key_and_the_url_the_stores(shared_backend: Backend, tmp_path: Path) -> None:
    guard = Guard.local(AllowListPolicy(["search"]), data_dir=tmp_path, stores=shared_backend.url)
    try:
        guard.run(guard.proposal("search", {}, principal="alice"), lambda: None)
    finally:
        guard.close()
    assert (tmp_path / "authority.key").exists()
    assert not (tmp_path / "execauth.db").exists()
    assert shared_backend.open().audit.head()[0] == 2


def test_stores_must_be_a_url_or_stores() -> None:
    with pytest.raises(ConfigurationError, match="store URL"):
        Guard.local(AllowListPolicy(["search"]), stores=object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unknown store URL scheme"):
        Guard.local(AllowListPolicy(["search"]), stores="mysql://db")


def test_opened_stores_serve_the_guard_and_the_courts_budgets(shared_backend: Backend) -> None:
    from execauth_core import Court, FixedClock, LocalSigner, parse_policy

    from ..court_fixtures import MONDAY_10, POLICY, registry

    stores = shared_backend.open()
    court = Court(parse_policy(POLICY), registry(), state=stores.state)
    guard = Guard.local(court, stores=stores, signer=LocalSigner(bytes(range(32))), clock=FixedClock(MONDAY_10))
    args = {"order": "A-1", "amount": "150.00", "currency": "USD"}
    assert guard.run(guard.proposal("refund", args, principal="user-42", agent="billing-bot"), lambda: "ok") == "ok"
    assert guard.replay_store is stores.replay and guard.audit_log is stores.audit
    assert [e.body["event"] for e in stores.audit.entries()] == ["execution", "result"]
    assert shared_backend.live_state(stores) > 0  # the refund's debit is in the shared state store
