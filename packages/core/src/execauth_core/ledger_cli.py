"""``execauth ledger list|show|resolve``: the effect ledger from a shell.

Against a local store: the ``--data-dir`` of ``Guard.local``, a SQLite ``--db FILE`` or
a ``--store URL`` (``sqlite:``, ``redis://``, ``postgresql://``). A resolution names who
made it (``--by``) and is recorded in the audit log of the same store.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from .errors import ConfigurationError, ExecAuthError, StoreUnavailable
from .ledger import STATES, Ledger, open_ledger

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"execauth: error: {message}\n")


class _Failed(Exception):
    pass


def _where(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where the ledger is")
    g.add_argument("--data-dir", help="a Guard.local data_dir (its execauth.db)")
    g.add_argument("--db", help="SQLite database file holding the ledger and the audit log")
    g.add_argument("--store", help="store URL holding the ledger and the audit log: sqlite:, redis://, postgresql://")
    g.add_argument("--lease", type=int, default=300, help="seconds after which a started entry is unknown (300)")


def build_parser(prog: str = "execauth ledger") -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description="List, show and reconcile entries of the effect ledger.")
    sub = p.add_subparsers(dest="action", required=True, parser_class=_Parser)
    ls = sub.add_parser("list", help="entries, newest first")
    pick = ls.add_mutually_exclusive_group()
    pick.add_argument("--unknown", action="store_true", help="only entries whose outcome is unknown (to reconcile)")
    pick.add_argument("--state", choices=STATES, help="only entries in this state")
    ls.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _where(ls)
    show = sub.add_parser("show", help="one entry: state, token, times, outcome, result digest")
    show.add_argument("key", help="the idempotency key")
    _where(show)
    res = sub.add_parser("resolve", help="reconcile an unknown (or failed) entry; recorded in the audit log")
    res.add_argument("key", help="the idempotency key")
    how = res.add_mutually_exclusive_group(required=True)
    how.add_argument("--succeeded", action="store_true", help="the effect happened")
    how.add_argument("--failed", action="store_true", help="the effect did not happen")
    res.add_argument("--note", help="why (what you checked), recorded with the resolution")
    res.add_argument("--by", help="who resolves (default: the login name)")
    _where(res)
    return p


def _open(args: argparse.Namespace) -> Ledger:
    from .stores.urls import open_stores

    chosen = [x for x in (args.data_dir, args.db, args.store) if x]
    if len(chosen) != 1:
        raise _Failed("name the ledger: one of --data-dir, --db, --store")
    if args.data_dir:
        db = Path(args.data_dir) / "execauth.db"
        if not db.is_file():
            raise _Failed(f"{db} does not exist (is {args.data_dir} a Guard.local data_dir?)")
        url = f"sqlite:{db.resolve()}"
    elif args.db:
        if not Path(args.db).is_file():
            raise _Failed(f"{args.db} does not exist")
        url = f"sqlite:{Path(args.db).resolve()}"
    else:
        url = args.store
    return Ledger(open_ledger(url), lease=args.lease, audit_log=open_stores(url).audit)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no ledger entries"
    head = ("KEY", "STATE", "TOOL", "CALL", "TOKEN", "STARTED", "FINISHED", "STATUS")
    lines = [head] + [
        (
            r["key"],
            r["state"],
            r.get("tool") or "-",
            r.get("call_id") or "-",
            r.get("token_id") or "-",
            str(r.get("started_at") or "-"),
            str(r.get("finished_at") or "-"),
            (r.get("status") or "-") + (f" by {r['resolved_by']}" if r.get("resolved_by") else ""),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def _run(args: argparse.Namespace) -> int:
    led = _open(args)
    try:
        now = led.clock.now()
        if args.action == "list":
            state = "unknown" if args.unknown else args.state
            rows = [e.summary(now) for e in led.list(state, limit=args.limit)]
            print(json.dumps(rows, indent=2, sort_keys=True) if args.json else _table(rows))  # noqa: TID251 - output for people
            return 0
        if args.action == "show":
            entry = led.get(args.key)
            if entry is None:
                raise _Failed(f"no ledger entry {args.key[:80]!r}")
            print(json.dumps(entry.summary(now), indent=2, sort_keys=True))  # noqa: TID251 - output for people
            return 0
        by = args.by or getpass.getuser()
        try:
            done = led.resolve(args.key, succeeded=bool(args.succeeded), by=by, note=args.note)
        except KeyError:
            raise _Failed(f"no ledger entry {args.key[:80]!r}") from None
        print(json.dumps(done.summary(now), indent=2, sort_keys=True))  # noqa: TID251 - output for people
        return 0
    finally:
        led.store.close()
        close = getattr(led.audit_log, "close", None)
        if close is not None:
            close()


def main(argv: list[str] | None = None, *, prog: str = "execauth ledger") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        return _run(args)
    except _Failed as exc:
        sys.stderr.write(f"execauth: error: {exc}\n")
        return 2
    except (ConfigurationError, ExecAuthError, StoreUnavailable) as exc:
        sys.stderr.write(f"execauth: error: {exc}\n")
        return 2
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(f"execauth: error: {where}{exc.strerror or exc}\n")
        return 2
