"""A LangGraph agent loop (model node -> tools_condition -> guarded ToolNode) driven by
a scripted chat model: no network, no LLM. Used to run the suite through a remote guard."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition

from execauth_conformance import AdapterHarness, CallOutcome, ToolCallCase
from execauth_core import Guard
from execauth_langgraph import guarded_tool_node


class _Scripted(GenericFakeChatModel):
    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> _Scripted:
        return self


class LangGraphHarness(AdapterHarness):
    name = "langgraph"

    def run_tool_call(
        self, guard: Guard, case: ToolCallCase, tool_fn: Callable[..., Any], *, token_provider: Any = None
    ) -> CallOutcome:
        ran: list[bool] = []

        def real(**kw: Any) -> Any:
            ran.append(True)
            return tool_fn(**kw)

        tool = StructuredTool.from_function(
            func=real,
            name=case.tool,
            description=f"{case.tool} tool",
            args_schema={"type": "object", "properties": {a: {} for a in case.args}},
        )
        call = {"name": case.tool, "args": case.args, "id": case.call_id, "type": "tool_call"}
        model = _Scripted(messages=iter([AIMessage(content="", tool_calls=[call]), AIMessage(content="done")]))

        def agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
            return {"messages": [model.invoke(state["messages"])]}

        graph = StateGraph(MessagesState)
        graph.add_node("agent", agent)
        graph.add_node(
            "tools",
            guarded_tool_node(
                [tool],
                guard,
                principal=case.principal,
                agent=case.agent,
                token_provider=token_provider,
                approvals=False,
            ),
        )
        graph.add_edge(START, "agent")
        graph.add_conditional_edges("agent", tools_condition)
        graph.add_edge("tools", "agent")
        app = graph.compile(checkpointer=InMemorySaver())
        out = app.invoke({"messages": [HumanMessage("go")]}, {"configurable": {"thread_id": case.call_id}})
        seen = [m for m in out["messages"] if isinstance(m, ToolMessage)]
        return CallOutcome(executed=bool(ran), model_saw=str(seen[-1].content) if seen else "")
