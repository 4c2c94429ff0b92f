"""require_execauth: the upstream itself refuses calls without a valid, unused token for that call."""

from __future__ import annotations

import json
import sys

import pytest
from mcphelpers import UPSTREAM, Workdir, open_session, proxy_command

from execauth_core import AuthorizationRequest, LocalSigner

pytestmark = pytest.mark.anyio


def text(result: object) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)  # type: ignore[attr-defined]


async def test_token_forwarded_by_the_proxy_is_accepted(work: Workdir) -> None:
    # The proxy's data_dir holds its key and JWKS: start it once so they exist.
    cfg = work.config(forward_token=True)
    async with open_session(proxy_command(cfg), work.env(), work.root) as s:
        await s.list_tools()
    env = work.env(UPSTREAM_JWKS=str(work.root / "state" / "jwks.json"))
    async with open_session(proxy_command(cfg), env, work.root) as s:
        ok = await s.call_tool("write_note", {"text": "with token"})
    assert not ok.is_error, text(ok)
    assert work.effects() == ["write_note with token"]


async def test_direct_calls_without_or_with_bad_tokens_are_refused(work: Workdir) -> None:
    signer = LocalSigner.generate()
    jwks = work.root / "jwks.json"
    from execauth_core import KeySet

    jwks.write_text(json.dumps(KeySet.of_signer(signer).to_jwks()), encoding="utf-8")
    env = work.env(UPSTREAM_JWKS=str(jwks))

    from execauth_core import AllowListPolicy, Guard

    guard = Guard.local(AllowListPolicy({"files.write_note"}), signer=signer)
    request = AuthorizationRequest(tool="files.write_note", args={"text": "paid"}, principal="alice")
    decision = guard.authorize(request)
    assert decision.token is not None
    meta = {"execauth/token": decision.token, "execauth/request": request.model_dump(mode="json")}

    async with open_session([sys.executable, UPSTREAM], env, work.root) as s:
        none = await s.call_tool("write_note", {"text": "paid"})
        other_args = await s.call_tool("write_note", {"text": "changed"}, meta=meta)  # type: ignore[arg-type]
        ok = await s.call_tool("write_note", {"text": "paid"}, meta=meta)  # type: ignore[arg-type]
        replay = await s.call_tool("write_note", {"text": "paid"}, meta=meta)  # type: ignore[arg-type]
        forged = dict(meta, **{"execauth/token": decision.token[:-4] + "AAAA"})
        bad_sig = await s.call_tool("write_note", {"text": "paid"}, meta=forged)  # type: ignore[arg-type]
    assert none.is_error and "NO_TOKEN" in text(none)
    assert other_args.is_error and "TOKEN_PROPOSAL_MISMATCH" in text(other_args)
    assert not ok.is_error, text(ok)
    assert replay.is_error and "TOKEN_REPLAYED" in text(replay)
    assert bad_sig.is_error and ("TOKEN_SIGNATURE_INVALID" in text(bad_sig) or "TOKEN_MALFORMED" in text(bad_sig))
    assert work.effects() == ["write_note paid"]
