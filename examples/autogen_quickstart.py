"""execauth + AutoGen, offline: a scripted model asks for three tool calls in one turn.

    # from the repository root of a checkout (the packages are not published yet):
    pip install ./packages/core './packages/autogen[agentchat]' autogen-ext   # AgentChat
    pip install ./packages/core './packages/autogen[classic]'   # or classic AutoGen (ag2), another venv
    python examples/autogen_quickstart.py

Runs whichever AutoGen API is installed (the two cannot share one environment). One
call is allowed and runs, one is denied by policy (the model sees why, nothing runs),
one needs a person's approval: it is refused with the proposal digest, and runs once
"alice" approves exactly that proposal.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import json
from typing import Any

from execauth_core import AllowListPolicy, Guard


def search_docs(query: str) -> str:
    """Search the help center."""
    return f"3 articles about {query!r}"


def delete_account(user: str) -> str:
    """Delete a customer account."""
    raise AssertionError("never runs: the policy does not allow it")


def send_refund(order: str, amount: str) -> str:
    """Refund an order."""
    return f"refunded {amount} on {order}"


CALLS = [
    ("call_1", "search_docs", {"query": "refunds"}),
    ("call_2", "delete_account", {"user": "bob"}),
    ("call_3", "send_refund", {"order": "A-1001", "amount": "25.00"}),
]


def wire(args: dict[str, Any]) -> str:
    """Tool-call arguments as models send them: a JSON string (nothing signed here)."""
    return json.dumps(args)  # noqa: TID251 - AutoGen's wire format, not signed bytes


def new_guard() -> Guard:
    return Guard.local(AllowListPolicy(["search_docs", "send_refund"], require_approval=["send_refund"]))


def summary(guard: Guard) -> str:
    denials = sum(1 for e in guard.audit_log.entries() if e.event == "denial")
    return f"audit: {len(list(guard.audit_log.entries()))} records, {denials} denials recorded with executed: false"


def agentchat_demo() -> None:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_agentchat.messages import ToolCallExecutionEvent
    from autogen_core import FunctionCall
    from autogen_core.models import CreateResult, ModelFamily, ModelInfo, RequestUsage
    from autogen_core.tools import FunctionTool
    from autogen_ext.models.replay import ReplayChatCompletionClient

    from execauth_autogen import ExecAuthWorkbench

    guard = new_guard()
    workbench = ExecAuthWorkbench(
        [FunctionTool(f, description=f.__doc__ or "") for f in (search_docs, delete_account, send_refund)],
        guard,
        principal="user-42",
        agent="support-bot",
    )
    model = ReplayChatCompletionClient(  # stands in for an LLM: no network
        [
            CreateResult(
                finish_reason="function_calls",
                content=[FunctionCall(id=i, name=n, arguments=wire(a)) for i, n, a in CALLS],
                usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
                cached=False,
            )
        ],
        model_info=ModelInfo(
            vision=False, function_calling=True, json_output=False, family=ModelFamily.UNKNOWN, structured_output=False
        ),
    )
    agent = AssistantAgent("support", model_client=model, workbench=workbench)
    result = asyncio.run(agent.run(task="help bob"))
    print("== AgentChat (AssistantAgent + ExecAuthWorkbench)")
    for message in result.messages:
        if isinstance(message, ToolCallExecutionEvent):
            for r in message.content:
                print(f"{r.call_id}: [{'error' if r.is_error else 'ok'}] {r.content}")
    (pending,) = workbench.pending_approvals()
    approved = asyncio.run(workbench.approve_and_run(pending.proposal_digest, approver="alice"))
    print(f"alice approved {pending.proposal_digest[:19]}...: {approved.to_text()}")
    print(summary(guard))


def classic_demo() -> None:
    from autogen import Agent, ConversableAgent

    from execauth_autogen import ExecAuthExecutorMixin, ExecAuthFunctionGate

    class Executor(ExecAuthExecutorMixin, ConversableAgent):
        """Runs the functions; the mixin binds each tool-call id into the proposal."""

    def scripted_model(agent: Any, messages: Any = None, sender: Any = None, config: Any = None) -> Any:
        # Stands in for an LLM: first the tool calls, then "TERMINATE".
        if len(messages or []) <= 1:
            calls = [{"id": i, "type": "function", "function": {"name": n, "arguments": wire(a)}} for i, n, a in CALLS]
            return True, {"role": "assistant", "content": None, "tool_calls": calls}
        return True, "TERMINATE"

    guard = new_guard()
    gate = ExecAuthFunctionGate(guard, principal="user-42", agent="support-bot")
    executor = Executor("executor", llm_config=False, human_input_mode="NEVER")
    executor.register_function(
        {"search_docs": search_docs, "delete_account": delete_account, "send_refund": send_refund}
    )
    gate.protect(executor)
    model = ConversableAgent("model", llm_config=False, human_input_mode="NEVER")
    model.register_reply([Agent, None], scripted_model, position=0)
    with contextlib.redirect_stdout(io.StringIO()):  # AutoGen prints the whole chat
        chat = executor.initiate_chat(model, message="help bob", max_turns=2)
    print("== classic AutoGen (ConversableAgent + ExecAuthFunctionGate)")
    for message in chat.chat_history:
        for r in message.get("tool_responses") or []:
            print(f"{r['tool_call_id']}: {r['content']}")
    (pending,) = gate.pending_approvals()
    approved = gate.approve_and_run(pending.proposal_digest, approver="alice")
    print(f"alice approved {pending.proposal_digest[:19]}...: {approved}")
    print(summary(guard))


def main() -> None:
    ran = False
    if importlib.util.find_spec("autogen_agentchat") and importlib.util.find_spec("autogen_ext"):
        agentchat_demo()
        ran = True
    if importlib.util.find_spec("autogen"):
        import autogen

        if hasattr(autogen, "ConversableAgent"):
            classic_demo()
            ran = True
    if not ran:
        raise SystemExit("install an AutoGen: pip install 'execauth-autogen[agentchat]' autogen-ext, or '[classic]'")


if __name__ == "__main__":
    main()
