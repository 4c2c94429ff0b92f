"""CrewAI: the same native tool-call id proposed again (a re-run kickoff replaying the
model's call) follows the effect ledger: the tool runs once."""

from __future__ import annotations

from execauth_crewai import CrewGuard
from execauth_crewai.testing import tool_call, tool_results

from .helpers import audit, crew_for, llm_of


def test_the_same_call_id_proposed_again_does_not_run_again(ledger, tools, make_guard):
    guard = make_guard(["search"])
    cg = CrewGuard(guard, principal="user-42")
    script = [[tool_call("search", {"q": "refunds"}, "call_1")], "done"]
    cg.kickoff(crew_for([cg.tool(tools["search"])], list(script)))
    again = crew_for([cg.tool(tools["search"])], list(script))
    cg.kickoff(again)
    assert ledger.calls == [("search", {"q": "refunds", "limit": 3})]
    [seen] = tool_results(llm_of(again))
    assert "LEDGER_ALREADY_SUCCEEDED" in seen
    assert audit(guard)[-1] == ("denial", False, ["LEDGER_ALREADY_SUCCEEDED"], "search")
    other = crew_for([cg.tool(tools["search"])], [[tool_call("search", {"q": "refunds"}, "call_2")], "done"])
    cg.kickoff(other)
    assert len(ledger.calls) == 2
