"""The shared execauth conformance suite, through a real AgentChat AssistantAgent."""

from __future__ import annotations

import pytest

from execauth_conformance import AdapterHarness, ConformanceSuite

from .harness import AgentChatHarness


class TestAgentChatConformance(ConformanceSuite):
    @pytest.fixture
    def harness(self) -> AdapterHarness:
        return AgentChatHarness()
