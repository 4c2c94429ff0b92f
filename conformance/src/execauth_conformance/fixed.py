"""The deterministic inputs every vector is built from: keys, clock, ids."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from execauth_core import (
    AllowListPolicy,
    Court,
    DecisionPoint,
    EvidenceGrade,
    FixedClock,
    Guard,
    LocalSigner,
    PreflightResult,
    ToolRegistry,
    parse_policy,
)
from execauth_core.stores import Debit, MemoryStateStore, window_start

# RFC 8032 section 7.1, TEST 1 and TEST 2 secret keys.
TRUSTED_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
UNTRUSTED_SEED = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
ISSUER = "execauth-conformance"
AUDIENCE = "execauth-guard"


def trusted_signer() -> LocalSigner:
    return LocalSigner(TRUSTED_SEED)


def untrusted_signer() -> LocalSigner:
    return LocalSigner(UNTRUSTED_SEED)


def seeded_state(counters: dict[str, int] | None, now: int) -> MemoryStateStore:
    """A state store holding ``counters`` (key ending in ``/<window seconds>`` -> used)."""
    state = MemoryStateStore()
    for key, used in sorted((counters or {}).items()):
        window = int(key.rsplit("/", 1)[1])
        state.debit(f"seed/{key}", [Debit(key, used, used, window)], now=window_start(now, window))
    return state


def decision_point(spec: dict[str, Any], *, now: int = 0, state: dict[str, int] | None = None) -> DecisionPoint:
    """Build the decision point a decision vector names.

    ``{"allowlist": {"allow": [...], "require_approval": [...]}}`` or
    ``{"court": {"policy": {...} | null, "manifests": [...]}}``; ``state`` seeds the
    Court's budget and rate counters.
    """
    if "allowlist" in spec:
        a = spec["allowlist"]
        return AllowListPolicy(a.get("allow", []), require_approval=a.get("require_approval", []))
    court = spec["court"]
    policy = parse_policy(court["policy"]) if court.get("policy") is not None else None
    registry = ToolRegistry()
    preflights = court.get("preflights", {})
    for manifest in court.get("manifests", []):
        result = preflights.get(manifest["name"])
        registry.register(manifest, preflight=_fixed_preflight(result) if result is not None else None)
    return Court(policy, registry, state=seeded_state(state, now))


def _fixed_preflight(result: dict[str, Any]) -> Callable[[Any], PreflightResult]:
    """A preflight whose result the vector states (``ok``, ``grade``, ``detail``)."""
    fixed = PreflightResult(ok=bool(result["ok"]), grade=EvidenceGrade(result["grade"]), detail=str(result["detail"]))
    return lambda args: fixed


def fixed_ids(first: str) -> Callable[[], str]:
    """The id factory of a vector: its token id, then derived ids (grants)."""
    counter = iter(range(10**6))

    def make() -> str:
        n = next(counter)
        return first if n == 0 else f"{first}-{n:04d}"

    return make


def vector_guard(
    spec: dict[str, Any], *, now: int, token_id: str, state: dict[str, int] | None = None, ledger: bool = False
) -> Guard:
    """A guard exactly as the vector describes: memory stores, fixed everything. No
    effect ledger unless asked (the vectors describe decisions, not deduplication)."""
    return Guard.local(
        decision_point(spec, now=now, state=state),
        clock=FixedClock(now),
        signer=trusted_signer(),
        issuer=ISSUER,
        audience=AUDIENCE,
        id_factory=fixed_ids(token_id),
        ledger=ledger,
    )
