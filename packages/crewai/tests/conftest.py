from __future__ import annotations

import os

# CrewAI otherwise looks up its telemetry host and slows process exit by ~14 s;
# set before crewai is imported (importorskip below imports it).
os.environ["CREWAI_DISABLE_TELEMETRY"] = "true"
os.environ["OTEL_SDK_DISABLED"] = "true"
os.environ["CREWAI_TRACING_ENABLED"] = "false"

import pytest

pytest.importorskip("crewai")

from collections.abc import Callable, Iterator

from crewai.hooks import get_after_tool_call_hooks, get_before_tool_call_hooks
from crewai.hooks.dispatch import InterceptionPoint, get_scoped_hooks
from crewai.tools import BaseTool

from execauth_core import AllowListPolicy, FixedClock, Guard, LocalSigner

from .helpers import RFC8032_SEED_1, T0, Ledger, make_tools


@pytest.fixture
def ledger() -> Ledger:
    return Ledger()


@pytest.fixture
def tools(ledger: Ledger) -> dict[str, BaseTool]:
    return make_tools(ledger)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


@pytest.fixture
def make_guard(clock: FixedClock) -> Callable[..., Guard]:
    def make(allow: list[str], require_approval: list[str] = (), ledger: bool = True) -> Guard:  # type: ignore[assignment]
        return Guard.local(
            AllowListPolicy(allow=allow, require_approval=list(require_approval)),
            signer=LocalSigner(RFC8032_SEED_1),
            clock=clock,
            ledger=ledger,
        )

    return make


@pytest.fixture(autouse=True)
def no_hook_leaks() -> Iterator[None]:
    """Every test leaves CrewAI's hook registries exactly as it found them."""
    before = (get_before_tool_call_hooks(), get_after_tool_call_hooks())
    yield
    assert (get_before_tool_call_hooks(), get_after_tool_call_hooks()) == before
    assert get_scoped_hooks(InterceptionPoint.PRE_TOOL_CALL) == []
    assert get_scoped_hooks(InterceptionPoint.POST_TOOL_CALL) == []


# CrewAI 1.15.30 warns about its own internals while it runs (the root config turns
# warnings into errors). Ignored narrowly, by message, for this package's tests only.
CREWAI_OWN_WARNINGS = (
    # Agent.post_init_setup reads its own deprecated fields (function_calling_llm,
    # allow_code_execution...): DeprecationWarnings raised from inside crewai modules.
    r"ignore::DeprecationWarning:crewai(\..*)?",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for spec in CREWAI_OWN_WARNINGS:
            item.add_marker(pytest.mark.filterwarnings(spec))
