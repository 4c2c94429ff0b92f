"""The package surface: a pinned __all__, and no framework imported until used."""

from __future__ import annotations

import subprocess
import sys

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


def test_importing_the_package_imports_no_autogen() -> None:
    code = (
        "import sys, execauth_autogen; "
        "print(sorted(m for m in ('autogen', 'autogen_core', 'autogen_agentchat') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_classic_names_load_on_first_use() -> None:
    from execauth_autogen import classic

    assert execauth_autogen.ExecAuthFunctionGate is classic.ExecAuthFunctionGate
    assert execauth_autogen.ExecAuthExecutorMixin is classic.ExecAuthExecutorMixin
