"""execauth + LangGraph, offline: a scripted model asks for three tool calls in one turn.

    # from the repository root of a checkout (the packages are not published yet):
    pip install ./packages/core ./packages/langgraph
    python examples/langgraph_quickstart.py

One is allowed and runs, one is denied by policy (the model is told why), one needs a
person's approval: the graph pauses with LangGraph's interrupt(), shows the canonical
proposal, and resumes with Command(resume=...) naming the approved proposal digest and approval id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition
from langgraph.types import Command

from execauth_core import AllowListPolicy, Guard
from execauth_langgraph import guarded_tool_node


@tool
def search_docs(query: str) -> str:
    """Search the help center."""
    return f"3 articles about {query!r}"


@tool
def delete_account(user: str) -> str:
    """Delete a customer account."""
    raise AssertionError("never runs: the policy does not allow it")


@tool
def send_refund(order: str, amount: str) -> str:
    """Refund an order."""
    return f"refunded {amount} on {order}"


class ScriptedModel(GenericFakeChatModel):
    """Stands in for an LLM: replays scripted messages (no network)."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedModel:
        return self


def main() -> None:
    guard = Guard.local(AllowListPolicy(["search_docs", "send_refund"], require_approval=["send_refund"]))
    tools = [search_docs, delete_account, send_refund]
    model = ScriptedModel(
        messages=iter(
            [
                AIMessage(
                    "",
                    tool_calls=[
                        {"name": "search_docs", "args": {"query": "refunds"}, "id": "call_1"},
                        {"name": "delete_account", "args": {"user": "bob"}, "id": "call_2"},
                        {"name": "send_refund", "args": {"order": "A-1001", "amount": "25.00"}, "id": "call_3"},
                    ],
                ),
                AIMessage("All done."),
            ]
        )
    )

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", guarded_tool_node(tools, guard, principal="user-42", agent="support-bot"))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    app = graph.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "demo"}}

    out = app.invoke({"messages": [HumanMessage("help bob")]}, config)
    (pause,) = out["__interrupt__"]
    request = pause.value
    print(f"PAUSED for approval: {request['proposal']['tool']}({request['proposal']['args']})")
    print(f"  digest {request['proposal_digest']}")
    # The answer is the interrupt's resume_with (it names this request's approval_id).
    out = app.invoke(Command(resume={**request["resume_with"], "approver": "alice"}), config)
    for message in out["messages"]:
        if isinstance(message, ToolMessage):
            print(f"{message.tool_call_id}: [{message.status}] {message.content}")
    denials = sum(1 for e in guard.audit_log.entries() if e.event == "denial")
    print(f"audit: {guard.audit_log.head()[0]} records, {denials} denials recorded with executed: false")


if __name__ == "__main__":
    main()
