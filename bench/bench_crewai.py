"""Overhead of execauth-crewai: CrewAI tool calls and kickoffs, bare vs gated by a CrewGuard.

    nox -s bench_crewai     # or: python bench/bench_crewai.py [--n 2000] [--kickoffs 50]

1. The tool path, no model: what CrewAI's AgentExecutor does around one native tool
   call, i.e. the before-tool-call hooks (crewai.hooks.tool_hooks), BaseTool.run, the
   after-tool-call hooks, with a bare tool vs a CrewGuard.tool inside
   CrewGuard.guarding(). Split by layer: the hooks (CrewGuard's before hook builds the
   proposal and leaves an admission, its after hook; plus CrewAI's own dispatch of
   them) and the tool's run (GuardedTool.run: take the admission, Guard.run = decide,
   sign, verify, consume the token, audit, then the real BaseTool.run). A reference
   line shows what CrewAI's dispatch costs with two no-op scoped hooks.
2. End to end: one Crew.kickoff driven by a scripted model (one native tool call, then
   the final answer), bare vs CrewGuard.kickoff.

Bare and guarded iterations alternate, so drift on a shared machine hits both alike;
warm-up iterations are excluded. Every call asserts that the tool really ran, once,
with its arguments: a silently denied call cannot make the guarded figures look good.
"""

from __future__ import annotations

import os

# No telemetry/tracing lookups (they also delay process exit by ~14 s). Before crewai.
os.environ.setdefault("CREWAI_DISABLE_TELEMETRY", "true")
os.environ.setdefault("CREWAI_TRACING_ENABLED", "false")
os.environ.setdefault("OTEL_SDK_DISABLED", "true")

import argparse
import statistics
import time
from typing import Any

from _report import pct, report  # bench/ is on sys.path: these run as scripts
from crewai import Agent, Crew, Task
from crewai.hooks.dispatch import InterceptionPoint, scoped_hooks
from crewai.hooks.tool_hooks import ToolCallHookContext, run_after_tool_call_hooks, run_before_tool_call_hooks
from crewai.llms.base_llm import BaseLLM
from crewai.tools import BaseTool

from execauth_core import AllowListPolicy, Guard, canonicalize
from execauth_crewai import CrewGuard

#: Every real execution of the tool, in order (the query it ran with).
executed: list[str] = []


class Search(BaseTool):
    name: str = "search"
    description: str = "Search the documentation."

    def _run(self, query: str, limit: int = 10) -> str:
        executed.append(query)
        return f"found {query} ({limit})"


def expected(query: str) -> str:
    return f"found {query} (10)"


