"""The shared execauth conformance suite, through a real classic AutoGen ConversableAgent chat."""

from __future__ import annotations

import pytest

from execauth_conformance import AdapterHarness, ConformanceSuite

from .harness import ClassicHarness


class TestClassicConformance(ConformanceSuite):
    @pytest.fixture
    def harness(self) -> AdapterHarness:
        return ClassicHarness()
