"""The shared execauth conformance suite, through the MCP gating proxy."""

from __future__ import annotations

import pytest
from conformance_harness import MCPProxyHarness

from execauth_conformance import AdapterHarness, ConformanceSuite


class TestMCPProxyConformance(ConformanceSuite):
    @pytest.fixture
    def harness(self) -> AdapterHarness:
        return MCPProxyHarness()
