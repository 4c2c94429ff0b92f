"""The developer's front door: nox -s demo | tests | lint | typecheck | bench.

The test matrix itself lives in tox.ini (one place); `tests` calls tox.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
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


def _python_version(path: str) -> str | None:
    """ "3.10" for an interpreter that runs, None for one that does not (an inactive pyenv shim)."""
    try:
        proc = subprocess.run(  # noqa: S603 (an interpreter path we found)
            [path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _ask(*cmd: str, environ: Mapping[str, str]) -> str:
    """stdout of a command, "" if it cannot run."""
    try:
        proc = subprocess.run(  # noqa: S603 (pyenv, found on PATH)
            cmd, capture_output=True, text=True, env=dict(environ), timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def find_python310(environ: Mapping[str, str] = os.environ) -> str | None:
    """An absolute path to a working CPython 3.10 (the oldest supported), or None.

    EXECAUTH_PY310 if set; else `python3.10` on PATH if it really runs (a pyenv shim of
    a version that is installed but not active fails); else the newest 3.10 that
    `pyenv versions` lists. `.ci/run` and the README command both come through here.
    """
    given = environ.get("EXECAUTH_PY310")
    if given:
        return given
    path = environ.get("PATH")
    on_path = shutil.which("python3.10", path=path)
    if on_path and _python_version(on_path) == "3.10":
        return on_path
    pyenv = shutil.which("pyenv", path=path)
    if pyenv is None:
        return None
    versions = _ask(pyenv, "versions", "--bare", environ=environ).split()
    root = _ask(pyenv, "root", environ=environ).strip()
    candidates = sorted((v for v in versions if re.fullmatch(r"3\.10\.\d+", v)), key=lambda v: int(v.rsplit(".", 1)[1]))
    for version in reversed(candidates):
        exe = Path(root) / "versions" / version / "bin" / "python3.10"
        if exe.is_file() and _python_version(str(exe)) == "3.10":
            return str(exe)
    return None


def skipped_banner(env: str, why: str, *, ci: bool) -> str:
    """The loud line around a tox env that will not run."""
    bar = "!" * 78
    verdict = "CI=true: this run FAILS." if ci else "The run can pass WITHOUT it: install it, or set EXECAUTH_PY310."
    return f"{bar}\n!! tox env {env} is SKIPPED: {why}\n!! {verdict}\n{bar}"


@nox.session
def tests(session: nox.Session) -> None:
    """Every test environment in tox.ini (the docs env included)."""
    session.install("tox>=4.20")
    ci = os.environ.get("CI") == "true"
    strict = ["--skip-missing-interpreters=false"] if ci else []
    env = {}
    banner = None
    py310 = find_python310()
    picked = [a for a in session.posargs if not a.startswith("-")] if {"-e", "--env"} & set(session.posargs) else []
    wanted = not picked or any("core-py310" in a for a in picked)
    if py310 is None and wanted:
        banner = skipped_banner("core-py310", "no Python 3.10 found (PATH, pyenv, EXECAUTH_PY310)", ci=ci)
        session.warn(banner)
        if ci:
            session.error("core-py310 cannot run: no Python 3.10 found (PATH, pyenv, EXECAUTH_PY310)")
    elif py310 is not None:
        env["EXECAUTH_PY310"] = py310
        session.log(f"core-py310 runs on {py310}")
    results = Path("results")
    shutil.rmtree(results, ignore_errors=True)  # no stale results from an earlier run
    env["EXECAUTH_RESULTS_DIR"] = str(results.resolve())
    session.run("tox", "run", *strict, *session.posargs, env=env)
    # The cross-adapter check: every conformance run agrees with the vectors and each other.
    session.run("python", "conformance/tools/compare_results.py", str(results))
    if banner is not None:
        session.warn(banner)  # again at the end, where it is seen


@nox.session
def docs(session: nox.Session) -> None:
    """Run every code block of the docs (the tox env `docs`)."""
    session.install("tox>=4.20")
    session.run("tox", "run", "-e", "docs", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "packages", "conformance", "bench", "examples")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install(
        "mypy>=1.11",
        "types-PyYAML",
        "types-jsonschema",
        "./packages/core[test]",
        "./conformance",
        "./packages/mcp",
        "./packages/server",
    )
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Latency figures (p50/p99); targets are printed next to the measurements."""
    session.install("./packages/core[redis,postgres]", "./packages/langgraph")
    session.run("python", "bench/bench_core.py", *session.posargs)
    session.run("python", "bench/bench_langgraph.py")
    session.run("python", "bench/bench_stores.py")
    session.run("python", "bench/bench_spool.py")


@nox.session
def bench_peers(session: nox.Session) -> None:
    """execauth's full guarded path beside Microsoft's Agent Governance Toolkit govern()+audit,
    in the same rounds (own venv; AGT 5.0 is the distribution agent-governance-toolkit-core)."""
    session.install("./packages/core", "agent-governance-toolkit-core>=5.0")
    session.run("python", "bench/bench_peers.py", *session.posargs)


@nox.session
def bench_ledger(session: nox.Session) -> None:
    """The effect ledger's overhead per guarded call, on SQLite and PostgreSQL."""
    session.install("./packages/core[postgres]")
    session.run("python", "bench/bench_ledger.py", *session.posargs)


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
def bench_tlog(session: nox.Session) -> None:
    """The audit Merkle tree: appends/s per backend, proofs at 10^6 leaves, checkpoint
    signing, verification of a 10^6-entry log (bounded by --budget seconds)."""
    session.install("./packages/core[redis,postgres]")
    session.run("python", "bench/bench_tlog.py", *session.posargs)


@nox.session
def bench_mcp(session: nox.Session) -> None:
    """execauth-mcp proxy overhead per tools/call vs a direct session, stdio and HTTP (own venv)."""
    session.install("./packages/core", "./packages/mcp[test]")
    session.run("python", "bench/bench_mcp.py", *session.posargs)


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


@nox.session
def bench_two_phase(session: nox.Session) -> None:
    """Two-phase commit (preflight -> commit -> execute) vs one phase per call, same run; receipts."""
    session.install("./packages/core")
    session.run("python", "bench/bench_two_phase.py", *session.posargs)
