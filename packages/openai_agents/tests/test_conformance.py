"""The shared execauth conformance suite, through the real Agents SDK run loop."""

from __future__ import annotations

import pytest

from execauth_conformance import AdapterHarness, ConformanceSuite

from .harness import OpenAIAgentsHarness


class TestOpenAIAgentsConformance(ConformanceSuite):
    @pytest.fixture
    def harness(self) -> AdapterHarness:
        return OpenAIAgentsHarness()
