"""``execauth mcp-proxy`` / ``execauth-mcp-proxy``: the gating proxy on stdio."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import NoReturn


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"execauth: error: {message}\n")


def build_parser(prog: str = "execauth-mcp-proxy") -> argparse.ArgumentParser:
    p = _Parser(
        prog=prog,
        description="Serve an MCP server through execauth: every tools/call is decided before it reaches the upstream.",
    )
    p.add_argument("--config", required=True, help="proxy configuration (YAML or JSON)")
    p.add_argument("--url", help="a streamable-HTTP upstream (instead of a command after --)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- the upstream server command (stdio)")
    return p


def main(argv: list[str] | None = None, *, prog: str = "execauth-mcp-proxy") -> int:
    args = build_parser(prog).parse_args(argv)
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if bool(command) == bool(args.url):
        sys.stderr.write("execauth: error: give the upstream as '-- <command...>' or as --url URL (one of them)\n")
        return 2
    # Logs go to stderr: stdout is the MCP channel.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    import anyio

    from execauth_core import ExecAuthError

    from .config import load_config
    from .front import serve_stdio

    try:
        config = load_config(args.config)
        if config.data_dir is None:
            sys.stderr.write("execauth-mcp: no data_dir in the config: the audit log is kept in memory only\n")
        anyio.run(lambda: serve_stdio(config, command=command or None, url=args.url))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for the person, never a traceback
        leaf = _leaf(exc)
        if isinstance(leaf, (ExecAuthError, NotImplementedError)):
            message = str(leaf)
        elif isinstance(leaf, OSError):
            message = f"cannot start the upstream: {leaf.strerror or leaf}"
        else:
            message = f"the proxy stopped: {type(leaf).__name__}: {str(leaf)[:200]}"
        sys.stderr.write(f"execauth: error: {message}\n")
        return 2
    return 0


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups."""
    while True:
        inner = getattr(exc, "exceptions", None)
        if not inner:
            return exc
        exc = inner[0]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
