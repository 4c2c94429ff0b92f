"""Overhead of execauth-openai-agents, per tool call and per run.

Per call (no model): FunctionTool.on_invoke_tool(ctx, args) on a bare @function_tool vs
the same tool gated with ExecAuth.wrap (the gate sits in on_invoke_tool); the core's share
of that (guard.proposal + guard.arun around a no-op); and the needs_approval policy
preview the gate adds before each call. Variants run interleaved, so a shared machine's
load shifts hit them alike; every guarded iteration asserts the tool body really ran.
Per run: Runner.run(agent, ...) with a scripted, offline Model that asks for one function
call and then answers; bare agent vs gate.protect(agent), without and with gate.hooks().
Offline: tracing is disabled and the scripted model makes no HTTP call.

    nox -s bench_openai_agents     # or: python bench/bench_openai_agents.py [--n 2000] [--runs 200]
"""

from __future__ import annotations

import os

# Before the SDK is imported: with an API key in the environment it would export traces.
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

import argparse
import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from typing import Any

import agents
from _report import pct, report  # bench/ is on sys.path: these run as scripts
from agents import Agent, FunctionTool, ModelResponse, Runner, Usage, function_tool
from agents.models.interface import Model
from agents.run_context import RunContextWrapper
from agents.tool_context import ToolContext
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from execauth_core import AllowListPolicy, Guard
from execauth_openai_agents import ExecAuth

if hasattr(agents, "set_tracing_disabled"):
    agents.set_tracing_disabled(True)

WARMUP = 200
RUN_WARMUP = 20
ANSWER = "done"

Step = Callable[[int], Awaitable[float]]  # one timed iteration -> microseconds


def make_search(ran: list[int]) -> FunctionTool:
    """A fresh @function_tool whose every execution bumps ``ran[0]`` (wrap() gates in place,
    so the bare and the gated figures need two tool objects)."""

    @function_tool
    def search(query: str, limit: int = 10) -> str:
        """Search the docs.

        Args:
            query: what to look for.
            limit: how many hits.
        """
        ran[0] += 1
        return f"{len(query) + limit}"

    return search


def expected(query: str) -> str:
    return f"{len(query) + 10}"


def tool_context(agent: Agent[Any], args: str, call_id: str) -> ToolContext[Any]:
    # The public constructor, as the SDK builds it for a call (keywords: 0.20 and 0.24).
    return ToolContext(context=None, tool_name="search", tool_call_id=call_id, tool_arguments=args, agent=agent)


async def interleaved(steps: list[Step], n: int, warmup: int) -> list[list[float]]:
    """Run the steps round-robin (the order rotating every iteration), so a change in
    the load of a shared machine hits every variant alike; warm-up iterations dropped."""
    out: list[list[float]] = [[] for _ in steps]
    for i in range(n + warmup):
        k = i % len(steps)
        for j in list(range(k, len(steps))) + list(range(k)):
            elapsed = await steps[j](i)
            if i >= warmup:
                out[j].append(elapsed)
    return out


# -- per tool call, no model -------------------------------------------------------------


def per_call(n: int) -> None:
    agent: Agent[Any] = Agent(name="bench-bot")
    guard = Guard.local(AllowListPolicy(["search"]))
    gate = ExecAuth(guard, principal="u")
    bare_ran, gated_ran = [0], [0]
    bare = make_search(bare_ran)
    gated = gate.wrap(make_search(gated_ran))

    def invoke(tool: FunctionTool, ran: list[int], prefix: str) -> Step:
        async def step(i: int) -> float:
            query = f"q{i}"
            args = f'{{"query": "{query}"}}'
            ctx = tool_context(agent, args, f"{prefix}{i}")
            before = ran[0]
            t = time.perf_counter_ns()
            result = await tool.on_invoke_tool(ctx, args)
            elapsed = (time.perf_counter_ns() - t) / 1000
            # A denial is a string too: check that the tool body really ran, with these args.
            assert ran[0] == before + 1 and result == expected(query), (result, ran[0], before)
            return elapsed

        return step

    # The core's share: guard.proposal + guard.arun on the proposal the gate builds, around
    # a no-op call (no SDK, no thread hop), on a guard of its own.
    core_guard = Guard.local(AllowListPolicy(["search"]))
    core_ran = [0]

    async def noop() -> str:
        core_ran[0] += 1
        return "ok"

    async def core(i: int) -> float:
        t = time.perf_counter_ns()
        request = core_guard.proposal(
            "search", {"limit": 10, "query": f"q{i}"}, principal="u", agent="bench-bot", call_id=f"k{i}"
        )
        result = await core_guard.arun(request, noop)
        elapsed = (time.perf_counter_ns() - t) / 1000
        assert result == "ok" and core_ran[0] == i + 1
        return elapsed

    # The other cost on a call's path: the needs_approval preview (policy evaluation, no
    # token, no record), run by the SDK before the call. A bare tool's is a bool.
    check = gated.needs_approval
    assert callable(check)
    wrapper: RunContextWrapper[Any] = RunContextWrapper(context=None)

    async def preview(i: int) -> float:
        params = {"query": f"q{i}"}
        t = time.perf_counter_ns()
        pause = await check(wrapper, params, f"p{i}")
        elapsed = (time.perf_counter_ns() - t) / 1000
        assert pause is False
        return elapsed

    bare_t, gated_t, core_t, preview_t = asyncio.run(
        interleaved([invoke(bare, bare_ran, "b"), invoke(gated, gated_ran, "g"), core, preview], n, WARMUP)
    )
    assert bare_ran[0] == gated_ran[0] == n + WARMUP
    report("on_invoke_tool", bare_t, gated_t)
    c, p = pct(core_t), pct(preview_t)
    print(f"  of which the core (guard.proposal + guard.arun, no-op call): p50 {c[0]:.0f} us p99 {c[1]:.0f}")
    print(f"  plus, before the call, the needs_approval preview: p50 {p[0]:.0f} us p99 {p[1]:.0f}")


