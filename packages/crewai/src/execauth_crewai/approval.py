"""Approvals through CrewAI's human-input facility.

``ToolCallHookContext.request_human_input`` is CrewAI's way to ask the person at
the console from inside a tool hook (it pauses CrewAI's live console output,
prints the prompt and reads a line). :func:`console_approver` uses it to approve
one exact proposal: what is shown is the canonical proposal and its digest, and
the grant that follows binds to that digest only.
"""

from __future__ import annotations

from typing import Any

from crewai.hooks.tool_hooks import ToolCallHookContext

from execauth_core import PendingApproval, canonicalize

from .adapter import Approver

APPROVE_WORD = "approve"


def console_approver(approver: str) -> Approver:
    """An :class:`~execauth_crewai.Approver` that asks at the console.

    Args:
        approver: the name recorded in the grant when the person types ``approve``.

    Returns:
        An approver: anything but ``approve`` (or no hook context to ask through)
        refuses.
    """
    if not approver:
        raise ValueError("console_approver needs the approver's name")

    def ask(pending: PendingApproval, context: ToolCallHookContext | None) -> str | None:
        if context is None:
            return None
        request = pending.request
        prompt = (
            f"execauth: {request.agent or 'an agent'} wants to run {request.tool!r} for {request.principal!r}\n"
            f"  arguments: {_display(request.args)}\n"
            f"  needs approval: {', '.join(pending.reason_codes)}\n"
            f"  proposal: {pending.proposal_digest}"
        )
        answer = context.request_human_input(
            prompt=prompt,
            default_message=f"Type '{APPROVE_WORD}' to allow exactly this call; anything else refuses it:",
        )
        return approver if answer.strip().lower() == APPROVE_WORD else None

    return ask


def _display(value: Any) -> str:
    """For people only: never signed, so the canonical encoder is just a stable format."""
    try:
        return canonicalize(value).decode("utf-8")
    except Exception:  # noqa: BLE001 - display only
        return repr(value)
