from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from execauth_core import AllowListPolicy, FixedClock, Guard, LocalSigner

# RFC 8032 section 7.1, TEST 1 secret key: deterministic keys for tests.
RFC8032_SEED_1 = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
# RFC 8032 section 7.1, TEST 2 secret key.
RFC8032_SEED_2 = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def signer() -> LocalSigner:
    return LocalSigner(RFC8032_SEED_1)


class Tool:
    """A tool that records every real call, so tests can assert it never ran."""

    def __init__(self, result: Any = "done") -> None:
        self.calls: list[dict[str, Any]] = []
        self.result = result

    def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return self.result


@pytest.fixture
def tool() -> Tool:
    return Tool()


@pytest.fixture
def make_guard(clock: FixedClock, signer: LocalSigner) -> Callable[..., Guard]:
    counter = iter(range(10**9))

    def factory(allow: tuple[str, ...] = ("search", "transfer"), **kwargs: Any) -> Guard:
        policy = AllowListPolicy(allow, require_approval=kwargs.pop("require_approval", ()))
        kwargs.setdefault("id_factory", lambda: f"token-id-{next(counter):08d}")
        return Guard.local(policy, clock=clock, signer=signer, **kwargs)

    return factory
