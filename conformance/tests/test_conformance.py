"""Core runs the shared suite through the reference harness (no framework)."""

from __future__ import annotations

import pytest

from execauth_conformance import AdapterHarness, ConformanceSuite, ReferenceHarness


class TestReferenceConformance(ConformanceSuite):
    @pytest.fixture
    def harness(self) -> AdapterHarness:
        return ReferenceHarness()
