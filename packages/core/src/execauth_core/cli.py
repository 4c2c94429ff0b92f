"""The ``execauth`` command line.

Exit codes: 0 success/valid, 1 invalid (a token or audit log that does not
verify, a demo that went wrong), 2 usage error (bad arguments, unreadable or
malformed files). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import pydantic

from .audit import Checkpoint, verify_chain
from .canonical import CanonicalizationError, loads_strict
from .clock import SystemClock
from .errors import AuditIntegrityError, ExecAuthError, StoreUnavailable, TokenError
from .keys import KeySet, LocalSigner
from .messages import AuthorizationRequest
from .tokens import TokenVerifier, unverified_claims


class UsageError(Exception):
    """Bad arguments or input files: exit 2."""


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None


def _json_file(path: str) -> Any:
    try:
        return loads_strict(_read(path))
    except CanonicalizationError as exc:
        raise UsageError(f"{path}: {exc}") from None


def _print(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def cmd_keys_generate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key_path = out / "authority.key"
    signer = LocalSigner.generate()
    signer.save(key_path)
    (out / "jwks.json").write_text(json.dumps(KeySet.of_signer(signer).to_jwks(), indent=2) + "\n", encoding="utf-8")
    _print({"kid": signer.kid, "private_key": str(key_path), "jwks": str(out / "jwks.json")})
    return 0


def cmd_token_verify(args: argparse.Namespace) -> int:
    token = args.token
    if token == "-" or token.startswith("@"):
        token = _read("-" if token == "-" else token[1:]).decode("utf-8", "replace").strip()
    keys = KeySet.load(args.jwks)
    raw = _read(args.request)
    try:
        loads_strict(raw)
        request = AuthorizationRequest.model_validate_json(raw, strict=True)
    except (CanonicalizationError, pydantic.ValidationError) as exc:
        raise UsageError(f"{args.request}: not an AuthorizationRequest: {str(exc).splitlines()[0]}") from None
    verifier = TokenVerifier(
        keys=keys, issuer=args.issuer, audience=args.audience, max_ttl=args.max_ttl, clock_skew=args.skew
    )
    now = args.now if args.now is not None else SystemClock().now()
    try:
        claims = verifier.verify(token, request=request, now=now)
    except TokenError as exc:
        _print({"valid": False, "reason_code": exc.reason_code, "message": exc.message})
        return 1
    _print({"valid": True, "reason_code": None, "claims": claims.model_dump(mode="json")})
    return 0


def cmd_token_inspect(args: argparse.Namespace) -> int:
    _print({"verified": False, "claims": unverified_claims(args.token)})
    return 0


def _audit_log(args: argparse.Namespace) -> tuple[Any, Any]:
    """The audit log named by ``--db FILE`` (SQLite) or ``--store URL`` (any backend),
    and what to close when done."""
    if args.store is not None:
        from .stores.urls import open_stores, sqlite_path

        scheme = args.store.split(":", 1)[0].lower()
        if scheme == "memory":
            raise UsageError("memory:// is a new, empty log in this process: nothing to verify")
        if scheme == "sqlite" and not Path(sqlite_path(args.store)).is_file():
            raise UsageError(f"{sqlite_path(args.store)}: no such file")
        stores = open_stores(args.store)
        return stores.audit, stores
    from .stores.sqlite import SQLiteAuditLog

    if not Path(args.db).is_file():
        raise UsageError(f"{args.db}: no such file")
    log = SQLiteAuditLog(args.db)
    return log, log


def _verify_to_head(log: Any, checkpoint: Checkpoint | None = None) -> tuple[int, str]:
    """Verify the chain up to the head as read now. Writers may go on appending to a
    live log meanwhile: the entries after that head are left for the next run."""
    head = log.head()
    upto = itertools.takewhile(lambda entry: entry.seq <= head[0], log.entries())
    return verify_chain(upto, checkpoint=checkpoint, expected_head=head)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    checkpoint = None
    if args.checkpoint:
        if not args.jwks:
            raise UsageError("--checkpoint needs --jwks to check its signature")
        checkpoint = Checkpoint.from_json(_json_file(args.checkpoint), KeySet.load(args.jwks))
    log, opened = _audit_log(args)
    try:
        seq, head = _verify_to_head(log, checkpoint)
    except AuditIntegrityError as exc:
        _print({"ok": False, "first_bad_seq": exc.seq, "message": str(exc)})
        return 1
    finally:
        opened.close()
    _print({"ok": True, "records": seq, "head": head, "checkpoint_seq": checkpoint.seq if checkpoint else None})
    return 0


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    log, opened = _audit_log(args)
    try:
        verified = _verify_to_head(log)
        cp = Checkpoint.sign(log, LocalSigner.load(args.key), now=SystemClock().now(), head=verified)
    finally:
        opened.close()
    text = json.dumps(cp.to_json(), indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    return 0


def _court(args: argparse.Namespace, state: Any = None) -> Any:
    from .court import Court
    from .manifest import ToolRegistry, load_registry
    from .policyfile import load_policy

    registry = load_registry(args.manifests) if args.manifests else ToolRegistry()
    return Court(load_policy(args.policy), registry, state=state)


def _request(path: str) -> AuthorizationRequest:
    raw = _read(path)
    try:
        loads_strict(raw)
        return AuthorizationRequest.model_validate_json(raw, strict=True)
    except (CanonicalizationError, pydantic.ValidationError) as exc:
        raise UsageError(f"{path}: not an AuthorizationRequest: {str(exc).splitlines()[0]}") from None


def cmd_policy_check(args: argparse.Namespace) -> int:
    from .manifest import load_registry
    from .policyfile import load_policy

    policy = load_policy(args.file)
    if args.manifests:
        from .court import Court

        Court(policy, load_registry(args.manifests))  # unknown tools fail here
    ref = policy.ref()
    _print(
        {
            "ok": True,
            "id": ref.id,
            "epoch": ref.epoch,
            "digest": ref.digest,
            "mode": policy.mode,
            "principals": len(policy.principals),
            "rules": policy.rule_count(),
        }
    )
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    from .authority import Authority
    from .stores.base import window_start
    from .stores.memory import MemoryStateStore

    state = MemoryStateStore()
    now = args.now if args.now is not None else SystemClock().now()
    if args.state:
        counters = _json_file(args.state)
        if not isinstance(counters, dict) or not all(isinstance(v, int) and v >= 0 for v in counters.values()):
            raise UsageError(f"{args.state}: a state file maps counter keys to non-negative integers")
        from .stores.base import Debit

        for key, value in counters.items():
            window = int(key.rsplit("/", 1)[-1]) if key.rsplit("/", 1)[-1].isdigit() else 0
            if window <= 0:
                raise UsageError(f"{args.state}: counter key {key!r} does not end in /<window seconds>")
            state.debit(f"seed/{key}", [Debit(key, value, value, window)], now=window_start(now, window))
    court = _court(args, state)
    signer = LocalSigner.load(args.key) if args.key else LocalSigner.generate()
    authority = Authority(court, signer, issuer=args.issuer, audience=args.audience)
    from .guard import new_id

    decision = authority.decide(_request(args.request), now=now, token_id=new_id())
    out = {
        "outcome": decision.outcome.value,
        "reason_codes": list(decision.reason_codes),
        "why": list(decision.explanation),
        "stages": [s.model_dump(mode="json") for s in decision.record.stages],
        "policy": decision.record.policy.model_dump(mode="json"),
        "record_digest": decision.record_digest,
        "token": decision.token if args.key else None,
    }
    if args.out:
        Path(args.out).write_bytes(decision.canonical_bytes())
    _print(out)
    return 0 if decision.outcome.value == "ALLOW" else 1


def cmd_record_replay(args: argparse.Namespace) -> int:
    from .effects import EvidenceGrade
    from .manifest import PreflightResult
    from .messages import AuthorizationDecision, DecisionRecord

    raw = _read(args.decision)
    decision = None
    try:
        data = loads_strict(raw)
        if isinstance(data, dict) and data.get("v") == "execauth.decision/1":
            decision = AuthorizationDecision.model_validate(data)
            record = decision.record
        else:
            record = DecisionRecord.model_validate(data)
    except (CanonicalizationError, pydantic.ValidationError) as exc:
        raise UsageError(f"{args.decision}: not a decision or decision record: {str(exc).splitlines()[0]}") from None
    signature = None
    if args.jwks:
        if decision is None:
            raise UsageError("--jwks checks the signature of a full decision (decide --out), not a bare record")
        signature = _record_signature_ok(decision, KeySet.load(args.jwks))
    court = _court(args)
    if court.policy_ref != record.policy:
        raise UsageError(
            f"policy differs from the one that decided: record has {record.policy.digest}, "
            f"file is {court.policy_ref.digest}"
        )
    pre = record.preflight
    replayed = (
        PreflightResult(ok=bool(pre["ok"]), grade=EvidenceGrade(pre["grade"]), detail=str(pre["detail"]))
        if pre
        else None
    )
    ev = court.evaluate(
        record.request,
        now=record.decided_at,
        approved=record.approved,
        hold_id=None,
        preflight_result=replayed,
        state_snapshot=record.state_snapshot or {},
    )
    same_stages = [dict(s) for s in ev.stages][:-1] == [s.model_dump(mode="json") for s in record.stages][:-1]
    shadow = ev.shadow_outcome.value if ev.shadow_outcome else None
    recorded_shadow = record.shadow_outcome.value if record.shadow_outcome else None
    match = (
        ev.outcome.value == record.outcome.value
        and list(ev.reason_codes) == list(record.reason_codes)
        and same_stages
        and shadow == recorded_shadow
    )
    _print(
        {
            "match": match,
            "recorded": {"outcome": record.outcome.value, "reason_codes": list(record.reason_codes)},
            "replayed": {"outcome": ev.outcome.value, "reason_codes": list(ev.reason_codes)},
            "stages_match": same_stages,
            "signature_valid": signature,
        }
    )
    return 0 if match and signature is not False else 1


def _record_signature_ok(decision: Any, keys: KeySet) -> bool:
    """Is the decision's record signed by a trusted, unrevoked key, and is its digest right?"""
    from ._b64 import b64url_decode
    from .canonical import digest_bytes, signing_input_bytes
    from .keys import KeyStatus

    key = keys.get(decision.record_kid)
    if key is None or key.status is KeyStatus.REVOKED:
        return False
    try:
        sig = b64url_decode(decision.record_signature)
    except ValueError:
        return False
    raw = decision.record.canonical_bytes()
    return digest_bytes(raw) == decision.record_digest and key.verify(signing_input_bytes("decision_record", raw), sig)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.dir, sys.stdout)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"execauth: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="execauth", description="Execution authority for AI agents.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    keys = sub.add_parser("keys", help="manage signing keys").add_subparsers(dest="sub", required=True)
    gen = keys.add_parser("generate", help="create an Ed25519 key (mode 0600) and its JWKS")
    gen.add_argument("--out", required=True, help="folder for authority.key and jwks.json")
    gen.set_defaults(fn=cmd_keys_generate)

    token = sub.add_parser("token", help="authority tokens").add_subparsers(dest="sub", required=True)
    ver = token.add_parser("verify", help="verify a token for a proposal (exit 0 valid, 1 invalid)")
    ver.add_argument("token", help="the compact JWS, '-' for stdin, or @FILE")
    ver.add_argument("--jwks", required=True, help="trusted keys (JWKS file)")
    ver.add_argument("--request", required=True, help="the AuthorizationRequest JSON being executed")
    ver.add_argument("--issuer", required=True)
    ver.add_argument("--audience", required=True)
    ver.add_argument("--now", type=int, default=None, help="verify as of this Unix time")
    ver.add_argument("--max-ttl", type=int, default=300)
    ver.add_argument("--skew", type=int, default=30)
    ver.set_defaults(fn=cmd_token_verify)
    ins = token.add_parser("inspect", help="show a token's claims WITHOUT verifying")
    ins.add_argument("token")
    ins.set_defaults(fn=cmd_token_inspect)

    audit = sub.add_parser("audit", help="the audit log").add_subparsers(dest="sub", required=True)
    av = audit.add_parser("verify", help="verify the hash chain (exit 0 ok, 1 broken)")
    where = av.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", help="SQLite database file")
    where.add_argument("--store", help="store URL of the log: sqlite:, redis://, postgresql:// (see docs/deploying.md)")
    av.add_argument("--checkpoint", help="a signed checkpoint file to check the log against")
    av.add_argument("--jwks", help="trusted keys for the checkpoint signature")
    av.set_defaults(fn=cmd_audit_verify)
    ac = audit.add_parser("checkpoint", help="sign the current head; keep the file elsewhere")
    where = ac.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", help="SQLite database file")
    where.add_argument("--store", help="store URL of the log: sqlite:, redis://, postgresql://")
    ac.add_argument("--key", required=True, help="private key file")
    ac.add_argument("--out", help="write the checkpoint here too")
    ac.set_defaults(fn=cmd_audit_checkpoint)

    pol = sub.add_parser("policy", help="policy files").add_subparsers(dest="sub", required=True)
    pc = pol.add_parser("check", help="validate a policy file and print its digest")
    pc.add_argument("file")
    pc.add_argument("--manifests", help="tool manifests file: also check the policy names known tools")
    pc.set_defaults(fn=cmd_policy_check)

    dec = sub.add_parser("decide", help="decide a proposal; prints the decision and why (exit 0 only on ALLOW)")
    dec.add_argument("--policy", required=True)
    dec.add_argument("--manifests", help="tool manifests (JSON or YAML list)")
    dec.add_argument("--request", required=True, help="AuthorizationRequest JSON, or '-'")
    dec.add_argument("--now", type=int, default=None, help="decide as of this Unix time")
    dec.add_argument("--state", help="JSON object of counters (budget/rate keys -> used) to decide against")
    dec.add_argument("--key", help="private key file: also issue a token on ALLOW")
    dec.add_argument("--issuer", default="execauth-local")
    dec.add_argument("--audience", default="execauth-guard")
    dec.add_argument("--out", help="write the full signed AuthorizationDecision JSON here")
    dec.set_defaults(fn=cmd_decide)

    rec = sub.add_parser("record", help="decision records").add_subparsers(dest="sub", required=True)
    rr = rec.add_parser("replay", help="re-run a recorded decision; exit 0 if it comes out the same")
    rr.add_argument("decision", help="an AuthorizationDecision (decide --out) or DecisionRecord JSON file")
    rr.add_argument("--policy", required=True)
    rr.add_argument("--manifests")
    rr.add_argument("--jwks", help="trusted keys: also check the decision record's signature")
    rr.set_defaults(fn=cmd_record_replay)

    demo = sub.add_parser("demo", help="run the quickstart on the SQLite default")
    demo.add_argument("--dir", default=".execauth-demo", help="data folder (default .execauth-demo)")
    demo.set_defaults(fn=cmd_demo)
    return p


def _serve(argv: list[str]) -> int:
    """``execauth serve``: handed over to the execauth-server distribution, if installed."""
    try:
        from execauth_server.cli import main as serve_main
    except ImportError:
        sys.stderr.write("execauth: error: 'serve' needs the execauth-server package: pip install ./packages/server\n")
        return 2
    return int(serve_main(argv))


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["serve"]:
        return _serve(list(given[1:]))
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except AuditIntegrityError as exc:
        _print({"ok": False, "first_bad_seq": exc.seq, "message": str(exc)})
        return 1
    except (UsageError, ExecAuthError, StoreUnavailable) as exc:
        sys.stderr.write(f"execauth: error: {exc}\n")
        return 2
    except UnicodeDecodeError as exc:
        sys.stderr.write(f"execauth: error: input is not UTF-8: {exc.reason}\n")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
