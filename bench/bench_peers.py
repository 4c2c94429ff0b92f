"""execauth beside Microsoft's Agent Governance Toolkit (AGT), measured in the same rounds.

    nox -s bench_peers          # its own venv: execauth-core + agent-governance-toolkit-core

AGT's documented two-line integration is ``agentmesh.governance.govern(fn, policy=...)``:
every call is evaluated against a YAML policy and logged to its in-memory audit log;
nothing is signed or verified. execauth's full path decides, signs a decision record
and a token, verifies the token against a configured key, consumes its id once and
appends hash-linked audit entries. Both guard the same tool with an allow rule for it
and deny everything else. Figures are medians of per-round p50s; ratios are medians of
per-round ratios (a shared machine's load moves absolute figures, not ratios).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from importlib import metadata

import rfc8785
from bench_core import AllowListPolicy, Guard, court_guard, crypto_floor, guarded, rounds

AGT_POLICY = """
apiVersion: governance.toolkit/v1
name: bench
agents: ["*"]
default_action: deny
rules:
  - name: allow-search
    condition: "action.type == 'search'"
    action: allow
    priority: 10
"""


def agt_version() -> str:
    for dist in ("agent-governance-toolkit-core", "agent-governance-toolkit"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def search(action: str = "search", query: str = "", limit: int = 10) -> int:
    return len(query) + limit


def agt_case() -> Callable[[int], object]:
    import warnings

    with warnings.catch_warnings():
        # agent-governance-toolkit-core 5.0 still ships agentmesh, whose import warns
        # about the old distribution name agentmesh-platform; govern() is its documented API.
        warnings.simplefilter("ignore", DeprecationWarning)
        from agentmesh.governance import GovernanceDenied, govern

    safe = govern(search, policy=AGT_POLICY, agent_id="bench", audit=True)
    # It must really decide: the allowed call runs, anything else is denied.
    assert safe(action="search", query="q", limit=1) == 2
    try:
        safe(action="drop", query="q", limit=1)
    except GovernanceDenied:
        pass
    else:
        raise AssertionError("AGT did not deny an action its policy does not allow")
    assert safe.audit_log is not None
    return lambda i: safe(action="search", query=f"q{i}", limit=10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=7000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    court, rules = court_guard()
    refund = court.proposal(
        "refund", {"order": "A-1", "amount": "12.50", "currency": "USD"}, principal="user-1", agent="bench"
    )
    agt = f"AGT govern()+audit ({agt_version()})"
    cases: dict[str, Callable[[int], object]] = {
        agt: agt_case(),
        "crypto floor (rfc8785 + sign + verify)": crypto_floor(rfc8785.dumps),
        "execauth run, allow-list, memory": guarded(Guard.local(AllowListPolicy(["search"]))),
        f"execauth run, Court {rules} rules, memory": lambda i: court.run(refund, lambda: None),
    }
    got = rounds(cases, args.n, args.rounds)
    print(f"\nexecauth beside {agt_version()}, {args.rounds} rounds of {args.n // args.rounds} calls")
    print(f"{'case':50} {'p50 us':>8} {'/AGT':>6} {'/floor':>7}")
    base, floor = got[agt], got["crypto floor (rfc8785 + sign + verify)"]
    for name, p50s in got.items():
        vs_agt = statistics.median(p / a for p, a in zip(p50s, base, strict=True))
        vs_floor = statistics.median(p / f for p, f in zip(p50s, floor, strict=True))
        print(f"{name:50} {statistics.median(p50s):8.1f} {vs_agt:6.2f} {vs_floor:7.2f}")
    print("(issue 20 target 1: execauth's allow-list path at or below AGT's govern()+audit, i.e. /AGT <= 1.0)")


if __name__ == "__main__":
    main()
