"""execauth + CrewAI, offline: a scripted model asks for three tool calls in one turn.

    # from the repository root of a checkout (the packages are not published yet):
    pip install ./packages/core ./packages/crewai   # its own venv: crewai pins pydantic and openai
    python examples/crewai_quickstart.py

A real Crew.kickoff runs them. One is allowed and runs; one is denied by policy
and never runs (the model is told the reason code); one needs a person's approval:
it is refused with the pending approval, which is then approved and resumed with
exactly the proposed arguments. The audit log shows every decision.
"""

from __future__ import annotations

import os

# No telemetry lookups (they also slow process exit by ~14 s). Before importing crewai.
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")

from crewai import Agent, Crew, Task
from crewai.tools import tool

from execauth_core import AllowListPolicy, Guard
from execauth_crewai import CrewGuard
from execauth_crewai.testing import ScriptedLLM, tool_call, tool_results


@tool("search_docs")
def search_docs(query: str) -> str:
    """Search the help center."""
    return f"3 articles about {query!r}"


@tool("delete_account")
def delete_account(user: str) -> str:
    """Delete a customer account."""
    raise AssertionError("never runs: the policy does not allow it")


@tool("send_refund")
def send_refund(order: str, amount: str) -> str:
    """Refund an order."""
    return f"refunded {amount} on {order}"


def main() -> None:
    guard = Guard.local(AllowListPolicy(allow=["search_docs"], require_approval=["send_refund"]))
    crew_guard = CrewGuard(guard, principal="user-42")

    # Stands in for an LLM: one turn with three native tool calls, then an answer.
    llm = ScriptedLLM(
        model="scripted",
        script=[
            [
                tool_call("search_docs", {"query": "refund policy"}, "call_1"),
                tool_call("delete_account", {"user": "bob"}, "call_2"),
                tool_call("send_refund", {"order": "A-1", "amount": "25.00"}, "call_3"),
            ],
            "Found the policy; the deletion was refused; the refund awaits approval.",
        ],
    )
    agent = Agent(
        role="support-agent",
        goal="help the customer",
        backstory="Careful support agent.",
        llm=llm,
        tools=crew_guard.tools(search_docs, delete_account, send_refund),
    )
    crew = Crew(agents=[agent], tasks=[Task(description="Handle ticket 7", expected_output="a reply", agent=agent)])

    with crew_guard.guarding():  # the hooks exist only inside this block
        result = crew.kickoff()

    print("What the model was shown:")
    for text in tool_results(llm):
        print("  -", text)
    print("Final answer:", result)

    # A person approves the pending refund: exactly these arguments, nothing else.
    [pending] = crew_guard.pending_approvals()
    print(f"\nPending approval {pending.request_id} for {pending.tool} {pending.arguments}")
    crew_guard.approve(pending.request_id, approver="alice")
    print("Resumed after approval:", crew_guard.resume(pending.request_id))

    print("\nAudit log:")
    for entry in guard.audit_log.entries():
        if entry.event in ("denial", "execution"):
            print(
                f"  {entry.event:9} executed={entry.executed!s:5} {entry.body['tool']:15} {entry.body['reason_codes']}"
            )


if __name__ == "__main__":
    main()
