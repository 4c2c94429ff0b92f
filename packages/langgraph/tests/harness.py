"""A real LangGraph agent loop with a scripted, offline chat model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition

from execauth_conformance import AdapterHarness, CallOutcome, ToolCallCase
from execauth_core import Guard
from execauth_langgraph import ExecAuthToolWrapper, guarded_tool_node


class ScriptedChatModel(GenericFakeChatModel):
    """Replays the given AI messages; ``bind_tools`` is accepted and ignored, so the
    real agent loop (model node -> tools_condition -> ToolNode) runs unchanged."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self


def scripted(*messages: AIMessage) -> ScriptedChatModel:
    return ScriptedChatModel(messages=iter(messages))


def tool_call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


def make_tool(name: str, fn: Callable[..., Any], arg_names: Sequence[str]) -> BaseTool:
    # A permissive JSON schema: the tool accepts what the model sends, so what reaches
    # the guard (and the Court's own schema check) is exactly the model's output.
    schema = {"type": "object", "properties": {a: {} for a in arg_names}}
    return StructuredTool.from_function(
        func=lambda **kw: fn(**kw), name=name, description=f"{name} tool", args_schema=schema
    )


def build_graph(
    model: Any, tools: Sequence[BaseTool], guard: Guard, *, checkpointer: Any = None, **wrapper: Any
) -> Any:
    bound = model.bind_tools(tools)

    def agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [bound.invoke(state["messages"])]}

    options = wrapper.pop("tool_node_options", {})
    gate = ExecAuthToolWrapper(guard, **wrapper)
    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", guarded_tool_node(tools, gate, tool_node_options=options))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    app = graph.compile(checkpointer=checkpointer if checkpointer is not None else InMemorySaver())
    GATES[id(app)] = gate
    return app


GATES: dict[int, ExecAuthToolWrapper] = {}
"""The gate of each graph built here (the tests approve through it)."""


def gate_of(graph: Any) -> ExecAuthToolWrapper:
    return GATES[id(graph)]


class LangGraphHarness(AdapterHarness):
    name = "langgraph"

    def run_tool_call(
        self, guard: Guard, case: ToolCallCase, tool_fn: Callable[..., Any], *, token_provider: Any = None
    ) -> CallOutcome:
        ran: list[bool] = []

        def real(**kw: Any) -> Any:
            ran.append(True)
            return tool_fn(**kw)

        model = scripted(
            AIMessage(content="", tool_calls=[tool_call(case.tool, case.args, case.call_id)]), AIMessage(content="done")
        )
        graph = build_graph(
            model,
            [make_tool(case.tool, real, list(case.args))],
            guard,
            principal=case.principal,
            agent=case.agent,
            token_provider=token_provider,
            approvals=False,
        )
        out = graph.invoke({"messages": [HumanMessage("go")]}, {"configurable": {"thread_id": case.call_id}})
        seen = [m for m in out["messages"] if isinstance(m, ToolMessage)]
        return CallOutcome(executed=bool(ran), model_saw=str(seen[-1].content) if seen else "")
