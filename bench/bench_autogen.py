"""Overhead of execauth-autogen on the tool-call path (no model in the loop).

AgentChat: StaticWorkbench.call_tool vs ExecAuthWorkbench.call_tool.
Classic: ConversableAgent.execute_function with a plain vs a guarded function map.
Runs whichever API is installed: nox -s bench_autogen, or python bench/bench_autogen.py [--n 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import time
import warnings

from _report import report  # bench/ is on sys.path: these run as scripts

from execauth_core import AllowListPolicy, Guard


def search(query: str, limit: int = 10) -> str:
    return f"{len(query) + limit}"


def agentchat(n: int) -> None:
    from autogen_core.tools import FunctionTool, StaticWorkbench

    from execauth_autogen import ExecAuthWorkbench

    guard = Guard.local(AllowListPolicy(["search"]))
    bare = StaticWorkbench([FunctionTool(search, description="s")])
    gated = ExecAuthWorkbench([FunctionTool(search, description="s")], guard, principal="u")

    async def run(wb, n):
        out = []
        for i in range(n + 200):
            t = time.perf_counter_ns()
            r = await wb.call_tool("search", {"query": f"q{i}"}, call_id=f"c{i}")
            assert not r.is_error
            if i >= 200:
                out.append((time.perf_counter_ns() - t) / 1000)
        return out

    report("agentchat call_tool", asyncio.run(run(bare, n)), asyncio.run(run(gated, n)))


def classic(n: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import autogen
    from autogen.io import IOStream

    from execauth_autogen import ExecAuthExecutorMixin, ExecAuthFunctionGate

    class Quiet:
        def print(self, *a, **k):
            pass

        def send(self, *a, **k):
            pass

        def input(self, *a, **k):
            return ""

    class Ex(ExecAuthExecutorMixin, autogen.ConversableAgent):
        pass

    guard = Guard.local(AllowListPolicy(["search"]))
    bare = autogen.ConversableAgent("b", llm_config=False)
    bare.register_function({"search": search})
    gated = Ex("g", llm_config=False)
    gated.register_function({"search": search})
    ExecAuthFunctionGate(guard, principal="u").protect(gated)

    def run(agent, n):
        out = []
        for i in range(n + 200):
            t = time.perf_counter_ns()
            ok, _ = agent.execute_function({"name": "search", "arguments": f'{{"query": "q{i}"}}'}, call_id=f"c{i}")
            assert ok
            if i >= 200:
                out.append((time.perf_counter_ns() - t) / 1000)
        return out

    with IOStream.set_default(Quiet()):
        report("classic execute_function", run(bare, n), run(gated, n))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    n = ap.parse_args().n
    if importlib.util.find_spec("autogen_core"):
        agentchat(n)
    if importlib.util.find_spec("autogen"):
        classic(n)
