"""pyautogen 0.2.x (tox env autogen-pyautogen02): classic AutoGen whose
``execute_function(func_call, verbose)`` receives no tool-call id. The adapter refuses
it when a gate is built, and an executor with the mixin but no gate runs nothing."""

from __future__ import annotations

import inspect
import json
import warnings
from collections.abc import Callable
from typing import Any

import pytest

from execauth_core import ConfigurationError, Guard

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    autogen = pytest.importorskip("autogen")

_AGENT = getattr(autogen, "ConversableAgent", None)
if _AGENT is None or "call_id" in inspect.signature(_AGENT.execute_function).parameters:
    pytest.skip("needs a classic AutoGen without tool-call ids (pyautogen 0.2.x)", allow_module_level=True)


def test_a_gate_is_refused_with_what_to_install(make_guard: Callable[..., Guard]) -> None:
    from execauth_autogen import ExecAuthFunctionGate

    with pytest.raises(ConfigurationError) as info:
        ExecAuthFunctionGate(make_guard(allow=["transfer"]), principal="user-42")
    text = str(info.value)
    assert "no tool-call id" in text
    assert autogen.__version__ in text
    assert "pip uninstall pyautogen" in text
    assert "execauth-autogen[classic]" in text


def test_a_mixin_executor_without_a_gate_runs_nothing(make_guard: Callable[..., Guard]) -> None:
    from execauth_autogen import ExecAuthExecutorMixin

    ran: list[dict[str, Any]] = []

    def transfer(amount: str, to: str) -> str:
        ran.append({"amount": amount, "to": to})
        return "sent"

    class Executor(ExecAuthExecutorMixin, autogen.ConversableAgent):  # type: ignore[misc,name-defined]
        pass

    executor = Executor("executor", llm_config=False, human_input_mode="NEVER", code_execution_config=False)
    executor.register_function({"transfer": transfer})
    ok, result = executor.execute_function(
        {"name": "transfer", "arguments": json.dumps({"amount": "5.00", "to": "bob"})}
    )
    assert ok is False
    assert "no gate configured" in result["content"]
    assert ran == []