# -- per run, end to end -----------------------------------------------------------------


class OneCallModel(Model):
    """Offline model: the first turn of a run asks for search(query=...), the turn that
    sees its output answers ANSWER. Decided from the input alone, so every run is
    independent; call ids are unique across runs."""

    def __init__(self) -> None:
        self.ids = itertools.count()

    async def get_response(self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any) -> ModelResponse:
        items = input if isinstance(input, list) else []
        if any(isinstance(it, dict) and it.get("type") == "function_call_output" for it in items):
            output: list[Any] = [
                ResponseOutputMessage(
                    type="message",
                    id="msg_1",
                    role="assistant",
                    status="completed",
                    content=[ResponseOutputText(type="output_text", text=ANSWER, annotations=[])],
                )
            ]
        else:
            k = next(self.ids)
            output = [
                ResponseFunctionToolCall(
                    type="function_call",
                    name="search",
                    arguments=f'{{"query": "r{k}"}}',
                    call_id=f"call_{k}",
                    id=f"fc_{k}",
                    status="completed",
                )
            ]
        return ModelResponse(output=output, usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:  # abstract in Model; unused here
        raise NotImplementedError("the bench only uses Runner.run")


def per_run(runs: int) -> None:
    def agent_with(ran: list[int]) -> Agent[Any]:
        return Agent(name="bench-bot", instructions="Search.", model=OneCallModel(), tools=[make_search(ran)])

    def run(agent: Agent[Any], ran: list[int], hooks: Any = None) -> Step:
        async def step(i: int) -> float:
            before = ran[0]
            t = time.perf_counter_ns()
            result = await Runner.run(agent, "find it", hooks=hooks)
            elapsed = (time.perf_counter_ns() - t) / 1000
            assert ran[0] == before + 1 and result.final_output == ANSWER, (result.final_output, ran[0], before)
            return elapsed

        return step

    bare_ran, gated_ran, hooked_ran = [0], [0], [0]
    gate = ExecAuth(Guard.local(AllowListPolicy(["search"])), principal="u")
    hooked_gate = ExecAuth(Guard.local(AllowListPolicy(["search"])), principal="u")
    steps = [
        run(agent_with(bare_ran), bare_ran),
        run(gate.protect(agent_with(gated_ran)), gated_ran),
        run(hooked_gate.protect(agent_with(hooked_ran)), hooked_ran, hooked_gate.hooks()),
    ]
    bare_t, gated_t, hooked_t = asyncio.run(interleaved(steps, runs, RUN_WARMUP))
    assert bare_ran[0] == gated_ran[0] == hooked_ran[0] == runs + RUN_WARMUP
    report("Runner.run, protect()", bare_t, gated_t)
    report("Runner.run, protect() + hooks()", bare_t, hooked_t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000, help="tool calls per per-call figure")
    ap.add_argument("--runs", type=int, default=200, help="Runner.run runs per per-run figure")
    a = ap.parse_args()
    print(f"execauth-openai-agents overhead (openai-agents {version('openai-agents')}), microseconds")
    print(f"per tool call, no model, n={a.n} (+{WARMUP} warm-up)")
    per_call(a.n)
    print(f"per run (one function call + final answer, scripted model), runs={a.runs} (+{RUN_WARMUP} warm-up)")
    per_run(a.runs)


if __name__ == "__main__":
    main()
