from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("mcp")

# --import-mode=importlib does not put this folder on sys.path; the helpers live beside us.
sys.path.insert(0, str(Path(__file__).parent))

from mcphelpers import http_upstream, work

__all__ = ["http_upstream", "work"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
