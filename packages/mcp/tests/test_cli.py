"""The command line: bad configurations and usage give one `execauth: error:` line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mcphelpers import UPSTREAM, Workdir


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "execauth_core.cli", "mcp-proxy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def one_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("execauth: error:")]
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_core_cli_hands_mcp_proxy_over(work: Workdir) -> None:
    one_error(run("--config", str(work.config()), cwd=work.root), "give the upstream")


def test_bad_configs(work: Workdir) -> None:
    one_error(run("--config", str(work.root / "nope.yaml"), "--", "x", cwd=work.root), "cannot read")
    one_error(run("--config", str(work.config(typo_key=1)), "--", "x", cwd=work.root), "typo_key")
    bad = work.config(
        manifests=[{"name": "other.tool", "version": "1", "args_schema": {"type": "object"}, "effects": ["file.read"]}],
        policy=None,
    )
    one_error(run("--config", str(bad), "--", sys.executable, UPSTREAM, cwd=work.root), "<server>.<tool>")
    remote = work.config(authority={"url": "http://127.0.0.1:1"})
    one_error(run("--config", str(remote), "--", sys.executable, UPSTREAM, cwd=work.root), "remote authority")
    one_error(
        run("--config", str(work.config()), "--", str(work.root / "missing-binary"), cwd=work.root),
        "cannot start the upstream",
    )


def test_unreachable_http_upstream(work: Workdir) -> None:
    from mcphelpers import free_port

    url = f"http://127.0.0.1:{free_port()}/mcp"
    one_error(run("--config", str(work.config()), "--url", url, cwd=work.root), "the proxy stopped")
