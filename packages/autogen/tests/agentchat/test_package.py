"""The package surface: a pinned __all__, and no framework imported until used."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

import execauth_autogen

EXPORTS = [
    "APPROVE_WORDS",
    "ExecAuthExecutorMixin",
    "ExecAuthFunctionGate",
    "ExecAuthWorkbench",
    "ToolCallDenied",
    "__version__",
    "approval_prompt",
    "human_input_approver",
    "input_approver",
]


def test_all_is_pinned() -> None:
    assert execauth_autogen.__all__ == EXPORTS
    assert execauth_autogen.__version__ == "0.1.0"


def test_importing_the_package_imports_no_autogen() -> None:
    code = (
        "import sys, execauth_autogen; "
        "print(sorted(m for m in ('autogen', 'autogen_core', 'autogen_agentchat') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_workbench_loads_on_first_use() -> None:
    from execauth_autogen.agentchat import ExecAuthWorkbench

    assert execauth_autogen.ExecAuthWorkbench is ExecAuthWorkbench


@pytest.mark.skipif(importlib.util.find_spec("autogen") is not None, reason="classic AutoGen is installed here")
def test_the_classic_api_without_classic_autogen_says_what_to_install() -> None:
    with pytest.raises(ImportError, match=r"execauth-autogen\[classic\]"):
        execauth_autogen.ExecAuthFunctionGate  # noqa: B018 - the lazy lookup is the test
