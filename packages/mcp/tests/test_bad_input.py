"""Bad input on the proxy's stdio face, written as raw lines: each gets a clear error and
the proxy goes on serving."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import Any

from mcphelpers import UPSTREAM, Workdir


class Raw:
    """The proxy as a subprocess spoken to line by line."""

    def __init__(self, work: Workdir, **config: Any) -> None:
        cmd = [
            sys.executable,
            "-m",
            "execauth_mcp",
            "--config",
            str(work.config(**config)),
            "--",
            sys.executable,
            UPSTREAM,
        ]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=work.env(), text=True
        )
        self.timer = threading.Timer(60, self.proc.kill)  # never outlives a stuck test
        self.timer.start()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def recv(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the proxy closed its output"
        return json.loads(line)

    def request(self, ident: int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": ident, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(json.dumps(msg))
        return self.recv()

    def initialize(self) -> None:
        answer = self.request(
            0,
            "initialize",
            {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
        )
        assert "result" in answer, answer
        self.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))

    def close(self) -> None:
        self.timer.cancel()
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()


def test_malformed_duplicate_oversized_unknown(work: Workdir) -> None:
    raw = Raw(work, max_message_bytes=4096)
    try:
        raw.initialize()
        raw.send("{not json")
        parse = raw.recv()
        assert parse["id"] is None and parse["error"]["code"] == -32700

        raw.send(
            '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"write_note",'
            '"arguments":{"text":"innocent","text":"evil"}}}'
        )
        dup = raw.recv()
        assert dup["id"] == 7 and dup["error"]["code"] == -32700 and "duplicate" in dup["error"]["message"]

        big = raw.request(8, "tools/call", {"name": "write_note", "arguments": {"text": "x" * 10_000}})
        assert big["id"] == 8 and big["error"]["code"] == -32600 and "exceed" in big["error"]["message"]

        unknown = raw.request(9, "no/such/method")
        assert unknown["id"] == 9 and unknown["error"]["code"] == -32601

        ok = raw.request(10, "tools/call", {"name": "write_note", "arguments": {"text": "fine"}})
        assert ok["id"] == 10 and ok["result"]["isError"] is False
    finally:
        raw.close()
    assert work.effects() == ["write_note fine"]
    refused = [e for e in work.audit() if e["event"] == "denial"]
    assert len(refused) == 2 and all(e["executed"] is False and e["tool"] == "files.write_note" for e in refused)


def test_well_formed_json_that_is_not_a_valid_call(work: Workdir) -> None:
    """JSON that parses but is no valid JSON-RPC request or no valid tools/call: an error
    answer (or, where the message has no id, none), nothing runs, the proxy keeps serving."""
    raw = Raw(work)
    try:
        raw.initialize()
        bad_args = raw.request(20, "tools/call", {"name": "write_note", "arguments": "not an object"})
        assert bad_args["id"] == 20 and "error" in bad_args, bad_args
        no_name = raw.request(21, "tools/call", {"arguments": {"text": "x"}})
        assert no_name["id"] == 21 and "error" in no_name, no_name
        for junk in ('"just a string"', "[1, 2]", '{"jsonrpc": "2.0", "id": 22}', "42"):
            raw.send(junk)
        ok = raw.request(23, "tools/call", {"name": "write_note", "arguments": {"text": "fine"}})
        # Whatever the junk lines got back (error answers), the good call is answered.
        while ok.get("id") != 23:
            assert "error" in ok, ok
            ok = raw.recv()
        assert ok["result"]["isError"] is False
    finally:
        raw.close()
    assert work.effects() == ["write_note fine"]
