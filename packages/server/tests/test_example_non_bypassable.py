"""examples/non_bypassable/run.py: one command, four cases, nothing left running."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "non_bypassable" / "run.py"


def marked_processes(mark: str) -> list[int]:
    """Processes whose environment carries ``mark`` (everything the example started inherits it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if mark.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not EXAMPLE.exists(), reason="the example is not in this checkout")
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find leftover processes")
def test_the_example_prints_the_four_cases_and_stops_everything() -> None:
    mark = f"EXECAUTH_EXAMPLE_MARK={secrets.token_hex(8)}"
    env = {**os.environ, mark.split("=")[0]: mark.split("=")[1]}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4, done.stdout
    bypass, allow, deny, replay = lines
    assert bypass.startswith("BYPASS") and " 403 " in bypass and "executed: no" in bypass
    assert allow.startswith("ALLOW") and ": executed" in allow and "0 -> 1" in allow
    assert deny.startswith("DENY") and "TOOL_NOT_ALLOWED" in deny and "not executed" in deny
    assert replay.startswith("REPLAY") and "409 TOKEN_REPLAYED" in replay and "not executed" in replay
    assert "Traceback" not in done.stderr
    deadline = time.monotonic() + 5  # a process being reaped may linger for a moment
    while marked_processes(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marked_processes(mark) == [], "the example left processes running"
