"""Every adapter's gate object has the same approval methods with the same signatures
(issue 16 item 4). The frameworks are not installed side by side anywhere, so this
reads the adapters' sources: each gate class inherits ``ApprovalGate`` and overrides
none of its methods. Each adapter's own suite checks the same on the imported classes."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from execauth_core.approval_flow import GATE_METHODS, ApprovalGate

ROOT = Path(__file__).resolve().parents[1]

GATES = {
    "langgraph": ("packages/langgraph/src/execauth_langgraph/wrapper.py", "ExecAuthToolWrapper"),
    "langgraph-middleware": ("packages/langgraph/src/execauth_langgraph/middleware.py", "ExecAuthMiddleware"),
    "crewai": ("packages/crewai/src/execauth_crewai/adapter.py", "CrewGuard"),
    "openai-agents": ("packages/openai_agents/src/execauth_openai_agents/gate.py", "ExecAuth"),
    "autogen-agentchat": ("packages/autogen/src/execauth_autogen/agentchat.py", "ExecAuthWorkbench"),
    "autogen-classic": ("packages/autogen/src/execauth_autogen/classic.py", "ExecAuthFunctionGate"),
}


def _class(path: str, name: str) -> ast.ClassDef:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    found = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name]
    assert found, f"{name} not found in {path}"
    return found[0]


@pytest.mark.parametrize("adapter", sorted(GATES))
def test_every_gate_class_inherits_the_shared_approval_methods(adapter: str) -> None:
    path, name = GATES[adapter]
    cls = _class(path, name)
    bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in cls.bases}
    assert "ApprovalGate" in bases, f"{name} does not inherit ApprovalGate"
    defined = {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    defined |= {t.id for n in cls.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    assert not defined & set(GATE_METHODS), f"{name} overrides {sorted(defined & set(GATE_METHODS))}"
    assigns = [n for n in ast.walk(cls) if isinstance(n, ast.Attribute) and n.attr == "_approval_flow"]
    assert assigns, f"{name} never sets its _approval_flow"


WAIT = "(self, request_id: 'str', *, timeout: 'float | None' = None, poll_interval: 'float' = 0.5) -> 'str'"


def test_the_shared_signatures() -> None:
    sigs = {name: str(inspect.signature(getattr(ApprovalGate, name))) for name in GATE_METHODS}
    assert sigs == {
        "pending_approvals": "(self) -> 'list[PendingRequest]'",
        "approval_status": "(self, request_id: 'str') -> 'str'",
        "approve": "(self, request_id: 'str', *, approver: 'str', comment: 'str | None' = None) -> 'ApprovalRequest'",
        "reject": "(self, request_id: 'str', *, approver: 'str', comment: 'str | None' = None) -> 'ApprovalRequest'",
        "wait_for_approval": WAIT,
        "await_approval": WAIT,
    }
    assert inspect.iscoroutinefunction(ApprovalGate.await_approval)


def test_the_langgraph_gates_at_run_time() -> None:
    pytest.importorskip("langgraph")
    from execauth_langgraph import ExecAuthToolWrapper

    for name in GATE_METHODS:
        assert inspect.signature(getattr(ExecAuthToolWrapper, name)) == inspect.signature(getattr(ApprovalGate, name))
