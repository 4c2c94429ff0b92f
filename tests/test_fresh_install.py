"""`.ci/fresh_install.py`, which every tox env runs before its tests (issue 15 item 1).

A stale environment (installed once, then the working tree changed) must be detected,
and a reinstall must make it pass again. Real pip installs into a target folder.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fresh_install", REPO / ".ci" / "fresh_install.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pip_target(folder: Path, target: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade", "--target", str(target)]
    subprocess.run([*cmd, str(folder)], check=True)


def test_stale_install_is_detected_and_reinstall_fixes_it(tmp_path: Path) -> None:
    fresh = _load()
    checkout = tmp_path / "checkout"
    shutil.copytree(
        REPO / "packages" / "core",
        checkout / "packages" / "core",
        ignore=shutil.ignore_patterns("__pycache__", "tests", "*.egg-info"),
    )
    (checkout / "conformance").mkdir()
    own = fresh.own_distributions(checkout)
    assert set(own) == {"execauth-core"}
    target = tmp_path / "site"
    _pip_target(own["execauth-core"], target)

    dist = fresh.installed(own, [str(target)])["execauth-core"]
    assert fresh.differences(dist, own["execauth-core"]) == []

    # The working tree changes after the install (what issue 15 saw: a raise appended
    # to __init__.py, and the reused env still passed).
    init = checkout / "packages" / "core" / "src" / "execauth_core" / "__init__.py"
    init.write_text(init.read_text(encoding="utf-8") + "\nraise RuntimeError('changed')\n", encoding="utf-8")
    (init.parent / "added_later.py").write_text("X = 1\n", encoding="utf-8")
    problems = fresh.differences(dist, own["execauth-core"])
    assert "execauth_core/__init__.py: installed copy differs from the working tree" in problems
    assert "execauth_core/added_later.py: in the working tree, but not installed" in problems

    _pip_target(own["execauth-core"], target)
    dist = fresh.installed(own, [str(target)])["execauth-core"]
    assert fresh.differences(dist, own["execauth-core"]) == []


def test_this_environment_tests_the_working_tree() -> None:
    """In a tox env (after commands_pre) the installed execauth packages equal the tree."""
    fresh = _load()
    own = fresh.own_distributions()
    present = fresh.installed(own)
    assert "execauth-core" in present
    checked, editable = [], []
    for name, dist in present.items():
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
        if direct.get("dir_info", {}).get("editable"):
            editable.append(name)  # the working tree itself is imported: nothing to compare
            continue
        assert fresh.differences(dist, own[name]) == [], name
        checked.append(name)
    if not checked:
        pytest.skip(f"every execauth package here is an editable install ({', '.join(editable)})")
