"""A real AgentChat ``AssistantAgent`` run with a scripted, offline model
(``ReplayChatCompletionClient``), gated by ``ExecAuthWorkbench``."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Sequence
from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import ToolCallExecutionEvent
from autogen_core import FunctionCall
from autogen_core.models import CreateResult, FunctionExecutionResult, ModelFamily, ModelInfo, RequestUsage
from autogen_core.tools import BaseTool, FunctionTool
from autogen_ext.models.replay import ReplayChatCompletionClient

from execauth_autogen import ExecAuthWorkbench
from execauth_conformance import AdapterHarness, CallOutcome, ToolCallCase
from execauth_core import Guard

MODEL_INFO = ModelInfo(
    vision=False, function_calling=True, json_output=False, family=ModelFamily.UNKNOWN, structured_output=False
)


def call(call_id: str, name: str, args: dict[str, Any]) -> FunctionCall:
    return FunctionCall(id=call_id, name=name, arguments=json.dumps(args))


def turn(*calls: FunctionCall) -> CreateResult:
    """One model turn that asks for these tool calls (several: parallel calls)."""
    return CreateResult(
        finish_reason="function_calls",
        content=list(calls),
        usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
        cached=False,
    )


def scripted(*turns: CreateResult | str) -> ReplayChatCompletionClient:
    return ReplayChatCompletionClient(list(turns), model_info=MODEL_INFO)


def make_agent(workbench: ExecAuthWorkbench, *turns: CreateResult | str, name: str = "assistant") -> AssistantAgent:
    return AssistantAgent(name, model_client=scripted(*turns), workbench=workbench)


def tool_results(result: TaskResult) -> dict[str, FunctionExecutionResult]:
    """What the model was handed for each tool call, by call id."""
    out: dict[str, FunctionExecutionResult] = {}
    for message in result.messages:
        if isinstance(message, ToolCallExecutionEvent):
            for r in message.content:
                out[r.call_id] = r
    return out


def dynamic_tool(name: str, fn: Callable[..., Any], arg_names: Sequence[str]) -> BaseTool[Any, Any]:
    """A FunctionTool with parameters named ``arg_names`` typed ``Any``: the tool takes
    exactly what the model sends, so the proposal is exactly the model's output."""

    def real(**kwargs: Any) -> Any:
        return fn(**kwargs)

    real.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(a, inspect.Parameter.KEYWORD_ONLY, annotation=Any) for a in arg_names],
        return_annotation=str,
    )
    real.__annotations__ = {**{a: Any for a in arg_names}, "return": str}
    return FunctionTool(real, description=f"{name} tool", name=name)


class AgentChatHarness(AdapterHarness):
    name = "autogen-agentchat"

    def run_tool_call(
        self, guard: Guard, case: ToolCallCase, tool_fn: Callable[..., Any], *, token_provider: Any = None
    ) -> CallOutcome:
        ran: list[bool] = []

        def real(**kwargs: Any) -> Any:
            ran.append(True)
            return tool_fn(**kwargs)

        workbench = ExecAuthWorkbench(
            [dynamic_tool(case.tool, real, list(case.args))],
            guard,
            principal=case.principal,
            agent=case.agent,
            token_provider=token_provider,
        )
        agent = make_agent(workbench, turn(call(case.call_id, case.tool, case.args)))
        result = asyncio.run(agent.run(task="go"))
        seen = tool_results(result).get(case.call_id)
        return CallOutcome(executed=bool(ran), model_saw=seen.content if seen is not None else "")
