"""The ``execauth`` command line.

Exit codes: 0 success/valid, 1 invalid (a token or audit log that does not
verify, a demo that went wrong), 2 usage error (bad arguments, unreadable or
malformed files). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
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


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from .stores.sqlite import SQLiteAuditLog

    if not Path(args.db).is_file():
        raise UsageError(f"{args.db}: no such file")
    checkpoint = None
    if args.checkpoint:
        if not args.jwks:
            raise UsageError("--checkpoint needs --jwks to check its signature")
        checkpoint = Checkpoint.from_json(_json_file(args.checkpoint), KeySet.load(args.jwks))
    log = SQLiteAuditLog(args.db)
    try:
        seq, head = verify_chain(log.entries(), checkpoint=checkpoint, expected_head=log.head())
    except AuditIntegrityError as exc:
        _print({"ok": False, "first_bad_seq": exc.seq, "message": str(exc)})
        return 1
    _print({"ok": True, "records": seq, "head": head, "checkpoint_seq": checkpoint.seq if checkpoint else None})
    return 0


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    from .stores.sqlite import SQLiteAuditLog

    if not Path(args.db).is_file():
        raise UsageError(f"{args.db}: no such file")
    log = SQLiteAuditLog(args.db)
    verify_chain(log.entries(), expected_head=log.head())
    cp = Checkpoint.sign(log, LocalSigner.load(args.key), now=SystemClock().now())
    text = json.dumps(cp.to_json(), indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    return 0


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
    av.add_argument("--db", required=True, help="SQLite database file")
    av.add_argument("--checkpoint", help="a signed checkpoint file to check the log against")
    av.add_argument("--jwks", help="trusted keys for the checkpoint signature")
    av.set_defaults(fn=cmd_audit_verify)
    ac = audit.add_parser("checkpoint", help="sign the current head; keep the file elsewhere")
    ac.add_argument("--db", required=True)
    ac.add_argument("--key", required=True, help="private key file")
    ac.add_argument("--out", help="write the checkpoint here too")
    ac.set_defaults(fn=cmd_audit_checkpoint)

    demo = sub.add_parser("demo", help="run the quickstart on the SQLite default")
    demo.add_argument("--dir", default=".execauth-demo", help="data folder (default .execauth-demo)")
    demo.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
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
