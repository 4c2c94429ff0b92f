"""Real servers for tests and examples: ``running_server``.

::

    with running_server({"policy": "policy.yaml"}) as srv:
        guard = Guard.remote(srv.url, credential=srv.credential)

One worker runs uvicorn in a thread of this process; ``workers > 1`` runs
``execauth serve`` as a subprocess (uvicorn's own worker processes) and waits for
``/readyz``. Either way the server listens on 127.0.0.1 on an ephemeral port (or the
``port`` given) and is stopped when the block ends, whatever happens inside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ServerConfig, hash_secret, load_config, new_secret, parse_config

__all__ = ["RunningServer", "running_server", "serving"]


@dataclass
class RunningServer:
    """A server started by :func:`running_server`."""

    url: str
    """``http://127.0.0.1:<port>``"""
    credential: str
    """A caller secret valid for this server (caller ``testing``, principals ``*``
    unless the config already names a caller called ``testing``)."""
    data_dir: Path
    config: ServerConfig
    config_file: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def jwks_url(self) -> str:
        return self.url + "/.well-known/jwks.json"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def _document(config: Mapping[str, Any] | str | os.PathLike[str] | None) -> tuple[dict[str, Any], Path]:
    """The config as a mapping, and the folder its relative paths are relative to."""
    if config is None:
        return {}, Path.cwd()
    if isinstance(config, Mapping):
        return dict(config), Path.cwd()
    from .config import read_document

    path = Path(config).resolve()
    doc = read_document(path)
    return (dict(doc) if isinstance(doc, dict) else {}), path.parent


def _absolute(doc: dict[str, Any], base: Path) -> dict[str, Any]:
    for key in ("policy", "manifests", "data_dir", "key_file", "extra_keys"):
        value = doc.get(key)
        if isinstance(value, str) and not os.path.isabs(value):
            doc[key] = str(base / value)
    hooks = doc.get("webhooks")
    if isinstance(hooks, list):
        doc["webhooks"] = [
            {**h, "secret_file": str(base / h["secret_file"])}
            if isinstance(h, dict) and isinstance(h.get("secret_file"), str) and not os.path.isabs(h["secret_file"])
            else h
            for h in hooks
        ]
    stores = doc.get("stores")
    if isinstance(stores, str) and stores.startswith("sqlite:") and not stores.startswith("sqlite:/"):
        doc["stores"] = "sqlite:" + str(base / stores[len("sqlite:") :])
    return doc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes] | None, deadline: float, logfile: Path | None = None) -> None:
    import httpx

    last: str = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            err = logfile.read_text("utf-8", "replace") if logfile is not None and logfile.exists() else ""
            raise RuntimeError(f"execauth serve exited with {proc.returncode}: {err.strip()[-2000:]}")
        try:
            r = httpx.get(url + "/readyz", timeout=1.0)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.05)
    raise RuntimeError(f"the server at {url} did not become ready ({last})")


@contextlib.contextmanager
def running_server(
    config: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    *,
    workers: int = 1,
    port: int = 0,
    startup_timeout: float = 30.0,
    isolated: bool = False,
) -> Iterator[RunningServer]:
    """Start an authority service on 127.0.0.1 and stop it when the block ends.

    Args:
        config: a config mapping (relative paths from the current folder), a config
            file, or ``None`` (no policy: every proposal is denied). Without
            ``data_dir`` a fresh temporary folder is used and removed afterwards.
        workers: uvicorn worker processes; above 1 the server is a subprocess.
        isolated: run even a single worker as a subprocess (its own interpreter and GIL).
        port: 0 for an ephemeral port.
    """
    doc, base = _document(config)
    doc = _absolute(doc, base)
    credential = new_secret()
    callers = [c for c in (doc.get("callers") or []) if not (isinstance(c, dict) and c.get("name") == "testing")]
    callers.append({"name": "testing", "secret_sha256": hash_secret(credential), "principals": ["*"]})
    doc["callers"] = callers
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="execauth-server-")))
        doc.setdefault("data_dir", str(work / "data"))
        doc["host"] = "127.0.0.1"
        config_file = work / "server.json"
        config_file.write_text(json.dumps(doc, indent=2), encoding="utf-8")  # noqa: TID251 - a config file
        parsed = load_config(config_file)
        if workers <= 1 and not isolated:
            yield from _in_thread(parsed, credential, config_file, port, startup_timeout)
        else:
            yield from _in_subprocess(parsed, credential, config_file, port, workers, startup_timeout)


@contextlib.contextmanager
def serving(app: Any, *, port: int = 0, startup_timeout: float = 30.0) -> Iterator[str]:
    """Serve any ASGI ``app`` with uvicorn in a thread on 127.0.0.1; yields its base URL
    and stops it when the block ends."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it: no delayed-ACK stalls
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.set_inheritable(False)
    actual = sock.getsockname()[1]
    uconfig = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2)
    server = uvicorn.Server(uconfig)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="execauth-uvicorn")
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the in-process server did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{actual}"
    finally:
        server.should_exit = True
        thread.join(10)
        if thread.is_alive():
            server.force_exit = True
            thread.join(5)
        sock.close()


def _in_thread(
    config: ServerConfig, credential: str, config_file: Path, port: int, startup_timeout: float
) -> Iterator[RunningServer]:
    from .app import create_app

    app = create_app(config)
    try:
        with serving(app, port=port, startup_timeout=startup_timeout) as url:
            yield RunningServer(
                url=url, credential=credential, data_dir=config.data_dir, config=config, config_file=config_file
            )
    finally:
        app.state.service.close()


def _in_subprocess(
    config: ServerConfig, credential: str, config_file: Path, port: int, workers: int, startup_timeout: float
) -> Iterator[RunningServer]:
    actual = port or _free_port()
    cmd = [
        sys.executable,
        "-m",
        "execauth_server.cli",
        "serve",
        "--config",
        str(config_file),
        "--host",
        "127.0.0.1",
        "--port",
        str(actual),
        "--workers",
        str(workers),
    ]
    errors = open(config_file.parent / "server.log", "wb")
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        cmd, stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True
    )
    errors.close()
    try:
        url = f"http://127.0.0.1:{actual}"
        _wait_ready(url, proc, time.monotonic() + startup_timeout, config_file.parent / "server.log")
        yield RunningServer(
            url=url,
            credential=credential,
            data_dir=config.data_dir,
            config=config,
            config_file=config_file,
            process=proc,
        )
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], *, kill: bool = False) -> None:
    """Stop a server subprocess and its workers (its own process group)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def config_for(doc: Mapping[str, Any]) -> ServerConfig:
    """Parse a config mapping (relative paths from the current folder)."""
    return parse_config(dict(doc), base=Path.cwd())
