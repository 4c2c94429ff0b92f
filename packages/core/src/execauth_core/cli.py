"""The ``execauth`` command line.

Exit codes: 0 success/valid, 1 invalid (a token or audit log that does not
verify, a demo that went wrong), 2 usage error (bad arguments, unreadable or
malformed files). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import base64
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
from .tlog import ProofError
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


def _problems(exc: pydantic.ValidationError) -> str:
    """Every validation error with its field path, on one line."""
    parts = []
    for err in exc.errors():
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".") or "(root)"
        parts.append(f"{path}: {err['msg']}")
    count = f"{len(parts)} problem{'s' if len(parts) != 1 else ''}"
    return " ".join(f"{count}: {'; '.join(parts)}".split())


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{path}: cannot create the folder: {exc.strerror or exc}") from None


def _print(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def cmd_keys_generate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    _mkdir(out)
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
    request = _request(args.request)
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
    parts = args.token.strip().split(".")
    if len(parts) != 3:
        raise UsageError(f"not a token: a compact JWS is three base64url parts separated by '.', this has {len(parts)}")
    try:
        claims = unverified_claims(args.token.strip())
    except TokenError as exc:
        raise UsageError(f"not a token: its claims do not decode ({exc.reason_code})") from None
    _print({"verified": False, "claims": claims})
    return 0


def cmd_audit_spool_status(args: argparse.Namespace) -> int:
    from .spool import Spool

    spool = Spool(args.spool)
    _print({"exists": spool.path.exists(), **spool.status().to_json()})
    return 0


def cmd_audit_spool_verify(args: argparse.Namespace) -> int:
    from .spool import Spool

    _print({"ok": True, "lines": Spool(args.spool).verify()})
    return 0


def cmd_audit_spool_flush(args: argparse.Namespace) -> int:
    from .spool import Spool

    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    spool = Spool(args.spool)
    log, opened = _audit_log(args)
    try:
        result = spool.flush(log, limit=args.limit)
    finally:
        opened.close()
    _print(result.to_json())
    return 0 if result.error is None else 1


def _add_spool_parsers(audit: Any) -> None:
    """``execauth audit spool status|flush`` (docs/audit-spool.md)."""
    sp = audit.add_parser("spool", help="records kept while the log was down").add_subparsers(
        dest="spool_sub", required=True
    )
    ss = sp.add_parser("status", help="pending records, bytes, age of the oldest (verifies the spool's chain)")
    ss.add_argument("--spool", required=True, help="the spool file (Guard.local: DATA_DIR/audit.spool)")
    ss.set_defaults(fn=cmd_audit_spool_status)
    sv = sp.add_parser("verify", help="verify the spool's whole hash chain (exit 0 ok, 1 broken)")
    sv.add_argument("--spool", required=True, help="the spool file (Guard.local: DATA_DIR/audit.spool)")
    sv.set_defaults(fn=cmd_audit_spool_verify)
    sf = sp.add_parser("flush", help="replay pending records into the log, in order, once (exit 1 if some remain)")
    sf.add_argument("--spool", required=True, help="the spool file (Guard.local: DATA_DIR/audit.spool)")
    where = sf.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", help="SQLite database file")
    where.add_argument("--store", help="store URL of the log: sqlite:, redis://, postgresql://")
    sf.add_argument("--limit", type=int, default=None, help="replay at most this many records")
    sf.set_defaults(fn=cmd_audit_spool_flush)


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


DEFAULT_ORIGIN = "execauth.local/audit"


def _load_checkpoint_file(path: str) -> tuple[str | None, bytes]:
    """A checkpoint file: a signed note (C2SP), or the older JSON checkpoint (its bytes)."""
    raw = _read(path)
    if raw.lstrip().startswith(b"{"):
        return None, raw
    return raw.decode("utf-8"), b""


def _progress_bar(enabled: bool) -> Any:
    if not (enabled or sys.stderr.isatty()):
        return None

    def show(done: int, total: int) -> None:
        width = 30
        filled = width if total <= 0 else min(width, width * done // total)
        sys.stderr.write(f"\rverifying [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from .tlog_verify import verify_log

    legacy = None
    notes: list[str] = []
    keys = KeySet.load(args.jwks) if args.jwks else None
    for path in args.checkpoint or []:
        if keys is None:
            raise UsageError("--checkpoint needs --jwks to check its signature")
        note, raw = _load_checkpoint_file(path)
        if note is not None:
            notes.append(note)
            continue
        try:
            legacy = Checkpoint.from_json(loads_strict(raw), keys)
        except CanonicalizationError as exc:
            raise UsageError(f"{path}: {exc}") from None
    log, opened = _audit_log(args)
    try:
        report = verify_log(
            log,
            keys=keys,
            origin=args.origin,
            checkpoints=notes,
            legacy_checkpoint=legacy,
            now=SystemClock().now(),
            max_unsigned=args.max_unsigned,
            max_age=args.max_age,
            progress=_progress_bar(args.progress),
        )
    finally:
        opened.close()
    _print(report.to_json())
    return 0 if report.ok else 1


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    from .tlog import EMPTY_ROOT
    from .tlog_checkpoint import sign_checkpoint
    from .tlog_verify import verify_log

    signer = LocalSigner.load(args.key)
    keys = KeySet.load(args.jwks) if args.jwks else KeySet.of_signer(signer)
    log, opened = _audit_log(args)
    try:
        # Only what verifies is vouched for: the whole log, against the store's
        # earlier checkpoints too, and the root recomputed from the entries.
        report = verify_log(log, keys=keys, origin=args.origin)
        if not report.ok:
            _print(report.to_json())
            return 1
        root = base64.b64decode(report.tree_root) if report.tree_root else EMPTY_ROOT
        now = SystemClock().now()
        cp = sign_checkpoint(args.origin, report.records, root, signer, now=now)
        log.add_checkpoint(cp.note, cp.size)
    finally:
        opened.close()
    if args.out:
        Path(args.out).write_text(cp.note, encoding="utf-8")
    _print({**cp.to_json(), "seq": cp.size, "note": cp.note})
    return 0


def _newest_note(log: Any, args: argparse.Namespace, keys: KeySet) -> Any:
    from .tlog_checkpoint import open_checkpoint

    if args.checkpoint:
        return open_checkpoint(_read(args.checkpoint), keys, origin=args.origin)
    notes = log.checkpoints()
    if not notes:
        raise UsageError("the log holds no checkpoint: run 'execauth audit checkpoint' first, or pass --checkpoint")
    return open_checkpoint(notes[-1], keys, origin=args.origin)


def _b64s(items: Any) -> list[str]:
    return [base64.b64encode(h).decode() for h in items]


def cmd_audit_proof(args: argparse.Namespace) -> int:
    from .audit import canonical_body
    from .tlog import leaf_hash

    log, opened = _audit_log(args)
    try:
        size = args.size if args.size is not None else log.tree_head()[0]
        entry = next(iter(log.entries(args.seq)), None)
        if entry is None or entry.seq != args.seq or args.seq > size or args.seq < 1:
            raise UsageError(f"no entry {args.seq} in a tree of size {size}")
        proof = log.inclusion_proof(args.seq - 1, size)
        root = log.root_at(size)
        leaf = leaf_hash(canonical_body(entry.body))
    finally:
        opened.close()
    _print(
        {
            "seq": args.seq,
            "leaf_index": args.seq - 1,
            "size": size,
            "root": base64.b64encode(root).decode(),
            "leaf_hash": base64.b64encode(leaf).decode(),
            "proof": _b64s(proof),
        }
    )
    return 0


def cmd_audit_consistency(args: argparse.Namespace) -> int:
    log, opened = _audit_log(args)
    try:
        size = args.to if args.to is not None else log.tree_head()[0]
        if not 0 <= args.old <= size:
            raise UsageError(f"no consistency proof from size {args.old} to {size}")
        proof = log.consistency_proof(args.old, size)
        out = {
            "from": args.old,
            "to": size,
            "from_root": base64.b64encode(log.root_at(args.old)).decode(),
            "to_root": base64.b64encode(log.root_at(size)).decode(),
            "proof": _b64s(proof),
        }
    finally:
        opened.close()
    _print(out)
    return 0


def cmd_audit_export(args: argparse.Namespace) -> int:
    from .tlog_verify import export_bundle

    keys = KeySet.load(args.jwks)
    log, opened = _audit_log(args)
    try:
        cp = _newest_note(log, args, keys)
        try:
            lines = list(export_bundle(log, cp.note, keys, first=args.first, last=args.last))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    finally:
        opened.close()
    text = "".join(line + "\n" for line in lines)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        _print({"ok": True, "entries": len(lines) - 1, "size": cp.size, "out": args.out})
    else:
        sys.stdout.write(text)
    return 0


def cmd_audit_verify_bundle(args: argparse.Namespace) -> int:
    from .tlog_verify import verify_bundle

    raw = _read(args.bundle)
    report = verify_bundle(raw.splitlines(), KeySet.load(args.jwks), origin=args.origin)
    _print(report.to_json())
    return 0 if report.ok else 1


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
    except CanonicalizationError as exc:
        raise UsageError(f"{path}: not an AuthorizationRequest: {exc}") from None
    except pydantic.ValidationError as exc:
        raise UsageError(f"{path}: not an AuthorizationRequest: {_problems(exc)}") from None


def _all_policy_problems(path: str) -> None:
    """Raise a UsageError naming every problem of a policy file the model finds (with
    paths), where load_policy would name only the first."""
    from .policyfile import PolicyDocument, _load_yaml

    raw = _read(path)
    try:
        data = loads_strict(raw) if path.endswith(".json") else _load_yaml(raw)
    except (CanonicalizationError, ValueError):
        return  # load_policy says what is wrong with the syntax
    if not isinstance(data, dict) or not data:
        return
    try:
        PolicyDocument.model_validate(data)
    except pydantic.ValidationError as exc:
        raise UsageError(f"{path}: policy invalid: {_problems(exc)}") from None


def cmd_policy_check(args: argparse.Namespace) -> int:
    from .manifest import load_registry
    from .policyfile import load_policy

    _all_policy_problems(args.file)
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
    except CanonicalizationError as exc:
        raise UsageError(f"{args.decision}: not a decision or decision record: {exc}") from None
    except pydantic.ValidationError as exc:
        raise UsageError(f"{args.decision}: not a decision or decision record: {_problems(exc)}") from None
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

    _mkdir(Path(args.dir))
    return run_demo(args.dir, sys.stdout)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"execauth: error: {message}\n")


def _where(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", help="SQLite database file")
    where.add_argument("--store", help="store URL of the log: sqlite:, redis://, postgresql:// (see docs/deploying.md)")
    parser.add_argument(
        "--origin", default=DEFAULT_ORIGIN, help=f"the log's checkpoint origin (default {DEFAULT_ORIGIN})"
    )


def build_parser() -> argparse.ArgumentParser:
    from ._version import __version__

    p = _Parser(
        prog="execauth",
        description="Execution authority for AI agents.",
        epilog=(
            "also: 'execauth serve' (the authority service, execauth-server), "
            "'execauth approvals' (the approval queue), 'execauth receipt' (execution receipts), "
            "'execauth ledger' (the effect ledger), "
            "'execauth delegate' and 'execauth delegation verify' (delegation chains) and 'execauth mcp-proxy' "
            "(the MCP gating proxy, execauth-mcp); each has its own --help"
        ),
    )
    p.add_argument("--version", action="version", version=f"execauth {__version__}")
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
    ver.add_argument("--issuer", required=True, help="the issuer the token must name (iss)")
    ver.add_argument("--audience", required=True, help="the audience the token must name (aud)")
    ver.add_argument("--now", type=int, default=None, help="verify as of this Unix time")
    ver.add_argument("--max-ttl", type=int, default=300, help="longest accepted exp - iat, seconds (default 300)")
    ver.add_argument("--skew", type=int, default=30, help="allowed clock difference, seconds (default 30)")
    ver.set_defaults(fn=cmd_token_verify)
    ins = token.add_parser("inspect", help="show a token's claims WITHOUT verifying")
    ins.add_argument("token", help="the compact JWS to decode")
    ins.set_defaults(fn=cmd_token_inspect)

    audit = sub.add_parser("audit", help="the audit log").add_subparsers(dest="sub", required=True)
    av = audit.add_parser("verify", help="verify the log: chain, Merkle tree, signed checkpoints (exit 0 ok, 1 broken)")
    _where(av)
    av.add_argument(
        "--checkpoint", action="append", help="a signed checkpoint file kept outside the store (repeatable)"
    )
    av.add_argument("--jwks", help="trusted keys for checkpoint signatures")
    av.add_argument("--max-unsigned", type=int, help="fail when more records than this follow the newest checkpoint")
    av.add_argument("--max-age", type=int, help="fail when the newest checkpoint is older than this (seconds)")
    av.add_argument("--progress", action="store_true", help="show a progress bar on stderr even when not a tty")
    av.set_defaults(fn=cmd_audit_verify)
    ac = audit.add_parser("checkpoint", help="verify the log, then sign its Merkle tree head (C2SP checkpoint)")
    _where(ac)
    ac.add_argument("--key", required=True, help="private key file")
    ac.add_argument("--jwks", help="trusted keys for the log's earlier checkpoints (default: the key's own)")
    ac.add_argument("--out", help="write the checkpoint note here too; keep a copy outside the store")
    ac.set_defaults(fn=cmd_audit_checkpoint)
    ap = audit.add_parser("proof", help="inclusion proof of entry SEQ in the tree of SIZE (default: now)")
    _where(ap)
    ap.add_argument("--seq", type=int, required=True, help="sequence number of the entry (1-based)")
    ap.add_argument("--size", type=int, help="tree size the proof is for (default: the current size)")
    ap.set_defaults(fn=cmd_audit_proof)
    acs = audit.add_parser("consistency", help="consistency proof from tree size FROM to TO (default: now)")
    _where(acs)
    acs.add_argument("--from", dest="old", type=int, required=True, help="the older tree size")
    acs.add_argument("--to", type=int, help="the newer tree size (default: the current size)")
    acs.set_defaults(fn=cmd_audit_consistency)
    ae = audit.add_parser("export", help="JSON Lines bundle: a checkpoint and each entry with its inclusion proof")
    _where(ae)
    ae.add_argument("--jwks", required=True, help="trusted keys of the checkpoint")
    ae.add_argument("--checkpoint", help="checkpoint note file (default: the newest the store holds)")
    ae.add_argument("--first", type=int, default=1, help="first entry (seq) to export (default: 1)")
    ae.add_argument("--last", type=int, help="last entry (seq) to export (default: the checkpoint's size)")
    ae.add_argument("--out", help="bundle file (default: stdout)")
    ae.set_defaults(fn=cmd_audit_export)
    ab = audit.add_parser("verify-bundle", help="verify an exported bundle offline with the public keys alone")
    ab.add_argument("bundle", help="bundle file, or '-'")
    ab.add_argument("--jwks", required=True, help="trusted public keys (JWKS) of the checkpoint signer")
    ab.add_argument("--origin", help="the log the checkpoint must be of")
    ab.set_defaults(fn=cmd_audit_verify_bundle)

    pol = sub.add_parser("policy", help="policy files").add_subparsers(dest="sub", required=True)
    pc = pol.add_parser("check", help="validate a policy file and print its digest")
    pc.add_argument("file", help="the policy file (YAML, or JSON when it ends in .json)")
    pc.add_argument("--manifests", help="tool manifests file: also check the policy names known tools")
    pc.set_defaults(fn=cmd_policy_check)

    dec = sub.add_parser("decide", help="decide a proposal; prints the decision and why (exit 0 only on ALLOW)")
    dec.add_argument("--policy", required=True, help="the policy file (YAML or JSON)")
    dec.add_argument("--manifests", help="tool manifests (JSON or YAML list)")
    dec.add_argument("--request", required=True, help="AuthorizationRequest JSON, or '-'")
    dec.add_argument("--now", type=int, default=None, help="decide as of this Unix time")
    dec.add_argument("--state", help="JSON object of counters (budget/rate keys -> used) to decide against")
    dec.add_argument("--key", help="private key file: also issue a token on ALLOW")
    dec.add_argument("--issuer", default="execauth-local", help="iss of the token (default execauth-local)")
    dec.add_argument("--audience", default="execauth-guard", help="aud of the token (default execauth-guard)")
    dec.add_argument("--out", help="write the full signed AuthorizationDecision JSON here")
    dec.set_defaults(fn=cmd_decide)

    rec = sub.add_parser("record", help="decision records").add_subparsers(dest="sub", required=True)
    rr = rec.add_parser("replay", help="re-run a recorded decision; exit 0 if it comes out the same")
    rr.add_argument("decision", help="an AuthorizationDecision (decide --out) or DecisionRecord JSON file")
    rr.add_argument("--policy", required=True, help="the policy file the decision was made under")
    rr.add_argument("--manifests", help="tool manifests (JSON or YAML list) the decision was made with")
    rr.add_argument("--jwks", help="trusted keys: also check the decision record's signature")
    rr.set_defaults(fn=cmd_record_replay)

    demo = sub.add_parser("demo", help="run the quickstart on the SQLite default")
    demo.add_argument("--dir", default=".execauth-demo", help="data folder (default .execauth-demo)")
    demo.set_defaults(fn=cmd_demo)
    _add_spool_parsers(audit)
    return p


def _serve(argv: list[str]) -> int:
    """``execauth serve``: handed over to the execauth-server distribution, if installed."""
    try:
        from execauth_server.cli import main as serve_main
    except ImportError:
        sys.stderr.write("execauth: error: 'serve' needs the execauth-server package: pip install ./packages/server\n")
        return 2
    return int(serve_main(argv))


def _mcp_proxy(argv: list[str]) -> int:
    """``execauth mcp-proxy ...`` is served by the execauth-mcp distribution when installed."""
    try:
        from execauth_mcp.cli import main as mcp_main
    except ImportError:
        sys.stderr.write("execauth: error: mcp-proxy needs the execauth-mcp package: pip install execauth-mcp\n")
        return 2
    return mcp_main(argv, prog="execauth mcp-proxy")


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    if raw[:1] == ["mcp-proxy"]:
        return _mcp_proxy(list(raw[1:]))
    if raw[:1] == ["serve"]:
        return _serve(list(raw[1:]))
    if raw[:1] == ["receipt"]:
        from .receipts_cli import main as receipt_main

        return receipt_main(list(raw[1:]))
    if raw[:1] in (["delegate"], ["delegation"]):
        from .delegation_cli import main as delegation_main

        return delegation_main(list(raw))
    if raw[:1] == ["approvals"]:
        from .approvals_cli import main as approvals_main

        return approvals_main(list(raw[1:]))
    if raw[:1] == ["ledger"]:
        from .ledger_cli import main as ledger_main

        return ledger_main(list(raw[1:]))
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except AuditIntegrityError as exc:
        _print({"ok": False, "first_bad_seq": exc.seq, "message": str(exc)})
        return 1
    except ProofError as exc:
        sys.stderr.write(f"execauth: error: {exc}\n")
        return 2
    except (UsageError, ExecAuthError, StoreUnavailable) as exc:
        sys.stderr.write(f"execauth: error: {exc}\n")
        return 2
    except UnicodeDecodeError as exc:
        sys.stderr.write(f"execauth: error: input is not UTF-8: {exc.reason}\n")
        return 2
    except OSError as exc:  # a file or folder we could not use: say which, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(f"execauth: error: {where}{exc.strerror or exc}\n")
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
