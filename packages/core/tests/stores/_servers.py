"""Throwaway Redis and PostgreSQL servers on free loopback ports, for outage tests.

The shared servers are never stopped; these are started in a temporary directory,
stopped, killed, frozen (SIGSTOP) and restarted at will. The Redis one runs with
``appendonly yes`` + ``appendfsync always``, the durability a deployment needs
(docs/deploying.md), so consumed ids survive its restart.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts connections (the kernel completes the handshake) and
    never answers a byte: what a hung server or a black-holed proxy looks like."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield int(s.getsockname()[1])


def _wait_for(check: object, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {seconds} s")


def _children(pid: int) -> list[int]:
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.split("/")[2]))
    return found


class RedisServer:
    binary = shutil.which("redis-server")

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="execauth-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        assert self.binary is not None
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                "--logfile", str(self.dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_for(self._answers, "throwaway redis-server")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal(self, sig: int, wait: bool) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            if wait:
                self.proc.wait(timeout=30)

    def stop(self) -> None:
        self._signal(signal.SIGTERM, True)

    def kill(self) -> None:
        self._signal(signal.SIGKILL, True)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP, False)

    def resume(self) -> None:
        self._signal(signal.SIGCONT, False)

    def destroy(self) -> None:
        self.resume()
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    bin = _pg_bin()

    def __init__(self) -> None:
        assert self.bin is not None
        self.dir = Path(tempfile.mkdtemp(prefix="execauth-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        # initdb and pg_ctl refuse to run as root: run them as the postgres user.
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            os.chown(self.dir, *_uid_gid("postgres"))
            self._as_owner = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        assert self.bin is not None
        subprocess.run(
            [*self._as_owner, str(self.bin / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @property
    def running(self) -> bool:
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c max_connections=60"
        log = str(self.dir / "pg.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def kill(self) -> None:
        """A crash: every process quits at once, no checkpoint; recovery runs on start."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def _signal_all(self, sig: int) -> None:
        pid = self.pid
        if pid is not None:
            for p in [pid, *_children(pid)]:
                with contextlib.suppress(OSError):
                    os.kill(p, sig)

    def pause(self) -> None:
        self._signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_all(signal.SIGCONT)

    def destroy(self) -> None:
        self.resume()
        if self.running:
            with contextlib.suppress(subprocess.SubprocessError):
                self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _uid_gid(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid
