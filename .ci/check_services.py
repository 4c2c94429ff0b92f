#!/usr/bin/env python3
"""Are the Redis and PostgreSQL servers the store tests need reachable?

In CI (env CI=true) an unreachable server exits 1 with a message, because the
store contract suite must run against every backend there, never skip. Anywhere
else it only warns and exits 0 (those tests then skip with the reason).

Standard library only: it runs before any virtualenv exists. The addresses come
from REDIS_URL / DATABASE_URL, as in the tests (defaults 127.0.0.1:6379 and
127.0.0.1:5432). It checks that a server speaks the protocol, not just that the
port is open.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from urllib.parse import urlsplit

TIMEOUT = 3.0


def _address(env: str, default_url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(os.environ.get(env) or default_url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def redis_answers(host: str, port: int) -> str | None:
    """None if a Redis server answers PING (an auth error is an answer too)."""
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT) as s:
            s.settimeout(TIMEOUT)
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
    except OSError as exc:
        return f"Redis at {host}:{port} is unreachable: {exc}"
    if reply[:1] not in (b"+", b"-"):
        return f"Redis at {host}:{port} did not answer PING like Redis (got {reply[:20]!r})"
    return None


def postgres_answers(host: str, port: int) -> str | None:
    """None if a PostgreSQL server answers an SSLRequest (with 'S' or 'N')."""
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT) as s:
            s.settimeout(TIMEOUT)
            s.sendall(struct.pack("!ii", 8, 80877103))
            reply = s.recv(1)
    except OSError as exc:
        return f"PostgreSQL at {host}:{port} is unreachable: {exc}"
    if reply not in (b"S", b"N"):
        return f"PostgreSQL at {host}:{port} did not answer like PostgreSQL (got {reply!r})"
    return None


def main() -> int:
    problems = [
        p
        for p in (
            redis_answers(*_address("REDIS_URL", "redis://127.0.0.1:6379/15", 6379)),
            postgres_answers(*_address("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test", 5432)),
        )
        if p is not None
    ]
    if not problems:
        print("check_services: Redis and PostgreSQL are reachable")
        return 0
    in_ci = os.environ.get("CI", "").strip().lower() == "true"
    for p in problems:
        print(f"check_services: {p}", file=sys.stderr)
    if in_ci:
        print(
            "check_services: CI=true, and the store contract suite must run on Redis and PostgreSQL, "
            "not skip. Start the servers (or point REDIS_URL / DATABASE_URL at them).",
            file=sys.stderr,
        )
        return 1
    print("check_services: not in CI, so the Redis/PostgreSQL store tests will skip", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
