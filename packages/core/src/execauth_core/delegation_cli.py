"""``execauth delegate`` (issue a root link, or a narrowed child of a chain) and
``execauth delegation verify`` (check a chain, optionally a request against it).

A chain file is JSON: ``{"v": "execauth.delegation_chain/1", "chain": [JWS, ...]}``,
root first. Exit codes as for ``execauth``: 0 valid / written, 1 a chain or request
that does not verify, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path
from typing import Any, NoReturn

import pydantic

from .canonical import CanonicalizationError, loads_strict
from .clock import SystemClock
from .delegation import (
    ArgConstraint,
    DelegationError,
    DelegationVerifier,
    Narrowing,
    check_request,
    delegate,
    issue_root,
)
from .errors import ConfigurationError, ExecAuthError
from .keys import KeySet, LocalSigner
from .messages import AuthorizationRequest

__all__ = ["build_parser", "main"]
CHAIN_TYPE = "execauth.delegation_chain/1"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"execauth: error: {message}\n")


class _Usage(Exception):
    pass


def _json(path: str) -> Any:
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise _Usage(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return loads_strict(raw)
    except CanonicalizationError as exc:
        raise _Usage(f"{path}: {exc}") from None


def _chain(path: str) -> list[str]:
    doc = _json(path)
    if not isinstance(doc, dict) or doc.get("v") != CHAIN_TYPE or not isinstance(doc.get("chain"), list):
        raise _Usage(f"{path}: not a chain file ({{'v': '{CHAIN_TYPE}', 'chain': [...]}})")
    if not all(isinstance(t, str) for t in doc["chain"]):
        raise _Usage(f"{path}: every link is a compact JWS string")
    return list(doc["chain"])


def _write(chain: list[str], out: str | None) -> None:
    text = json.dumps({"v": CHAIN_TYPE, "chain": chain}, indent=2) + "\n"  # noqa: TID251 - a file for people and tools, never signed
    if out is None or out == "-":
        sys.stdout.write(text)
        return
    try:
        Path(out).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _Usage(f"{out}: cannot write: {exc.strerror or exc}") from None


def _ceilings(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    out: dict[str, str] = {}
    for v in values:
        currency, sep, amount = v.partition("=")
        if not sep:
            raise _Usage(f"--ceiling {v!r}: write CURRENCY=AMOUNT, e.g. USD=50.00")
        out[currency] = amount
    return out


def _rate(value: str | None) -> dict[str, int] | None:
    if value is None:
        return None
    count, sep, window = value.partition("/")
    if not sep or not count.isdigit() or not window.isdigit():
        raise _Usage(f"--rate {value!r}: write COUNT/WINDOW_SECONDS, e.g. 10/60")
    return {"count": int(count), "window": int(window)}


def _list(value: str | None) -> list[str] | None:
    return None if value is None else [x for x in (p.strip() for p in value.split(",")) if x]


def cmd_delegate(args: argparse.Namespace) -> int:
    signer = LocalSigner.load(args.key)
    now = args.now if args.now is not None else SystemClock().now()
    jti = args.jti or f"dlg_{secrets.token_urlsafe(18)}"
    if args.parent is None:
        missing = [f"--{n}" for n in ("issuer", "principal", "scope", "ttl") if getattr(args, n) is None]
        if missing or not args.audience:
            raise _Usage(f"a root delegation needs {', '.join(missing + ([] if args.audience else ['--audience']))}")
        link = issue_root(
            signer,
            jti=jti,
            issuer=args.issuer,
            principal=args.principal,
            agent=args.agent,
            audience=args.audience,
            scope=_json(args.scope),
            now=now,
            ttl=args.ttl,
            max_depth=args.max_depth if args.max_depth is not None else 0,
            holder_kid=args.holder_kid,
        )
        _write([link.token], args.out)
        return 0
    if args.jwks is None or not args.trusted_issuer:
        raise _Usage("a child delegation needs --jwks and --trusted-issuer to verify its parent chain")
    chain = _chain(args.parent)
    try:
        constraints = [ArgConstraint.model_validate(_json_text(c)) for c in args.constraint or []]
    except pydantic.ValidationError as exc:
        raise _Usage(f"--constraint: {exc.errors()[0]['msg']}") from None
    ask = Narrowing(
        tools=_list(args.tools),
        effects=_list(args.effects),
        amount_ceilings=_ceilings(args.ceiling),
        constraints=constraints,
        rate=_rate(args.rate),
        max_uses=args.max_uses,
        audience=args.audience or None,
        max_depth=args.max_depth,
        ttl=args.ttl,
    )
    keys = KeySet.load(args.jwks)
    last = _peek_aud(chain[-1]) if chain else None
    audience = (args.audience or [None])[0] or last
    if audience is None:
        raise _Usage("cannot tell which audience to verify the parent chain for: pass --audience")
    try:
        verified = DelegationVerifier(keys=keys, issuers=args.trusted_issuer, audience=audience, max_chain=8).verify(
            chain, now=now
        )
        child = delegate(
            verified.links[-1], signer, jti=jti, agent=args.agent, now=now, narrowing=ask, holder_kid=args.holder_kid
        )
    except DelegationError as exc:
        _out({"issued": False, "reason_code": exc.reason_code, "message": exc.message})
        return 1
    _write([*chain, child.token], args.out)
    return 0


def _json_text(text: str) -> Any:
    try:
        return loads_strict(text)
    except CanonicalizationError as exc:
        raise _Usage(f"--constraint {text[:60]!r}: {exc}") from None


def _peek_aud(token: str) -> str | None:
    from ._b64 import b64url_decode

    try:
        aud = loads_strict(b64url_decode(token.split(".")[1])).get("aud")
    except (ValueError, IndexError, AttributeError, CanonicalizationError):
        return None
    return aud[0] if isinstance(aud, list) and aud and isinstance(aud[0], str) else None


def _out(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")  # noqa: TID251 - output for people


def cmd_verify(args: argparse.Namespace) -> int:
    chain = _chain(args.chain)
    verifier = DelegationVerifier(
        keys=KeySet.load(args.jwks), issuers=args.issuer, audience=args.audience, max_chain=args.max_chain
    )
    now = args.now if args.now is not None else SystemClock().now()
    try:
        verified = verifier.verify(chain, now=now)
        if args.request is not None:
            from .manifest import load_registry

            if args.registry is None:
                raise _Usage("--request needs --registry (the tools' manifests)")
            try:
                request = AuthorizationRequest.model_validate(_json(args.request))
            except pydantic.ValidationError as exc:
                raise _Usage(f"{args.request}: not a request: {exc.errors()[0]['msg']}") from None
            check_request(verified, request, load_registry(args.registry))
    except DelegationError as exc:
        _out({"valid": False, "reason_code": exc.reason_code, "message": exc.message})
        return 1
    _out(
        {
            "valid": True,
            "reason_code": None,
            "chain": list(verified.refs),
            "principal": verified.principal,
            "agent": verified.agent,
            "expires": min(link.claims.exp for link in verified.links),
            "scope": verified.scope.model_dump(mode="json"),
            "note": "use counts, rates and revocations live in the guard's state store; not checked here",
        }
    )
    return 0


def build_parser(prog: str = "execauth") -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description="Issue and verify delegations (chains that only narrow).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    d = sub.add_parser("delegate", help="issue a root delegation, or a narrowed child of a chain")
    d.add_argument("--key", required=True, help="the signing key (a private JWK file, mode 0600)")
    d.add_argument("--agent", required=True, help="the child agent the delegation is for")
    d.add_argument("--parent", help="chain file to extend (omit for a root delegation)")
    d.add_argument("--out", help="write the chain file here (default: stdout)")
    d.add_argument("--jti", help="delegation id (default: random)")
    d.add_argument("--now", type=int, help="Unix time to issue at (default: now)")
    d.add_argument("--ttl", type=int, help="seconds of validity (a child: default its parent's expiry)")
    d.add_argument("--max-depth", type=int, help="further hops allowed below (root default 0; child: parent's - 1)")
    d.add_argument("--holder-kid", help="the only key that may sign a child of this link")
    d.add_argument("--audience", action="append", help="guard(s) that may accept it (repeat; a child: a subset)")
    root = d.add_argument_group("a root delegation")
    root.add_argument("--issuer", help="the root's issuer name (the guards trust it)")
    root.add_argument("--principal", help="on whose behalf")
    root.add_argument("--scope", help="JSON file with the full scope: every limit")
    child = d.add_argument_group("a child: verify the parent chain, then narrow (omitted: the parent's limit)")
    child.add_argument("--jwks", help="trusted keys to verify the parent chain")
    child.add_argument("--trusted-issuer", action="append", help="trusted root issuer (repeatable)")
    child.add_argument("--tools", help="comma-separated subset of the parent's tools")
    child.add_argument("--effects", help="comma-separated subset of the parent's effects")
    child.add_argument("--ceiling", action="append", help="CURRENCY=AMOUNT, at most the parent's (repeatable)")
    child.add_argument("--constraint", action="append", help="an added argument constraint, as JSON (repeatable)")
    child.add_argument("--rate", help="COUNT/WINDOW_SECONDS, at most the parent's")
    child.add_argument("--max-uses", type=int, help="at most the parent's")
    d.set_defaults(fn=cmd_delegate)

    dl = sub.add_parser("delegation", help="delegation chains").add_subparsers(dest="sub", required=True)
    v = dl.add_parser("verify", help="verify a chain (and optionally a request against it)")
    v.add_argument("chain", help="chain file ('-' for stdin)")
    v.add_argument("--jwks", required=True, help="trusted keys")
    v.add_argument("--issuer", action="append", required=True, help="trusted root issuer (repeatable)")
    v.add_argument("--audience", required=True, help="this guard's name")
    v.add_argument("--max-chain", type=int, default=4, help="longest chain accepted (default 4, at most 8)")
    v.add_argument("--now", type=int, help="Unix time to verify at (default: now)")
    v.add_argument("--request", help="an AuthorizationRequest JSON file to check against the scope")
    v.add_argument("--registry", help="the tools' manifests (JSON or YAML list), for --request")
    v.set_defaults(fn=cmd_verify)
    return p


def main(argv: list[str], *, prog: str = "execauth") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        return int(args.fn(args))
    except (_Usage, ExecAuthError, ConfigurationError) as exc:
        sys.stderr.write(f"execauth: error: {exc}\n")
        return 2
