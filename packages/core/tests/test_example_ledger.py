"""examples/ledger_crash_recovery.py runs offline and recovers without a duplicate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "ledger_crash_recovery.py"


def test_the_crash_example_recovers_without_a_duplicate(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "worker exit status -9" in lines[1]
    assert lines[2].endswith("refused: LEDGER_IN_FLIGHT")
    assert lines[3].endswith("refused: LEDGER_OUTCOME_UNKNOWN")
    assert lines[-2].endswith("refused: LEDGER_ALREADY_SUCCEEDED")
    assert len((tmp_path / "bank.txt").read_text().splitlines()) == 1
