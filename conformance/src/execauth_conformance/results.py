"""Canonical results of a suite run, one file per harness, compared across adapters."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RESULTS: dict[str, dict[str, Any]] = {}
"""harness name -> vector id -> result; written at the end of the pytest session."""


def record(harness: str, vector_id: str, result: dict[str, Any]) -> None:
    RESULTS.setdefault(harness, {})[vector_id] = result


def results_dir() -> Path:
    return Path(os.environ.get("EXECAUTH_RESULTS_DIR", "results"))


def write_all() -> list[Path]:
    """Write every harness's results as sorted, indented JSON; returns the paths."""
    written: list[Path] = []
    if not RESULTS:
        return written
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    # One tox env per framework version range: the tag keeps their files apart.
    tag = os.environ.get("EXECAUTH_RESULTS_TAG", "")
    for harness, results in sorted(RESULTS.items()):
        name = f"{harness}-{tag}" if tag else harness
        path = folder / f"{name}.json"
        doc = {"harness": name, "results": dict(sorted(results.items()))}
        path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
