"""The decision-point interface, and the minimal allow-list policy.

A :class:`DecisionPoint` turns ``(request, now, approved)`` into an
:class:`Evaluation` deterministically: no clock reads, no randomness, no I/O
outside what it is given. :class:`~execauth_core.authority.Authority` wraps a
decision point, verifies approvals, and signs the record and the token. The
Authority Court implements the same interface.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .canonical import digest
from .errors import ConfigurationError
from .messages import AuthorizationRequest, Outcome, PolicyRef
from .reasons import ReasonCode as R


@dataclass(frozen=True)
class Evaluation:
    """What a decision point concluded, before anything is signed."""

    outcome: Outcome
    reason_codes: tuple[str, ...]
    explanation: tuple[str, ...]
    effects: tuple[str, ...] = ()
    limits: Mapping[str, str] = field(default_factory=dict)
    state_digest: str | None = None
    stages: tuple[Mapping[str, Any], ...] = ()
    """Per-stage results (the Court's pipeline), recorded in the DecisionRecord."""
    state_snapshot: Mapping[str, int] | None = None
    """The counters the decision read, so it can be replayed."""
    shadow_outcome: Outcome | None = None
    """In shadow mode: the outcome that was recorded but not enforced."""
    preflight: Mapping[str, Any] | None = None
    """What the preflight returned (``ok``, ``grade``, ``detail``), for replay."""


class DecisionPoint(Protocol):
    """Evaluates proposals against a policy. Must be deterministic."""

    @property
    def policy_ref(self) -> PolicyRef:
        """Id, epoch and digest of the policy in force."""
        ...

    def evaluate(
        self, request: AuthorizationRequest, *, now: int, approved: bool, hold_id: str | None = None
    ) -> Evaluation:
        """Decide ``request`` at time ``now``.

        Args:
            approved: True when a valid human approval bound to this exact
                proposal was presented (the caller has verified it).
            hold_id: on ALLOW, debit any state (budgets, rates) under this id,
                so that :meth:`release` can give it back. ``None``: don't debit.
        """
        ...

    def release(self, hold_id: str) -> None:
        """Undo what an ALLOW under ``hold_id`` debited (the call did not run)."""
        ...


class AllowListPolicy:
    """Default deny; allow the listed tools; some only with a human approval.

    Args:
        allow: tools that may run.
        require_approval: tools that may run only with an approval of the exact
            proposal. Listing a tool here also allows it (after approval).
        policy_id: a name for the policy.
        epoch: bump when the policy changes.
    """

    def __init__(
        self,
        allow: Iterable[str] = (),
        *,
        require_approval: Iterable[str] = (),
        policy_id: str = "allowlist",
        epoch: int = 1,
    ) -> None:
        if isinstance(allow, str) or isinstance(require_approval, str):
            raise ConfigurationError("allow/require_approval take a list of tool names, not a string")
        allow_set = frozenset(allow)
        approval_set = frozenset(require_approval)
        for name in allow_set | approval_set:
            if not isinstance(name, str) or not name:
                raise ConfigurationError(f"tool names must be non-empty strings, got {name!r}")
        self.allow = allow_set | approval_set
        self.require_approval = approval_set
        document = {
            "kind": "allowlist",
            "id": policy_id,
            "epoch": epoch,
            "allow": sorted(self.allow),
            "require_approval": sorted(approval_set),
        }
        self._ref = PolicyRef(id=policy_id, epoch=epoch, digest=digest(document))

    @property
    def policy_ref(self) -> PolicyRef:
        return self._ref

    def release(self, hold_id: str) -> None:
        """Nothing to release: the allow-list keeps no state."""

    def evaluate(
        self, request: AuthorizationRequest, *, now: int, approved: bool, hold_id: str | None = None
    ) -> Evaluation:
        if not self.allow:
            return Evaluation(Outcome.DENY, (R.POLICY_EMPTY.value,), ("The policy allows no tools: default deny.",))
        if request.tool not in self.allow:
            return Evaluation(
                Outcome.DENY,
                (R.TOOL_NOT_ALLOWED.value,),
                (f"Tool '{request.tool}' is not on the policy's allow-list.",),
            )
        if request.tool in self.require_approval:
            if not approved:
                return Evaluation(
                    Outcome.REQUIRE_APPROVAL,
                    (R.APPROVAL_REQUIRED.value,),
                    (f"Tool '{request.tool}' needs a human approval of this exact proposal.",),
                )
            return Evaluation(
                Outcome.ALLOW,
                (R.TOOL_ALLOWED.value, R.APPROVAL_GRANTED.value),
                (f"Tool '{request.tool}' is allowed; a person approved this exact proposal.",),
            )
        return Evaluation(Outcome.ALLOW, (R.TOOL_ALLOWED.value,), (f"Tool '{request.tool}' is on the allow-list.",))
