"""execauth + the OpenAI Agents SDK, offline: a scripted model asks for three tool calls.

    # from the repository root of a checkout (the packages are not published yet):
    pip install ./packages/core ./packages/openai_agents   # its own venv: the SDK needs openai>=3
    python examples/openai_agents_quickstart.py

The real ``Runner`` runs the real agent loop; only the model is scripted (no network,
no API key). One call is allowed and runs, one is denied by policy (the model reads
why), one needs a person's approval: the run pauses with ``result.interruptions``,
execauth shows the canonical proposal and its digest, and the run resumes from the
``RunState`` with a grant bound to exactly that proposal.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")  # never call out

from agents import Agent, ModelResponse, Runner, Usage, function_tool
from agents.models.interface import Model
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from execauth_core import AllowListPolicy, Guard
from execauth_openai_agents import ExecAuth


@function_tool
def search_docs(query: str) -> str:
    """Search the help center."""
    return f"3 articles about {query!r}"


@function_tool
def delete_account(user: str) -> str:
    """Delete a customer account."""
    raise AssertionError("never runs: the policy does not allow it")


@function_tool
def send_refund(order: str, amount: str) -> str:
    """Refund an order."""
    return f"refunded {amount} on {order}"


def tool_call(name: str, arguments: str, call_id: str) -> ResponseFunctionToolCall:
    return ResponseFunctionToolCall(
        type="function_call", name=name, arguments=arguments, call_id=call_id, id=f"fc_{call_id}", status="completed"
    )


class ScriptedModel(Model):
    """Stands in for an LLM: one turn of three tool calls, then a final message."""

    def __init__(self) -> None:
        self.turns: list[list[Any]] = [
            [
                tool_call("search_docs", '{"query": "refunds"}', "call_1"),
                tool_call("delete_account", '{"user": "bob"}', "call_2"),
                tool_call("send_refund", '{"order": "A-1001", "amount": "25.00"}', "call_3"),
            ],
            [
                ResponseOutputMessage(
                    type="message",
                    id="msg_1",
                    role="assistant",
                    status="completed",
                    content=[ResponseOutputText(type="output_text", text="All done.", annotations=[])],
                )
            ],
        ]
        self.last_input: Any = None

    async def get_response(self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any) -> ModelResponse:
        self.last_input = input
        return ModelResponse(output=self.turns.pop(0), usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("this example does not stream")


async def main() -> None:
    guard = Guard.local(AllowListPolicy(["search_docs", "send_refund"], require_approval=["send_refund"]))
    gate = ExecAuth(guard, principal="user-42")
    model = ScriptedModel()
    agent = gate.protect(
        Agent(name="support-bot", instructions="Help.", model=model, tools=[search_docs, delete_account, send_refund])
    )

    result = await Runner.run(agent, "help bob")
    state = result.to_state()
    for request in gate.pending(result):
        assert request.pending is not None
        proposal = request.pending.request
        print(f"PAUSED for approval: {proposal.tool}({proposal.args})")
        print(f"  digest {request.proposal_digest}, approval request {request.request_id}")
        gate.approve(request.request_id, approver="alice")  # a person decides at the authority
        state.approve(request.item)  # then the SDK resumes; the gate fetches the grant
    result = await Runner.run(agent, state)

    for item in model.last_input:
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            print(f"{item['call_id']}: {item['output']}")
    print(f"final: {result.final_output}")
    entries = list(guard.audit_log.entries())
    denials = sum(1 for e in entries if e.event == "denial")
    print(f"audit: {len(entries)} records, {denials} denials recorded with executed: false")


if __name__ == "__main__":
    asyncio.run(main())
