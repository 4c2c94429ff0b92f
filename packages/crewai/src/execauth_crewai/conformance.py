"""The execauth conformance harness for CrewAI (needs ``execauth-conformance``).

Each case runs through a real ``Crew.kickoff``: a :class:`ScriptedLLM` makes one
native tool call (``case.tool``, ``case.args``, id ``case.call_id``), CrewAI's
executor runs the before-tool-call hook and the tool, and :class:`CrewGuard`
gates it. What the model saw is read back from the scripted model's next call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crewai import Agent, Crew, Task
from crewai.tools import BaseTool
from pydantic import create_model

from execauth_conformance import AdapterHarness, CallOutcome, ToolCallCase
from execauth_conformance.harness import TokenProvider
from execauth_core import Guard

from .adapter import CrewGuard
from .testing import ScriptedLLM, tool_call, tool_results


def _tool_for(case: ToolCallCase, tool_fn: Callable[..., Any], ran: list[bool]) -> BaseTool:
    """A real CrewAI tool named ``case.tool`` taking exactly ``case.args``'s parameters.

    Typed ``Any`` so CrewAI's validation hands every value through unchanged (the
    vectors include an integer where a string is expected, and a float amount).
    """
    fields: dict[str, Any] = {name: (Any, ...) for name in case.args}
    schema = create_model(f"{case.tool}_args", **fields)

    class VectorTool(BaseTool):
        name: str = case.tool
        description: str = f"The conformance tool {case.tool}."
        args_schema: type = schema

        def _run(self, **kwargs: Any) -> Any:
            ran.append(True)
            return tool_fn(**kwargs)

    return VectorTool()


class CrewAIHarness(AdapterHarness):
    """Runs each conformance case through ``Crew.kickoff`` with a :class:`CrewGuard`."""

    name = "crewai"

    def run_tool_call(
        self,
        guard: Guard,
        case: ToolCallCase,
        tool_fn: Callable[..., Any],
        *,
        token_provider: TokenProvider | None = None,
    ) -> CallOutcome:
        ran: list[bool] = []
        crew_guard = CrewGuard(
            guard,
            principal=case.principal,
            # The vector fixes the agent identity, including "no agent".
            agent_id=lambda context: case.agent,
            token_provider=token_provider,
        )
        llm = ScriptedLLM(model="scripted", script=[[tool_call(case.tool, case.args, case.call_id)], "done"])
        agent = Agent(
            role=case.agent or "agent",
            goal="run the conformance case",
            backstory="a conformance harness",
            llm=llm,
            tools=[crew_guard.tool(_tool_for(case, tool_fn, ran))],
            verbose=False,
        )
        crew = Crew(agents=[agent], tasks=[Task(description="run", expected_output="done", agent=agent)], verbose=False)
        crew_guard.kickoff(crew)
        return CallOutcome(executed=bool(ran), model_saw="\n".join(tool_results(llm)))
