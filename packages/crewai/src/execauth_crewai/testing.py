"""A scripted CrewAI LLM: drive a real Agent/Task/Crew offline, no model, no network.

``ScriptedLLM`` is a ``crewai.llms.base_llm.BaseLLM``: CrewAI's own executor calls
it exactly as it would call a provider and acts on what it returns. Each call
pops the next scripted answer:

* a list of :func:`tool_call` dicts: native function calling (OpenAI shape), the
  executor runs those tools (in parallel when there are several);
* text from :func:`react_action`: a ReAct ``Action:`` the executor parses (use
  ``native=False``);
* any other text: the final answer.

Used by this package's tests, its conformance harness and the quickstart.
"""

from __future__ import annotations

import re
from typing import Any

from crewai.llms.base_llm import BaseLLM
from pydantic import Field

from execauth_core import canonicalize


def tool_call(name: str, args: dict[str, Any], call_id: str = "call_1") -> dict[str, Any]:
    """One native (OpenAI-style) tool call, as a provider would return it."""
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": canonicalize(args).decode("utf-8")},
    }


def react_action(name: str, args: dict[str, Any]) -> str:
    """A ReAct step asking CrewAI to run ``name`` with ``args``."""
    return f"Thought: I should use a tool.\nAction: {name}\nAction Input: {canonicalize(args).decode('utf-8')}"


def react_final(text: str) -> str:
    """A ReAct final answer."""
    return f"Thought: I now know the final answer.\nFinal Answer: {text}"


class ScriptedLLM(BaseLLM):
    """A CrewAI LLM that answers from a script.

    Attributes:
        script: the answers, consumed in order; running out raises (a test bug).
        native: whether CrewAI should use native function calling.
        seen: the messages of every call, in order.
    """

    script: list[Any] = Field(default_factory=list)
    native: bool = True
    seen: list[Any] = Field(default_factory=list)

    def call(
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> Any:
        self.seen.append(list(messages) if isinstance(messages, list) else messages)
        if not self.script:
            raise RuntimeError("ScriptedLLM: the script is exhausted")
        return self.script.pop(0)

    async def acall(
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> Any:
        return self.call(messages, tools, callbacks, available_functions, from_task, from_agent, response_model)

    def supports_function_calling(self) -> bool:
        return self.native

    def get_input_tokens_count(self, messages: Any, tools: Any = None, response_model: Any = None) -> int:
        # The base class logs a warning on every call for its estimate; a script has no tokens.
        return 1


_OBSERVATION = re.compile(r"Observation:\s*(.*)", re.DOTALL)


def tool_results(llm: ScriptedLLM) -> list[str]:
    """What the model was shown as tool results, as of its last call.

    Native calls: the ``tool`` messages. ReAct: the ``Observation:`` CrewAI appends
    to the assistant's action.
    """
    if not llm.seen or not isinstance(llm.seen[-1], list):
        return []
    out: list[str] = []
    for message in llm.seen[-1]:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if message.get("role") == "tool" and isinstance(content, str):
            out.append(content)
        elif message.get("role") == "assistant" and isinstance(content, str):
            match = _OBSERVATION.search(content)
            if match:
                out.append(match.group(1).strip())
    return out
