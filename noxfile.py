"""The developer's front door: nox -s demo | tests | lint | typecheck | bench.

The test matrix itself lives in tox.ini (one place); `tests` calls tox.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests"]
nox.options.error_on_missing_interpreters = True


@nox.session
def demo(session: nox.Session) -> None:
    """The quickstart: a scripted agent, one allowed, one denied, one replayed call."""
    session.install("./packages/core")
    session.run("execauth", "demo", "--dir", ".execauth-demo")


@nox.session
def tests(session: nox.Session) -> None:
    """Every test environment in tox.ini."""
    session.install("tox>=4.20")
    strict = ["--skip-missing-interpreters=false"] if os.environ.get("CI") == "true" else []
    results = Path("results")
    shutil.rmtree(results, ignore_errors=True)  # no stale results from an earlier run
    session.run("tox", "run", *strict, *session.posargs, env={"EXECAUTH_RESULTS_DIR": str(results.resolve())})
    # The cross-adapter check: every conformance run agrees with the vectors and each other.
    session.run("python", "conformance/tools/compare_results.py", str(results))


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "packages", "conformance", "bench", "examples")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install(
        "mypy>=1.11", "types-PyYAML", "types-jsonschema", "./packages/core[test]", "./conformance", "./packages/server"
    )
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Latency figures (p50/p99); targets are printed next to the measurements."""
    session.install("./packages/core[redis,postgres]", "./packages/langgraph")
    session.run("python", "bench/bench_core.py", *session.posargs)
    session.run("python", "bench/bench_langgraph.py")
    session.run("python", "bench/bench_stores.py")


@nox.session
def bench_autogen(session: nox.Session) -> None:
    """execauth-autogen overhead per tool call, AgentChat and classic (own venv)."""
    session.install("./packages/core", "./packages/autogen[agentchat,classic,test]")
    session.run("python", "bench/bench_autogen.py", *session.posargs)


@nox.session
def bench_crewai(session: nox.Session) -> None:
    """execauth-crewai overhead per tool call and per kickoff, offline (own venv: crewai pins)."""
    session.install("./packages/core", "./packages/crewai")
    env = {"CREWAI_DISABLE_TELEMETRY": "true", "CREWAI_TRACING_ENABLED": "false", "OTEL_SDK_DISABLED": "true"}
    session.run("python", "bench/bench_crewai.py", *session.posargs, env=env)


@nox.session
def bench_openai_agents(session: nox.Session) -> None:
    """execauth-openai-agents overhead per tool call and per Runner.run, offline (own venv)."""
    session.install("./packages/core", "./packages/openai_agents")
    session.run("python", "bench/bench_openai_agents.py", *session.posargs, env={"OPENAI_AGENTS_DISABLE_TRACING": "1"})


@nox.session
def bench_server(session: nox.Session) -> None:
    """execauth-server: decide round trip over loopback beside in-process, calls/s on 1 and 2 workers."""
    session.install("./packages/core[remote,postgres]", "./packages/server", "psycopg[binary]>=3.1")
    session.run("python", "bench/bench_server.py", *session.posargs)


@nox.session
def bench_executor(session: nox.Session) -> None:
    """Executor-side verification: Executor.admit in process, ExecAuthMiddleware overhead over loopback."""
    session.install("./packages/core", "./packages/server")
    session.run("python", "bench/bench_executor.py", *session.posargs)
