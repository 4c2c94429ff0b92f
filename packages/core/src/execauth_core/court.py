"""The Authority Court: the six-stage decision pipeline.

contract pinning -> ceiling checks -> counterfactuals -> invariants ->
preflight simulation -> emit. Deterministic: time (``now``), state (the state
store's counters, snapshotted into the record) and the policy are inputs, so a
stored DecisionRecord can be replayed to the same outcome.

Outcomes combine by precedence DENY > DEFER > REQUIRE_EVIDENCE > REQUIRE_APPROVAL
> ALLOW: every stage that can run does, so the record says *all* that is wrong, not
just the first thing. A failed contract stage (unknown tool, bad arguments) or an
unknown principal stops the pipeline: there is nothing to check ceilings against.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .canonical import digest
from .effects import EFFECTS, BlastRadius, EvidenceGrade, RiskTier
from .errors import StoreUnavailable
from .manifest import PreflightResult, RegisteredTool, ToolRegistry
from .messages import AuthorizationRequest, Outcome, PolicyRef
from .policy import Evaluation
from .policyfile import PolicyDocument, PrincipalPolicy
from .reasons import ReasonCode as R
from .stores.base import Debit, StateStore
from .stores.memory import MemoryStateStore

STAGES = ("contract", "ceilings", "counterfactuals", "invariants", "preflight", "emit")
_PRECEDENCE = [Outcome.DENY, Outcome.DEFER, Outcome.REQUIRE_EVIDENCE, Outcome.REQUIRE_APPROVAL]
_EMPTY_REF = PolicyRef(id="(none)", epoch=0, digest=digest({"policy": None}))
_BLAST_ORDER = list(BlastRadius)


@dataclass
class _Stage:
    name: str
    findings: list[tuple[Outcome, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def find(self, outcome: Outcome, code: R, why: str) -> None:
        self.findings.append((outcome, code.value, why))

    def as_record(self) -> dict[str, Any]:
        worst = _combine([o for o, _, _ in self.findings])
        return {
            "stage": self.name,
            "result": "pass" if worst is Outcome.ALLOW else worst.value,
            "reason_codes": [c for _, c, _ in self.findings],
            "notes": [w for _, _, w in self.findings] + self.notes,
        }


def _combine(outcomes: list[Outcome]) -> Outcome:
    for o in _PRECEDENCE:
        if o in outcomes:
            return o
    return Outcome.ALLOW


@dataclass(frozen=True)
class _Call:
    """What the contract stage established about the proposal."""

    tool: RegisteredTool
    amount: int | None
    currency: str | None
    effects: tuple[str, ...]
    tier: RiskTier


class Court:
    """The Authority Court, a :class:`~execauth_core.policy.DecisionPoint`.

    Args:
        policy: the policy document; ``None`` denies everything (POLICY_EMPTY).
        registry: the known tools and their manifests.
        state: budgets and rate counters (default: in memory).

    Raises:
        ConfigurationError: the policy names tools the registry does not know.
    """

    def __init__(
        self,
        policy: PolicyDocument | None,
        registry: ToolRegistry,
        *,
        state: StateStore | None = None,
    ) -> None:
        from .errors import ConfigurationError

        self._policy = policy
        self.registry = registry
        self.state: StateStore = state if state is not None else MemoryStateStore()
        if policy is not None:
            for p in policy.principals:
                unknown = [t for t in p.allow_tools if t not in registry]
                if unknown:
                    raise ConfigurationError(
                        f"policy {policy.id!r}: principal {p.id!r} allows unregistered tools {unknown}"
                    )
                for rl in p.rate_limits:
                    if rl.tool != "*" and rl.tool not in registry:
                        raise ConfigurationError(f"policy {policy.id!r}: rate limit on unregistered tool {rl.tool!r}")
        self._ref = policy.ref() if policy is not None else _EMPTY_REF

    @property
    def policy(self) -> PolicyDocument | None:
        """The policy in force. Read-only: a new policy means a new Court (and a new
        policy reference, which makes tokens issued under the old one stale)."""
        return self._policy

    @property
    def policy_ref(self) -> PolicyRef:
        return self._ref

    def release(self, hold_id: str) -> None:
        """Give back what an ALLOW debited, when the call did not (successfully) run."""
        self.state.refund(hold_id)

    # -- the pipeline ----------------------------------------------------------

    def evaluate(
        self,
        request: AuthorizationRequest,
        *,
        now: int,
        approved: bool,
        hold_id: str | None = None,
        preflight_result: PreflightResult | None = None,
        state_snapshot: Mapping[str, int] | None = None,
        expected_state_digest: str | None = None,
    ) -> Evaluation:
        """Decide ``request``.

        Args:
            hold_id: the id budgets are debited under on ALLOW (the token id).
                ``None`` evaluates without debiting (dry run, replay).
            preflight_result: replay only: use this instead of calling the preflight.
            state_snapshot: replay only: counters to use instead of the state store.
            expected_state_digest: the commit of a two-phase call: the state digest its
                preflight saw. Counters read now that digest otherwise make the outcome
                REQUIRE_EVIDENCE (``COMMIT_STATE_CHANGED``), so nothing is debited.
        """
        policy = self.policy
        stages: list[_Stage] = []
        if policy is None or not policy.principals:
            s = _Stage("contract")
            s.find(Outcome.DENY, R.POLICY_EMPTY, "There is no policy, or it names no principals: default deny.")
            return self._finish([s], None, {}, [], hold_id, now)

        contract = _Stage("contract")
        stages.append(contract)
        call = self._contract(request, policy, contract)
        if call is None:
            return self._finish(stages, None, {}, [], hold_id, now)

        ceilings = _Stage("ceilings")
        stages.append(ceilings)
        principal = policy.principal(request.principal)
        if principal is None:
            ceilings.find(Outcome.DENY, R.PRINCIPAL_UNKNOWN, f"Principal {request.principal!r} is not in the policy.")
            return self._finish(stages, None, {}, [], hold_id, now)
        self._ceilings(request, policy, principal, call, ceilings, now)

        counter = _Stage("counterfactuals")
        stages.append(counter)
        snapshot: dict[str, int] = {}
        debits = self._counterfactuals(request, policy, principal, call, counter, now, snapshot, state_snapshot)
        if expected_state_digest is not None and (digest(snapshot) if snapshot else None) != expected_state_digest:
            counter.find(
                Outcome.REQUIRE_EVIDENCE,
                R.COMMIT_STATE_CHANGED,
                "Budgets or rate counters changed since the preflight; preflight again.",
            )

        inv = _Stage("invariants")
        stages.append(inv)
        approval_used = self._invariants(policy, principal, call, inv, approved)

        pre = _Stage("preflight")
        stages.append(pre)
        so_far = _combine([o for st in stages for o, _, _ in st.findings])
        ran: PreflightResult | None = None
        if so_far in (Outcome.DENY, Outcome.DEFER):
            pre.notes.append("Not run: the call is already refused.")
        else:
            ran = self._preflight(request, principal, call, pre, preflight_result)
        return self._finish(stages, policy, snapshot, debits, hold_id, now, call, approval_used, ran)

    def _contract(self, request: AuthorizationRequest, policy: PolicyDocument, st: _Stage) -> _Call | None:
        tool = self.registry.get(request.tool)
        if tool is None:
            st.find(Outcome.DENY, R.UNKNOWN_TOOL, f"Tool {request.tool!r} has no registered manifest.")
            return None
        m = tool.manifest
        if request.manifest_digest is None:
            if policy.invariants.require_manifest_pin:
                st.find(Outcome.DENY, R.MANIFEST_PIN_MISSING, "The proposal does not pin the tool's manifest digest.")
        elif request.manifest_digest != tool.digest:
            st.find(
                Outcome.DENY,
                R.MANIFEST_PIN_MISMATCH,
                f"The proposal pins manifest {request.manifest_digest[:19]}..., "
                f"the registered one is {tool.digest[:19]}....",
            )
        errors = sorted(tool.validator.iter_errors(request.args), key=lambda e: (list(e.absolute_path), e.message))
        if errors:
            where = "/".join(str(p) for p in errors[0].absolute_path) or "(arguments)"
            st.find(
                Outcome.DENY,
                R.ARGS_SCHEMA_VIOLATION,
                f"Arguments do not match the schema at {where}: {errors[0].message[:200]}",
            )
        amount = currency = None
        if m.amount_arg is not None:
            raw = request.args.get(m.amount_arg)
            currency = request.args.get(m.currency_arg) if m.currency_arg else m.currency
            if not isinstance(raw, str):
                st.find(
                    Outcome.DENY,
                    R.AMOUNT_NOT_DECIMAL_STRING,
                    f"Amount argument {m.amount_arg!r} must be a decimal string (money never travels as a float).",
                )
            elif not isinstance(currency, str) or currency not in policy.currencies:
                st.find(Outcome.DENY, R.CURRENCY_NOT_ALLOWED, f"Currency {currency!r} is not declared in the policy.")
            else:
                try:
                    amount = policy.minor(currency, raw)
                except ValueError as exc:
                    st.find(Outcome.DENY, R.AMOUNT_INVALID, f"Amount is not valid: {exc}")
        if st.findings:
            return None
        tier = max((EFFECTS[e].tier for e in m.effects), key=lambda t: t.rank)
        st.notes.append(
            f"Tool {m.name!r} v{m.version} pinned at {tool.digest[:19]}...; "
            f"effects {list(m.effects)}, tier {tier.value}."
        )
        return _Call(tool, amount, currency if amount is not None else None, m.effects, tier)

    def _ceilings(
        self,
        request: AuthorizationRequest,
        policy: PolicyDocument,
        p: PrincipalPolicy,
        call: _Call,
        st: _Stage,
        now: int,
    ) -> None:
        who = f"principal {p.id!r}"
        if p.agents and request.agent not in p.agents:
            st.find(Outcome.DENY, R.AGENT_NOT_ALLOWED, f"Agent {request.agent!r} may not act for {who}.")
        if request.tool not in p.allow_tools:
            st.find(Outcome.DENY, R.TOOL_NOT_ALLOWED, f"Tool {request.tool!r} is not in allow_tools of {who}.")
        else:
            st.notes.append(f"allow_tools of {who} includes {request.tool!r}.")
        if p.allow_effects:
            missing = [e for e in call.effects if e not in p.allow_effects]
            if missing:
                st.find(Outcome.DENY, R.EFFECT_NOT_ALLOWED, f"Effects {missing} are not in allow_effects of {who}.")
        if call.tier.rank > p.max_risk_tier.rank:
            st.find(
                Outcome.DENY,
                R.RISK_TIER_EXCEEDED,
                f"Tier {call.tier.value} exceeds max_risk_tier {p.max_risk_tier.value} of {who}.",
            )
        if call.amount is not None and call.currency is not None:
            ceiling = p.amount_ceilings.get(call.currency)
            shown = policy.show(call.currency, call.amount)
            if ceiling is None:
                st.find(
                    Outcome.DENY,
                    R.CURRENCY_NOT_ALLOWED,
                    f"{who} has no amount ceiling in {call.currency}: no spending in it.",
                )
            elif call.amount > policy.minor(call.currency, ceiling):
                st.find(
                    Outcome.DENY,
                    R.AMOUNT_CEILING_EXCEEDED,
                    f"Amount {shown} exceeds the per-call ceiling {ceiling} {call.currency} of {who}.",
                )
            else:
                st.notes.append(f"Amount {shown} is within the per-call ceiling {ceiling} {call.currency}.")
        if p.time_windows and not any(w.contains(now) for w in p.time_windows):
            st.find(
                Outcome.DEFER,
                R.OUTSIDE_TIME_WINDOW,
                f"Now is outside the time windows of {who} (UTC); retry inside one.",
            )

    def _counterfactuals(
        self,
        request: AuthorizationRequest,
        policy: PolicyDocument,
        p: PrincipalPolicy,
        call: _Call,
        st: _Stage,
        now: int,
        snapshot: dict[str, int],
        given: Mapping[str, int] | None,
    ) -> list[Debit]:
        debits: list[Debit] = []

        def used(key: str, window: int) -> int:
            value = given.get(key, 0) if given is not None else self.state.usage(key, window, now=now)
            snapshot[key] = value
            return value

        if call.amount is not None and call.currency is not None:
            for b in p.budgets:
                if b.currency != call.currency:
                    continue
                key = f"budget/{p.id}/{b.currency}/{b.window}"
                limit = policy.minor(b.currency, b.limit)
                before = used(key, b.window)
                after = before + call.amount
                text = (
                    f"Budget {b.limit} {b.currency} per {b.window}s: {policy.show(b.currency, before)} spent, "
                    f"{policy.show(b.currency, after)} after this call."
                )
                if after > limit:
                    st.find(Outcome.DENY, R.BUDGET_EXCEEDED, text)
                else:
                    st.notes.append(text)
                debits.append(Debit(key, call.amount, limit, b.window))
        for rl in p.rate_limits:
            if rl.tool not in ("*", request.tool):
                continue
            key = f"rate/{p.id}/{rl.tool}/{rl.window}"
            before = used(key, rl.window)
            text = (
                f"Rate limit {rl.limit} calls of {rl.tool!r} per {rl.window}s: "
                f"{before} made, {before + 1} after this call."
            )
            if before + 1 > rl.limit:
                st.find(Outcome.DEFER, R.RATE_LIMITED, text + " Retry in the next window.")
            else:
                st.notes.append(text)
            debits.append(Debit(key, 1, rl.limit, rl.window))
        blast = max((EFFECTS[e].blast_radius for e in call.effects), key=_BLAST_ORDER.index)
        worst = policy.show(call.currency, call.amount) if call.amount is not None and call.currency else "none"
        st.notes.append(f"Worst case: amount {worst}, blast radius {blast.value}, tier {call.tier.value}.")
        return debits

    def _invariants(self, policy: PolicyDocument, p: PrincipalPolicy, call: _Call, st: _Stage, approved: bool) -> bool:
        """Returns True when a presented approval was what the call needed."""
        if policy.kill_switch:
            st.find(Outcome.DENY, R.KILL_SWITCH, f"The kill switch of policy {policy.id!r} is on: nothing runs.")
        forbidden = [e for e in call.effects if e in policy.invariants.forbidden_effects]
        if forbidden:
            st.find(Outcome.DENY, R.EFFECT_FORBIDDEN, f"Effects {forbidden} are forbidden policy-wide.")
        needs: list[str] = []
        gate = policy.invariants.approval_at_or_above_tier
        if gate is not None and call.tier.rank >= gate.rank:
            needs.append(f"tier {call.tier.value} is at or above {gate.value}")
        listed = [e for e in call.effects if e in p.require_approval_effects]
        if listed:
            needs.append(f"effects {listed} require approval")
        if call.amount is not None and call.currency in p.require_approval_above:
            threshold = p.require_approval_above[call.currency]
            if call.amount > policy.minor(call.currency, threshold):
                needs.append(f"amount is above {threshold} {call.currency}")
        if needs:
            if approved:
                st.notes.append("A person approved this exact proposal (" + "; ".join(needs) + ").")
                return True
            st.find(
                Outcome.REQUIRE_APPROVAL,
                R.APPROVAL_REQUIRED,
                "A person must approve this exact proposal: " + "; ".join(needs) + ".",
            )
        return False

    def _preflight(
        self,
        request: AuthorizationRequest,
        p: PrincipalPolicy,
        call: _Call,
        st: _Stage,
        replayed: PreflightResult | None,
    ) -> PreflightResult | None:
        specs = [EFFECTS[e] for e in call.effects]
        required = any(s.preflight_required for s in specs) or any(
            e in p.require_evidence_effects for e in call.effects
        )
        need = max((s.min_evidence for s in specs), key=lambda g: g.rank)
        if any(e in p.require_evidence_effects for e in call.effects) and need.rank < EvidenceGrade.SIMULATED.rank:
            need = EvidenceGrade.SIMULATED
        fn = call.tool.preflight
        if replayed is None and fn is None:
            if required or need is not EvidenceGrade.NONE:
                st.find(
                    Outcome.REQUIRE_EVIDENCE,
                    R.PREFLIGHT_MISSING,
                    f"Effects {list(call.effects)} need a preflight with {need.value} evidence; the tool has none.",
                )
            return None
        result = replayed
        if result is None:
            try:
                # A deep copy: a preflight must not be able to change what will run.
                result = fn(json.loads(request.canonical_bytes())["args"]) if fn is not None else None
            except StoreUnavailable:
                raise
            except (KeyboardInterrupt, SystemExit, GeneratorExit):
                raise  # the host is stopping; the guard records the denial and lets it go
            except BaseException as exc:
                import asyncio

                if isinstance(exc, asyncio.CancelledError):
                    raise
                st.find(Outcome.DENY, R.PREFLIGHT_FAILED, f"Preflight raised {type(exc).__name__}.")
                return PreflightResult(ok=False, grade=EvidenceGrade.NONE, detail=f"raised {type(exc).__name__}")
        if not isinstance(result, PreflightResult) or not isinstance(result.grade, EvidenceGrade):
            st.find(Outcome.DENY, R.PREFLIGHT_FAILED, "Preflight did not return a PreflightResult.")
            return PreflightResult(ok=False, grade=EvidenceGrade.NONE, detail="no PreflightResult")
        st.notes.append(f"preflight: ok={result.ok} grade={result.grade.value} {result.detail[:200]}".rstrip())
        if not result.ok:
            st.find(Outcome.DENY, R.PREFLIGHT_FAILED, f"Preflight failed: {result.detail[:200]}")
        elif result.grade.rank < need.rank:
            st.find(
                Outcome.REQUIRE_EVIDENCE,
                R.EVIDENCE_INSUFFICIENT,
                f"Preflight evidence is {result.grade.value}; {need.value} is required.",
            )
        return result

    def _finish(
        self,
        stages: list[_Stage],
        policy: PolicyDocument | None,
        snapshot: dict[str, int],
        debits: list[Debit],
        hold_id: str | None,
        now: int,
        call: _Call | None = None,
        approval_used: bool = False,
        preflight: PreflightResult | None = None,
    ) -> Evaluation:
        outcome = _combine([o for st in stages for o, _, _ in st.findings])
        emit = _Stage("emit")
        shadow_outcome: Outcome | None = None
        if policy is not None and policy.mode == "shadow" and outcome is not Outcome.ALLOW:
            hard = {R.KILL_SWITCH.value, R.EFFECT_FORBIDDEN.value}
            if any(c in hard for st in stages for _, c, _ in st.findings):
                emit.notes.append("Shadow mode does not override the kill switch or forbidden effects.")
            else:
                shadow_outcome = outcome
                emit.notes.append(f"SHADOW MODE: would have been {outcome.value}; the call is not blocked.")
                outcome = Outcome.ALLOW
        if outcome is Outcome.ALLOW and shadow_outcome is None and debits and hold_id is not None:
            lost = self.state.debit(hold_id, debits, now=now)
            if lost is not None:
                # Another replica spent the headroom between our read and our debit.
                code, res = (
                    (R.RATE_LIMITED, Outcome.DEFER) if lost.startswith("rate/") else (R.BUDGET_EXCEEDED, Outcome.DENY)
                )
                emit.find(res, code, f"Counter {lost!r} was exhausted concurrently; nothing was debited.")
                outcome = res
            else:
                emit.notes.append(f"Debited {len(debits)} counter(s) under hold {hold_id}.")
        stages.append(emit)
        records = tuple(st.as_record() for st in stages)
        findings = sorted((f for st in stages for f in st.findings), key=lambda f: _PRECEDENCE.index(f[0]))
        if outcome is Outcome.ALLOW and shadow_outcome is None:
            codes = [R.TOOL_ALLOWED.value] + ([R.APPROVAL_GRANTED.value] if approval_used else [])
            why = ["Every stage passed."] + [
                n for st in stages if st.name in ("ceilings", "invariants") for n in st.notes
            ]
        else:
            codes = [c for _, c, _ in findings]
            why = [w for _, _, w in findings]
        if shadow_outcome is not None:
            codes = [R.SHADOW_MODE.value, *codes]
            why = [f"Shadow mode: recorded as {shadow_outcome.value}, not blocked.", *why]
        limits: dict[str, str] = {}
        if call is not None and call.amount is not None and call.currency is not None and policy is not None:
            limits = {"amount": policy.show(call.currency, call.amount)}
        return Evaluation(
            outcome=outcome,
            reason_codes=tuple(dict.fromkeys(codes)),
            explanation=tuple(why),
            effects=call.effects if call is not None else (),
            limits=limits,
            state_digest=digest(snapshot) if snapshot else None,
            stages=records,
            state_snapshot=dict(snapshot) if snapshot else None,
            shadow_outcome=shadow_outcome,
            preflight=(
                {"ok": preflight.ok, "grade": preflight.grade.value, "detail": preflight.detail[:200]}
                if preflight is not None
                else None
            ),
        )
