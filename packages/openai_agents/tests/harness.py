"""The real Agents SDK loop (``Runner``) driven by a scripted, offline ``Model``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from agents import Agent, FunctionTool, ModelResponse, Runner, Usage
from agents.models.interface import Model
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputItemDoneEvent,
    ResponseOutputMessage,
    ResponseOutputText,
)

from execauth_conformance import AdapterHarness, CallOutcome, ToolCallCase
from execauth_core import Guard
from execauth_openai_agents import ExecAuth


def call(name: str, args: dict[str, Any] | str, call_id: str) -> ResponseFunctionToolCall:
    """A function call item, as the Responses API returns it."""
    arguments = args if isinstance(args, str) else json.dumps(args)
    return ResponseFunctionToolCall(
        type="function_call", name=name, arguments=arguments, call_id=call_id, id=f"fc_{call_id}", status="completed"
    )


def say(text: str) -> ResponseOutputMessage:
    """A final assistant message."""
    return ResponseOutputMessage(
        type="message",
        id="msg_1",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )


class ScriptedModel(Model):
    """Replays one list of output items per model call (for every agent it serves)
    and records what it was given, so tests can read what the model saw."""

    def __init__(self, *turns: Sequence[Any]) -> None:
        self.turns = [list(t) for t in turns]
        self.inputs: list[Any] = []

    def _next(self, input: Any) -> list[Any]:
        self.inputs.append(input)
        if not self.turns:
            raise AssertionError("the scripted model was called more often than scripted")
        return self.turns.pop(0)

    async def get_response(self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any) -> ModelResponse:
        return ModelResponse(output=self._next(input), usage=Usage(), response_id=None)

    async def stream_response(  # type: ignore[override]
        self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any
    ) -> AsyncIterator[Any]:
        output = self._next(input)
        for i, item in enumerate(output):
            yield ResponseOutputItemDoneEvent(
                type="response.output_item.done", item=item, output_index=i, sequence_number=i
            )
        yield ResponseCompletedEvent(
            type="response.completed",
            sequence_number=len(output),
            response=Response(
                id="resp_scripted",
                created_at=0,
                model="scripted",
                object="response",
                output=output,
                tool_choice="auto",
                tools=[],
                top_p=None,
                parallel_tool_calls=True,
                status="completed",
            ),
        )

    def seen_outputs(self) -> dict[str, str]:
        """call id -> the tool output text the model was last given."""
        seen: dict[str, str] = {}
        for given in self.inputs:
            for item in given if isinstance(given, list) else []:
                if isinstance(item, dict) and item.get("type") == "function_call_output":
                    out = item.get("output")
                    seen[str(item.get("call_id"))] = out if isinstance(out, str) else json.dumps(out)
        return seen


def make_tool(name: str, fn: Callable[..., Any], arg_names: Sequence[str]) -> FunctionTool:
    """A FunctionTool with a permissive schema: it accepts what the model sends, so what
    reaches the guard is exactly the model's output."""

    async def invoke(ctx: Any, input: str) -> Any:
        return str(fn(**json.loads(input)))

    schema = {"type": "object", "properties": {a: {} for a in arg_names}}
    return FunctionTool(
        name=name,
        description=f"{name} tool",
        params_json_schema=schema,
        on_invoke_tool=invoke,
        strict_json_schema=False,
    )


class OpenAIAgentsHarness(AdapterHarness):
    name = "openai_agents"

    def run_tool_call(
        self, guard: Guard, case: ToolCallCase, tool_fn: Callable[..., Any], *, token_provider: Any = None
    ) -> CallOutcome:
        ran: list[bool] = []

        def real(**kw: Any) -> Any:
            ran.append(True)
            return tool_fn(**kw)

        model = ScriptedModel([call(case.tool, case.args, case.call_id)], [say("done")])
        agent: Agent[Any] = Agent(name="conformance", model=model, tools=[make_tool(case.tool, real, list(case.args))])
        gate = ExecAuth(
            guard, principal=case.principal, agent=case.agent, token_provider=token_provider, approvals=False
        )
        gate.protect(agent)
        # asyncio.run, not Runner.run_sync: run_sync leaves the thread's default event
        # loop open (a ResourceWarning, an error under -W error).
        asyncio.run(Runner.run(agent, "go"))
        return CallOutcome(executed=bool(ran), model_saw=model.seen_outputs().get(case.call_id, ""))
