"""``execauth approvals list|show|approve|reject``: the approval queue from a shell.

Against a server (``--url`` and ``--credential-file`` holding an approver's secret;
needs the ``remote`` extra, httpx) or against a local store (``--data-dir`` of
``Guard.local``, ``--db FILE`` or ``--store URL``; approving locally signs with the
authority key, ``--key``).

With ``--url``, ``--key FILE`` is instead *your* approver key: ``approve`` / ``reject``
fetch the request, check that its digest is the digest of the proposal shown, and sign
the decision statement (:mod:`execauth_core.approver_keys`) before sending it.
``execauth approvals keygen --out FILE`` makes such a key.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from .approvals import STATES, ApprovalError, Approvals, open_approvals
from .errors import ConfigurationError, ExecAuthError, StoreUnavailable

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"execauth: error: {message}\n")


class _Failed(Exception):
    exit_code = 2


class _Refused(_Failed):
    """The server refused the decision itself (already decided, expired): exit 1."""

    exit_code = 1


def _common(p: argparse.ArgumentParser) -> None:
    where = p.add_argument_group("where the queue is (a server, or a local store)")
    where.add_argument("--url", help="base URL of the execauth server, e.g. http://127.0.0.1:8787")
    where.add_argument("--credential-file", help="file holding an approver's secret (for --url)")
    where.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server (default 10)")
    where.add_argument("--data-dir", help="a Guard.local data_dir: its execauth.db and authority.key")
    where.add_argument("--db", help="SQLite database file holding the queue and the audit log")
    where.add_argument(
        "--store", help="store URL holding the queue and the audit log: sqlite:, redis://, postgresql://"
    )
    where.add_argument(
        "--key",
        help="with --url: your approver key file (signs your decision); locally: the authority signing key "
        "for approving (default DATA_DIR/authority.key)",
    )
    where.add_argument(
        "--approver", help="your name, recorded with a local decision (a server takes it from --url's credential)"
    )


def build_parser(prog: str = "execauth approvals") -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description="List, show, approve and reject approval requests.")
    sub = p.add_subparsers(dest="action", required=True, parser_class=_Parser)
    ls = sub.add_parser("list", help="requests, newest first")
    ls.add_argument(
        "--state", choices=STATES, help="only requests in this state (pending, approved, rejected, expired)"
    )
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _common(ls)
    show = sub.add_parser("show", help="one request: the exact proposal, its digest, state and grant")
    show.add_argument("request_id", help="the request id (apr_...)")
    _common(show)
    for verb, text in (
        ("approve", "approve a pending request (the authority signs the grant)"),
        ("reject", "reject a pending request"),
    ):
        d = sub.add_parser(verb, help=text)
        d.add_argument("request_id", help="the request id (apr_...)")
        d.add_argument("--comment", help="why, recorded with the decision")
        _common(d)
    kg = sub.add_parser("keygen", help="create an approver's Ed25519 key; prints the public key for the server config")
    kg.add_argument("--out", required=True, help="private key file to create (mode 0600, never overwritten)")
    return p


# -- server ----------------------------------------------------------------------


def _remote(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    try:
        import httpx
    except ImportError:
        raise _Failed("--url needs httpx: pip install 'execauth-core[remote]'") from None
    if not args.credential_file:
        raise _Failed("--url needs --credential-file (a file holding an approver's secret)")
    try:
        secret = Path(args.credential_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise _Failed(f"{args.credential_file}: {exc.strerror}") from None
    if not secret:
        raise _Failed(f"{args.credential_file} is empty")
    url = args.url.rstrip("/") + path
    try:
        r = httpx.request(method, url, json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=args.timeout)
    except httpx.HTTPError as exc:
        raise _Failed(f"cannot reach {args.url}: {type(exc).__name__}") from None
    try:
        data = r.json()
    except ValueError:
        raise _Failed(f"{args.url} answered HTTP {r.status_code} without JSON") from None
    if r.status_code != 200:
        code = data.get("reason_code", "?") if isinstance(data, dict) else "?"
        message = data.get("message", "") if isinstance(data, dict) else ""
        raise (_Refused if r.status_code in (404, 409) else _Failed)(f"HTTP {r.status_code} {code}: {message}")
    return data


# -- local -----------------------------------------------------------------------


def _local(args: argparse.Namespace) -> Approvals:
    from .stores.urls import open_stores

    chosen = [x for x in (args.data_dir, args.db, args.store) if x]
    if len(chosen) != 1:
        raise _Failed("name the queue: --url URL, or one of --data-dir, --db, --store")
    if args.data_dir:
        url = f"sqlite:{(Path(args.data_dir) / 'execauth.db').resolve()}"
        key = args.key or str(Path(args.data_dir) / "authority.key")
    else:
        url = f"sqlite:{Path(args.db).resolve()}" if args.db else args.store
        key = args.key
    authority = None
    if getattr(args, "action", None) == "approve":
        if not key:
            raise _Failed("approving locally signs with the authority key: give --key (or --data-dir)")
        from .authority import Authority
        from .keys import LocalSigner
        from .policy import AllowListPolicy

        # Only the signer is used: it signs the grant over the proposal's digest.
        authority = Authority(
            AllowListPolicy(()), LocalSigner.load(key), issuer="execauth-cli", audience="execauth-cli"
        )
    return Approvals(open_approvals(url), open_stores(url).audit, authority=authority)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no approval requests"
    head = ("ID", "STATE", "TOOL", "PRINCIPAL", "AGENT", "CREATED", "EXPIRES", "DECIDED BY")
    lines = [head] + [
        (
            r["id"],
            r["state"] + (" (used)" if r.get("consumed") else ""),
            r["tool"],
            r["principal"],
            r.get("agent") or "-",
            str(r["created_at"]),
            str(r["expires_at"]),
            r.get("decided_by") or "-",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def _signed(args: argparse.Namespace) -> dict[str, Any]:
    """Sign the decision on the request as the server shows it, after checking that its
    digest is the digest of its proposal (the statement binds what was shown)."""
    import time

    from .approver_keys import decision_statement, sign_decision
    from .keys import LocalSigner
    from .messages import AuthorizationRequest

    if not args.approver:
        raise _Failed("signing a decision names you: give --approver NAME (your name in the server's approvers)")
    signer = LocalSigner.load(args.key)
    shown = _remote(args, "GET", f"/v1/approvals/{args.request_id}")
    try:
        digest = AuthorizationRequest.model_validate(shown["proposal"]).content_digest()
    except (KeyError, TypeError, ValueError):
        raise _Failed("the server's answer holds no valid proposal; nothing signed") from None
    if digest != shown.get("proposal_digest") or shown.get("id") != args.request_id:
        raise _Failed("the server's request does not match its own proposal digest; nothing signed")
    statement = decision_statement(
        request_id=args.request_id,
        proposal_digest=digest,
        decision=args.action,
        approver=args.approver,
        at=int(time.time()),
    )
    return sign_decision(signer, statement).model_dump(mode="json")


def _keygen(args: argparse.Namespace) -> int:
    from .approver_keys import generate_approver_key, public_key_text

    signer = generate_approver_key(args.out)
    data = {"private_key": str(args.out), "public_key": public_key_text(signer.public_key), "kid": signer.kid}
    print(json.dumps(data, indent=2, sort_keys=True))  # noqa: TID251 - output for people
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.action == "keygen":
        return _keygen(args)
    if args.url:
        if any((args.data_dir, args.db, args.store)):
            raise _Failed("give either --url or a local store, not both")
        if args.action == "list":
            query = f"?state={args.state}" if args.state else ""
            data = _remote(args, "GET", f"/v1/approvals{query}")["approvals"]
        elif args.action == "show":
            data = _remote(args, "GET", f"/v1/approvals/{args.request_id}")
        else:
            body: dict[str, Any] = {"comment": args.comment} if args.comment else {}
            if args.key:
                body["approver_signature"] = _signed(args)
            data = _remote(args, "POST", f"/v1/approvals/{args.request_id}/{args.action}", body)
    else:
        queue = _local(args)
        try:
            if args.action == "list":
                data = [r.summary() for r in queue.list(args.state)]
            elif args.action == "show":
                data = queue.get(args.request_id).summary()
            else:
                if not args.approver:
                    raise _Failed("a local decision records who made it: give --approver NAME")
                act = queue.approve if args.action == "approve" else queue.reject
                data = act(args.request_id, approver=args.approver, comment=args.comment).summary()
        finally:
            queue.store.close()
    if args.action == "list" and not args.json:
        print(_table(data))
    else:
        print(json.dumps(data, indent=2, sort_keys=True))  # noqa: TID251 - output for people
    return 0


def main(argv: list[str] | None = None, *, prog: str = "execauth approvals") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        return _run(args)
    except ApprovalError as exc:
        sys.stderr.write(f"execauth: error: {exc}\n")
        return 1
    except _Failed as exc:
        sys.stderr.write(f"execauth: error: {exc}\n")
        return exc.exit_code
    except (ConfigurationError, ExecAuthError, StoreUnavailable) as exc:
        sys.stderr.write(f"execauth: error: {exc}\n")
        return 2
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(f"execauth: error: {where}{exc.strerror or exc}\n")
        return 2
