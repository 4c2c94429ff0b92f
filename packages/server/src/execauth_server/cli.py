"""``execauth serve``: run the authority service (reached through the core ``execauth`` command).

Errors are one ``execauth: error: ...`` line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import NoReturn

from execauth_core.errors import ExecAuthError

from .config import DEFAULT_DATA_DIR, ServerConfig, hash_secret, load_config, new_secret, parse_config


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"execauth: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="execauth serve", description="Run the execauth authority as an HTTP service.")
    p.add_argument("--config", help="the server's YAML/JSON config file (default: none, loopback defaults)")
    p.add_argument("--host", help="interface to listen on (overrides the config; default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (overrides the config; default 8787)")
    p.add_argument("--workers", type=int, help="uvicorn worker processes (overrides the config; default 1)")
    p.add_argument("--data-dir", help=f"data folder when there is no config file (default ./{DEFAULT_DATA_DIR})")
    p.add_argument("--add-caller", metavar="NAME", help="add a caller to --config, print its secret once, and exit")
    p.add_argument("--principal", action="append", default=[], help="with --add-caller: a principal it may act for")
    p.add_argument("--agent", action="append", default=[], help="with --add-caller: an agent it may act for")
    p.add_argument(
        "--hash-password",
        action="store_true",
        help="read an approver's console password (prompt, or stdin when piped), print its argon2 hash, and exit",
    )
    return p


def hash_password_command() -> int:
    """Print the ``password_argon2`` value for a password read from the terminal
    (asked twice) or from stdin (one line); never from the command line."""
    from .console import hash_password

    if sys.stdin.isatty():
        import getpass

        first = getpass.getpass("console password: ")
        if getpass.getpass("again: ") != first:
            raise ExecAuthError("the two passwords differ")
        password = first
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        raise ExecAuthError("a console password has at least 8 characters")
    sys.stdout.write(hash_password(password) + "\n")
    return 0


def add_caller(config_file: str, name: str, principals: list[str], agents: list[str]) -> int:
    """Append a caller to the config file; only the secret's hash is written."""
    from .config import read_document

    path = Path(config_file)
    doc = read_document(path) if path.exists() else {}
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ExecAuthError(f"{path}: the config file must hold a mapping")
    if not principals:
        raise ExecAuthError("--add-caller needs at least one --principal")
    callers = list(doc.get("callers") or [])
    if any(isinstance(c, dict) and c.get("name") == name for c in callers):
        raise ExecAuthError(f"{path}: a caller named {name!r} already exists")
    secret = new_secret()
    callers.append({"name": name, "secret_sha256": hash_secret(secret), "principals": principals, "agents": agents})
    doc["callers"] = callers
    parse_config(doc, base=path.resolve().parent)  # refuse to write a config that would not load
    if path.suffix == ".json":
        text = json.dumps(doc, indent=2) + "\n"  # noqa: TID251 - a config file for people to read
    else:
        import yaml

        text = yaml.safe_dump(doc, sort_keys=False)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    sys.stdout.write(f"caller {name!r} added to {path}\n")
    sys.stdout.write(f"secret (shown once; the config keeps only its SHA-256): {secret}\n")
    return 0


def _defaults(args: argparse.Namespace) -> ServerConfig:
    from .config import default_config

    return default_config(Path(args.data_dir or DEFAULT_DATA_DIR))


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    if args.config:
        config = load_config(args.config)
        os.environ["EXECAUTH_SERVER_CONFIG"] = str(config.source)
    else:
        config = _defaults(args)
        os.environ.pop("EXECAUTH_SERVER_CONFIG", None)
        os.environ["EXECAUTH_SERVER_DATA"] = str(config.data_dir)
    host = args.host or config.host
    port = args.port if args.port is not None else config.port
    workers = args.workers if args.workers is not None else config.workers
    if not 0 <= port <= 65535 or not 1 <= workers <= 64:
        raise ExecAuthError("--port must be within 0..65535 and --workers within 1..64")
    # Load once here, so a bad policy, key or store URL fails now with one clear line.
    from .app import AuthorityService

    service = AuthorityService(config)
    kid = service.signer.kid
    service.close()
    if port == 0:
        # Pick the port now, so the URL printed below is the one served (uvicorn would
        # pick one itself, and with several workers never say which).
        port = _free_port(host)
    out = sys.stdout
    out.write(f"execauth serve: http://{host}:{port} ({workers} worker{'s' if workers > 1 else ''})\n")
    out.write(f"  data:    {config.data_dir}\n")
    out.write(f"  stores:  {_redact(config.store_url)}\n")
    out.write(f"  key:     {config.key_path} (kid {kid})\n")
    out.write(f"  jwks:    http://{host}:{port}/.well-known/jwks.json\n")
    if not args.config:
        out.write(f"  caller:  'local', secret in {config.data_dir / 'caller.secret'}\n")
    if not config.policy:
        out.write("  policy:  none configured: every proposal is denied (POLICY_EMPTY)\n")
    if any(a.password_argon2 for a in config.approvers):
        out.write(f"  console: http://{host}:{port}/console/\n")
        if workers > 1:
            # Console sessions live in the worker that signed the approver in.
            out.write("  warning: console sessions are per worker: with several workers, route each approver to one\n")
    else:
        out.write("  console: no approver has a password_argon2 yet (execauth serve --hash-password)\n")
    out.flush()
    uvicorn.run(
        "execauth_server.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    return 0


def _free_port(host: str) -> int:
    """A port that is free on ``host`` now (the OS picks it)."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.bind(address)
            return int(sock.getsockname()[1])
    except OSError as exc:
        raise ExecAuthError(f"cannot listen on {host!r}: {exc.strerror or exc}") from None


def _redact(url: str) -> str:
    """A store URL without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.hash_password:
            return hash_password_command()
        if args.add_caller:
            if not args.config:
                raise ExecAuthError("--add-caller needs --config FILE (the file it adds the caller to)")
            return add_caller(args.config, args.add_caller, args.principal, args.agent)
        return serve(args)
    except (ExecAuthError, OSError) as exc:
        sys.stderr.write(f"execauth: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":  # pragma: no cover
    argv = sys.argv[1:]
    if argv[:1] == ["serve"]:
        argv = argv[1:]
    sys.exit(main(argv))
