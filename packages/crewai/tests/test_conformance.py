"""The shared execauth conformance suite, through CrewAI's real agent loop."""

from __future__ import annotations

import pytest

from execauth_conformance import AdapterHarness, ConformanceSuite
from execauth_crewai.conformance import CrewAIHarness


class TestCrewAIConformance(ConformanceSuite):
    @pytest.fixture
    def harness(self) -> AdapterHarness:
        return CrewAIHarness()