class BenchLLM(BaseLLM):
    """A scripted model: one native call of ``search`` with ``query``, then the final answer.

    Stateless: it answers "done" once a tool result is in the conversation, and keeps
    what that tool result said in ``saw``.
    """

    query: str = "q"
    call_id: str = "call_1"
    saw: str | None = None

    def call(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
        results = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "tool"]
        if results:
            self.saw = results[-1]
            return "done"
        arguments = canonicalize({"query": self.query}).decode("utf-8")
        return [{"id": self.call_id, "type": "function", "function": {"name": "search", "arguments": arguments}}]

    async def acall(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
        return self.call(messages)

    def supports_function_calling(self) -> bool:
        return True

    def get_input_tokens_count(self, messages: Any, tools: Any = None, response_model: Any = None) -> int:
        return 1  # the base class estimates (and warns) on every call otherwise


def agent_with(tool: BaseTool, llm: BaseLLM) -> Agent:
    return Agent(role="researcher", goal="answer", backstory="a bench agent", llm=llm, tools=[tool], verbose=False)


def us(t0: int, t1: int) -> float:
    return (t1 - t0) / 1000


def tool_call(tool: BaseTool, agent: Agent, query: str) -> tuple[float, float]:
    """One native tool call the way CrewAI's executor makes it: (hooks us, run us)."""
    args: dict[str, Any] = {"query": query}
    structured = tool.to_structured_tool()
    before = ToolCallHookContext(tool_name="search", tool_input=args, tool=structured, agent=agent)
    after = ToolCallHookContext(tool_name="search", tool_input=args, tool=structured, agent=agent)
    n0 = len(executed)
    t0 = time.perf_counter_ns()
    blocked = run_before_tool_call_hooks(before)
    t1 = time.perf_counter_ns()
    result = tool.run(**args)
    t2 = time.perf_counter_ns()
    after.tool_result, after.raw_tool_result = str(result), result
    shown = run_after_tool_call_hooks(after)
    t3 = time.perf_counter_ns()
    assert not blocked and result == expected(query) and shown == expected(query), (blocked, result, shown)
    assert len(executed) == n0 + 1 and executed[-1] == query, "the tool did not run exactly once"
    return us(t0, t1) + us(t2, t3), us(t1, t2)


def tool_path(n: int, warmup: int) -> None:
    guard = Guard.local(AllowListPolicy(["search"]))
    crew_guard = CrewGuard(guard, principal="u")
    bare, gated = Search(), crew_guard.tool(Search())
    llm = BenchLLM(model="bench")
    bare_agent, gated_agent = agent_with(bare, llm), agent_with(gated, llm)

    def noop(context: ToolCallHookContext) -> None:
        return None

    noop_scope: dict[InterceptionPoint, list[Any]] = {
        InterceptionPoint.PRE_TOOL_CALL: [noop],
        InterceptionPoint.POST_TOOL_CALL: [noop],
    }
    hooks: dict[str, list[float]] = {"bare": [], "noop": [], "guarded": []}
    runs: dict[str, list[float]] = {"bare": [], "noop": [], "guarded": []}
    core: list[float] = []
    for i in range(n + warmup):
        samples = {"bare": tool_call(bare, bare_agent, f"b{i}")}
        with scoped_hooks(noop_scope):
            samples["noop"] = tool_call(bare, bare_agent, f"n{i}")
        with crew_guard.guarding():
            samples["guarded"] = tool_call(gated, gated_agent, f"g{i}")
        core_us = guard_run(guard, f"c{i}")
        if i >= warmup:
            for key, (hook_us, run_us) in samples.items():
                hooks[key].append(hook_us)
                runs[key].append(run_us)
            core.append(core_us)
    total = {key: [h + r for h, r in zip(hooks[key], runs[key], strict=True)] for key in hooks}
    executions = sum(1 for e in guard.audit_log.entries() if e.event == "execution" and e.executed)
    assert executions == 2 * (n + warmup), executions  # every guarded call and every Guard.run ran

    print(f"tool path, no model ({n} calls each, {warmup} warm-up):")
    report("  hooks (before+after)", hooks["bare"], hooks["guarded"])
    report("  tool.run (BaseTool vs GuardedTool)", runs["bare"], runs["guarded"])
    report("  one tool call (hooks + run)", total["bare"], total["guarded"])
    print("  for reference:")
    single("    CrewAI's dispatch of 2 no-op scoped hooks", hooks["noop"])
    single("    BaseTool.run after those no-op hooks", runs["noop"])
    single("    Guard.run alone (execauth-core: decide, sign, verify, consume, audit)", core)


def guard_run(guard: Guard, query: str) -> float:
    """The core guard's share: the same proposal a GuardedTool call makes, no CrewAI."""
    request = guard.proposal("search", {"query": query, "limit": 10}, principal="u", agent="researcher", call_id=None)
    t0 = time.perf_counter_ns()
    result = guard.run(request, lambda: expected(query))
    t1 = time.perf_counter_ns()
    assert result == expected(query)
    return us(t0, t1)


def single(name: str, xs: list[float]) -> None:
    p50, p99 = pct(xs)
    print(f"{name}: p50 {p50:.0f} us p99 {p99:.0f}")


def kickoff(crew: Crew, llm: BenchLLM, run: Any) -> float:
    n0 = len(executed)
    t0 = time.perf_counter_ns()
    out = run(crew)
    t1 = time.perf_counter_ns()
    assert len(executed) == n0 + 1 and executed[-1] == llm.query, "the tool did not run exactly once"
    assert llm.saw == expected(llm.query) and str(out) == "done", (llm.saw, str(out))
    return us(t0, t1)


def kickoffs(k: int, warmup: int) -> None:
    guard = Guard.local(AllowListPolicy(["search"]))
    crew_guard = CrewGuard(guard, principal="u")
    bare, gated = Search(), crew_guard.tool(Search())

    def crew_of(tool: BaseTool, query: str, call_id: str) -> tuple[Crew, BenchLLM]:
        llm = BenchLLM(model="bench", query=query, call_id=call_id)
        agent = agent_with(tool, llm)
        task = Task(description="find it", expected_output="an answer", agent=agent)
        return Crew(agents=[agent], tasks=[task], verbose=False), llm

    out: dict[str, list[float]] = {"bare": [], "guarded": []}
    for i in range(k + warmup):
        # Crews are built outside the timed region: only kickoff() is measured.
        crew, llm = crew_of(bare, f"b{i}", f"call_b{i}")
        bare_us = kickoff(crew, llm, Crew.kickoff)
        crew, llm = crew_of(gated, f"g{i}", f"call_g{i}")
        gated_us = kickoff(crew, llm, crew_guard.kickoff)
        if i >= warmup:
            out["bare"].append(bare_us)
            out["guarded"].append(gated_us)
    print(f"end to end, scripted model, one tool call per kickoff ({k} kickoffs each, {warmup} warm-up):")
    report("  Crew.kickoff", out["bare"], out["guarded"])
    b, g = statistics.median(out["bare"]), statistics.median(out["guarded"])
    print(f"  overhead p50 {(g - b) / b:+.1%} of a bare kickoff")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="tool calls per variant (after 200 warm-up)")
    ap.add_argument("--kickoffs", type=int, default=50, help="kickoffs per variant (after 5 warm-up)")
    args = ap.parse_args()
    import crewai

    print(f"crewai {crewai.__version__}, {os.cpu_count()} CPUs")
    tool_path(args.n, 200)
    kickoffs(args.kickoffs, 5)
