"""Overhead of execauth-langgraph: a ToolNode with the execauth wrapper vs a bare one.

    nox -s bench     # or: python bench/bench_langgraph.py [--n 500]

Runs a one-node graph (just the ToolNode) on an AIMessage carrying one tool call (no
model in the loop), so the figures are the tool-call path itself.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from execauth_core import AllowListPolicy, Guard
from execauth_langgraph import guarded_tool_node


@tool
def search(query: str, limit: int = 10) -> str:
    """Search."""
    return f"{len(query) + limit}"


def graph_of(node: Any) -> Any:
    graph = StateGraph(MessagesState)
    graph.add_node("tools", node)
    graph.add_edge(START, "tools")
    return graph.compile()


def measure(node: Any, n: int) -> tuple[float, float]:
    node = graph_of(node)
    out = []
    for i in range(n + 100):
        msg = AIMessage("", tool_calls=[{"name": "search", "args": {"query": f"q{i}"}, "id": f"c{i}"}])
        t = time.perf_counter_ns()
        node.invoke({"messages": [msg]})
        if i >= 100:
            out.append((time.perf_counter_ns() - t) / 1000)
    out.sort()
    return statistics.median(out), out[int(len(out) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=500)
    n = parser.parse_args().n
    bare = measure(ToolNode([search]), n)
    guarded = measure(guarded_tool_node([search], Guard.local(AllowListPolicy(["search"])), principal="u"), n)
    print(f"execauth-langgraph overhead, n={n} (microseconds)")
    print(f"{'ToolNode':28} {'p50':>9} {'p99':>9}")
    print(f"{'bare':28} {bare[0]:9.1f} {bare[1]:9.1f}")
    print(f"{'guarded (memory stores)':28} {guarded[0]:9.1f} {guarded[1]:9.1f}")
    print(f"{'overhead':28} {guarded[0] - bare[0]:9.1f} {guarded[1] - bare[1]:9.1f}")


if __name__ == "__main__":
    main()
