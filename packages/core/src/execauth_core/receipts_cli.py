"""``execauth receipt verify FILE --jwks FILE``: check an execution receipt offline.

Exit 0 when the receipt verifies against the trusted keys (and, with ``--result``,
names that result's digest); 1 when it does not (the reason code is printed);
2 for a usage error or a file that cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

from .canonical import CanonicalizationError, loads_strict
from .errors import ConfigurationError, ExecAuthError
from .keys import KeySet
from .receipts import ReceiptError, verify_receipt

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"execauth: error: {message}\n")


def build_parser(prog: str = "execauth receipt") -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description="Execution receipts (execauth.receipt/1).")
    sub = p.add_subparsers(dest="action", required=True, parser_class=_Parser)
    ver = sub.add_parser("verify", help="verify a receipt's signature with the JWKS (exit 0 valid, 1 invalid)")
    ver.add_argument("receipt", help="the receipt JSON file ('-' for stdin)")
    ver.add_argument("--jwks", required=True, help="trusted keys (JWKS file); never a key the receipt carries")
    ver.add_argument("--result", help="a JSON file holding the result: the receipt must name its digest")
    return p


def _read(path: str) -> bytes:
    return sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()


def _out(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")  # noqa: TID251 - output for people


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        keys = KeySet.load(args.jwks)
        raw = _read(args.receipt)
        result: object = ...
        if args.result:
            result = loads_strict(_read(args.result))
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(f"execauth: error: {where}{exc.strerror or exc}\n")
        return 2
    except (ConfigurationError, CanonicalizationError, ExecAuthError) as exc:
        sys.stderr.write(f"execauth: error: {exc}\n")
        return 2
    try:
        receipt = verify_receipt(raw, keys) if result is ... else verify_receipt(raw, keys, result=result)
    except ReceiptError as exc:
        _out({"valid": False, "reason_code": exc.reason_code, "message": exc.message})
        return 1
    _out(
        {
            "valid": True,
            "kid": receipt.kid,
            "token_id": receipt.token_id,
            "tool": receipt.tool,
            "status": receipt.status,
            "result_digest": receipt.result_digest,
        }
    )
    return 0
