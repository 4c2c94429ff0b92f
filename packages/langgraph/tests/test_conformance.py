"""The shared execauth conformance suite, through a real LangGraph agent loop."""

from __future__ import annotations

import pytest

from execauth_conformance import AdapterHarness, ConformanceSuite

from .harness import LangGraphHarness


class TestLangGraphConformance(ConformanceSuite):
    @pytest.fixture
    def harness(self) -> AdapterHarness:
        return LangGraphHarness()
