"""A real classic AutoGen chat, offline: a scripted "model" agent sends tool-call
messages, and a real ConversableAgent (with ExecAuthExecutorMixin) executes them
through its function map."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Sequence
from typing import Any

from autogen import Agent, ConversableAgent

from execauth_autogen import ExecAuthExecutorMixin, ExecAuthFunctionGate
from execauth_conformance import AdapterHarness, CallOutcome, ToolCallCase
from execauth_core import Guard

DONE = "TERMINATE"


class GuardedExecutor(ExecAuthExecutorMixin, ConversableAgent):
    """The agent that runs functions, as users would declare it."""


def executor(name: str = "executor", **kwargs: Any) -> GuardedExecutor:
    return GuardedExecutor(name, llm_config=False, human_input_mode="NEVER", **kwargs)


def tool_calls(*calls: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    """A model message asking for these (call id, function, arguments): several means
    parallel tool calls."""
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            for cid, name, args in calls
        ],
    }


def function_call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """The legacy (pre tool_calls) OpenAI function_call message."""
    return {"role": "assistant", "content": None, "function_call": {"name": name, "arguments": json.dumps(args)}}


class ScriptedModel(ConversableAgent):
    """Stands in for the LLM-backed assistant: replies with the scripted messages in order."""

    def __init__(self, script: Sequence[dict[str, Any] | str]) -> None:
        super().__init__("model", llm_config=False, human_input_mode="NEVER")
        self.script = list(script)
        self.register_reply([Agent, None], ScriptedModel._next, position=0)

    def _next(self, messages: Any = None, sender: Any = None, config: Any = None) -> tuple[bool, Any]:
        return True, (self.script.pop(0) if self.script else DONE)


def chat(runner: ConversableAgent, *turns: dict[str, Any], use_async: bool = False) -> list[dict[str, Any]]:
    """Run a real two-agent chat: ``runner`` says "go", the model answers with ``turns``
    one by one, ``runner`` executes them; returns the chat history."""
    model = ScriptedModel(turns)
    if use_async:
        result = asyncio.run(runner.a_initiate_chat(model, message="go", max_turns=len(turns) + 1))
    else:
        result = runner.initiate_chat(model, message="go", max_turns=len(turns) + 1)
    return list(result.chat_history)


def responses(history: list[dict[str, Any]]) -> dict[str | None, str]:
    """What the model was handed back for each call id (legacy function results: None)."""
    out: dict[str | None, str] = {}
    for message in history:
        for r in message.get("tool_responses") or []:
            out[r.get("tool_call_id")] = str(r.get("content"))
        if message.get("role") == "function":
            out[None] = str(message.get("content"))
    return out


def named(fn: Callable[..., Any], arg_names: Sequence[str]) -> Callable[..., Any]:
    """``fn(**kwargs)`` with keyword parameters named ``arg_names``."""

    def real(**kwargs: Any) -> Any:
        return fn(**kwargs)

    real.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(a, inspect.Parameter.KEYWORD_ONLY) for a in arg_names]
    )
    return real


class ClassicHarness(AdapterHarness):
    name = "autogen-classic"

    def run_tool_call(
        self, guard: Guard, case: ToolCallCase, tool_fn: Callable[..., Any], *, token_provider: Any = None
    ) -> CallOutcome:
        ran: list[bool] = []

        def real(**kwargs: Any) -> Any:
            ran.append(True)
            return tool_fn(**kwargs)

        gate = ExecAuthFunctionGate(guard, principal=case.principal, agent=case.agent, token_provider=token_provider)
        runner = executor()
        runner.register_function({case.tool: named(real, list(case.args))})
        gate.protect(runner)
        history = chat(runner, tool_calls((case.call_id, case.tool, case.args)))
        return CallOutcome(executed=bool(ran), model_saw=responses(history).get(case.call_id, ""))
