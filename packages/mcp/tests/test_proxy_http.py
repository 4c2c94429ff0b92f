"""The proxy in front of a streamable-HTTP upstream (uvicorn on a loopback ephemeral port)."""

from __future__ import annotations

import pytest
from mcphelpers import Workdir, open_session, proxy_command

pytestmark = pytest.mark.anyio


def text(result: object) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)  # type: ignore[attr-defined]


async def test_http_upstream_allow_and_deny(work: Workdir, http_upstream: str) -> None:
    async with open_session(proxy_command(work.config(), url=http_upstream), work.env(), work.root) as s:
        listed = {t.name for t in (await s.list_tools()).tools}
        ok = await s.call_tool("write_note", {"text": "over http"})
        no = await s.call_tool("delete_all", {})
    assert "write_note" in listed
    assert not ok.is_error and "wrote over http" in text(ok)
    assert no.is_error and "TOOL_NOT_ALLOWED" in text(no)
    assert work.effects() == ["write_note over http"]
