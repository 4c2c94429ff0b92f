"""Shared test helpers: real CrewAI tools that record what ran, crews on a scripted model."""

from __future__ import annotations

from typing import Any

from crewai import Agent, Crew, Task
from crewai.tools import BaseTool

from execauth_core import Guard
from execauth_crewai.testing import ScriptedLLM

# RFC 8032 section 7.1, TEST 1 secret key: deterministic keys for tests.
RFC8032_SEED_1 = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


class Ledger:
    """Every real tool execution, in order: the ground truth of what ran."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def make_tools(ledger: Ledger) -> dict[str, BaseTool]:
    """Real CrewAI tools that record each execution in ``ledger``."""

    class Search(BaseTool):
        name: str = "search"
        description: str = "Search the documentation."

        def _run(self, q: str, limit: int = 3) -> str:
            ledger.calls.append(("search", {"q": q, "limit": limit}))
            return f"results for {q}"

    class Transfer(BaseTool):
        name: str = "transfer"
        description: str = "Move money."

        def _run(self, amount: str, to: str) -> str:
            ledger.calls.append(("transfer", {"amount": amount, "to": to}))
            return f"sent {amount} to {to}"

    class DropTable(BaseTool):
        name: str = "drop_table"
        description: str = "Drop a database table."

        def _run(self, table: str) -> str:
            ledger.calls.append(("drop_table", {"table": table}))
            return f"dropped {table}"

    class Flaky(BaseTool):
        name: str = "flaky"
        description: str = "Always fails."

        def _run(self, q: str) -> str:
            ledger.calls.append(("flaky", {"q": q}))
            raise ValueError("backend exploded")

    return {t.name: t for t in (Search(), Transfer(), DropTable(), Flaky())}


def crew_for(tools: list[BaseTool], script: list[Any], *, native: bool = True, role: str = "researcher") -> Crew:
    """A one-agent, one-task crew whose model is ``script``."""
    llm = ScriptedLLM(model="scripted", script=script, native=native)
    agent = Agent(role=role, goal="answer", backstory="a test agent", llm=llm, tools=tools, verbose=False)
    task = Task(description="do the thing", expected_output="an answer", agent=agent)
    return Crew(agents=[agent], tasks=[task], verbose=False)


def llm_of(crew: Crew) -> ScriptedLLM:
    llm = crew.agents[0].llm
    assert isinstance(llm, ScriptedLLM)
    return llm


def audit(guard: Guard) -> list[tuple[str, bool, list[str], str | None]]:
    """(event, executed, reason codes, tool) of every decisive audit entry."""
    return [
        (e.event, e.executed, list(e.body.get("reason_codes", [])), e.body.get("tool"))
        for e in guard.audit_log.entries()
        if e.event in ("denial", "execution")
    ]
