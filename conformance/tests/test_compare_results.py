"""The cross-adapter comparison fails on any difference and on no results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from execauth_conformance import vectors

TOOL = Path(__file__).resolve().parents[1] / "tools" / "compare_results.py"


def run(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), str(folder)], capture_output=True, text=True, timeout=60)


def good_results(name: str) -> dict:
    res = {}
    for t in vectors.tests("decisions-v1.json", "adapter"):
        res[f"decisions/{t['tcId']}"] = {
            "executed": t["expected"]["outcome"] == "ALLOW",
            "outcome": t["expected"]["outcome"],
            "record_digest": t["expected"]["record_digest"],
            "audit": ["sha256:a"],
        }
    return {"harness": name, "results": res}


def test_agreeing_files_pass(tmp_path: Path) -> None:
    for name in ("reference", "langgraph"):
        (tmp_path / f"{name}.json").write_text(json.dumps(good_results(name)))
    proc = run(tmp_path)
    assert proc.returncode == 0 and "2 harness(es) agree" in proc.stdout


def test_no_results_fail(tmp_path: Path) -> None:
    assert run(tmp_path).returncode == 1


def test_a_difference_with_the_vectors_fails_and_names_the_vector(tmp_path: Path) -> None:
    doc = good_results("crewai")
    first = sorted(doc["results"], key=lambda k: int(k.split("/")[1]))[0]
    doc["results"][first]["executed"] = not doc["results"][first]["executed"]
    (tmp_path / "crewai.json").write_text(json.dumps(doc))
    proc = run(tmp_path)
    assert proc.returncode == 1 and first in proc.stdout


def test_a_difference_between_adapters_fails(tmp_path: Path) -> None:
    (tmp_path / "reference.json").write_text(json.dumps(good_results("reference")))
    doc = good_results("autogen")
    key = next(iter(doc["results"]))
    doc["results"][key]["audit"] = ["sha256:b"]
    (tmp_path / "autogen.json").write_text(json.dumps(doc))
    proc = run(tmp_path)
    assert proc.returncode == 1 and "autogen differs from reference" in proc.stdout


def test_a_missing_vector_fails(tmp_path: Path) -> None:
    doc = good_results("openai_agents")
    doc["results"].pop(next(iter(doc["results"])))
    (tmp_path / "openai_agents.json").write_text(json.dumps(doc))
    assert run(tmp_path).returncode == 1
