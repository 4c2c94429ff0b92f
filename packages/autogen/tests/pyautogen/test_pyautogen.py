"""`pip install pyautogen execauth-autogen`, as the name reads (tox env autogen-pyautogen).

pyautogen 0.10 and later is Microsoft's AgentChat under the old name: it depends on
autogen-agentchat and ships no `autogen` module. So that install line gives the
AgentChat API (tested by tests/agentchat in the same env), and the classic names say
what to install instead of failing obscurely.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import subprocess
import sys

import pytest


def _pyautogen_version() -> tuple[int, ...] | None:
    try:
        text = importlib.metadata.version("pyautogen")
    except importlib.metadata.PackageNotFoundError:
        return None
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


_VERSION = _pyautogen_version()

pytestmark = pytest.mark.skipif(
    _VERSION is None or _VERSION < (0, 10), reason="needs pyautogen >= 0.10 (the AgentChat proxy)"
)


def test_pyautogen_installs_agentchat_and_no_classic_module() -> None:
    requires = importlib.metadata.requires("pyautogen") or []
    assert any(req.startswith("autogen-agentchat") for req in requires), requires
    assert importlib.util.find_spec("autogen_agentchat") is not None
    assert importlib.util.find_spec("autogen") is None


def test_the_agentchat_workbench_is_what_it_gives() -> None:
    from autogen_core.tools import StaticWorkbench

    from execauth_autogen import ExecAuthWorkbench

    assert issubclass(ExecAuthWorkbench, StaticWorkbench)


def test_the_classic_names_say_what_to_install() -> None:
    # A fresh interpreter: the lazy import must fail the same way for a new user.
    code = "import execauth_autogen; execauth_autogen.ExecAuthFunctionGate"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: execauth_autogen.classic needs classic AutoGen"), last
    assert "pyautogen >= 0.10 do not ship it" in last
    assert "pip install 'execauth-autogen[classic]'" in last
