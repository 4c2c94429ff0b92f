"""The shared suite cannot be thinned out by an adapter."""

from __future__ import annotations

import pytest

from execauth_conformance import SHARED_TESTS, ConformanceSuite


def test_overriding_a_shared_test_is_refused() -> None:
    with pytest.raises(TypeError, match="overrides or deletes"):

        class Sneaky(ConformanceSuite):
            def test_replayed_token_is_refused(self) -> None:  # type: ignore[override]
                pass


def test_deleting_a_shared_test_is_refused() -> None:
    with pytest.raises(TypeError, match="overrides or deletes"):
        type("Sneaky", (ConformanceSuite,), {"test_store_outage_denies": None})


@pytest.mark.parametrize(
    "mark", [pytest.mark.skip(reason="x"), pytest.mark.xfail(reason="x"), pytest.mark.skipif(True, reason="x")]
)
def test_skipping_the_suite_is_refused(mark: pytest.MarkDecorator) -> None:
    with pytest.raises(TypeError, match="skipped or xfailed"):
        type("Lazy", (ConformanceSuite,), {"pytestmark": [mark.mark]})


def test_pinned_list_matches_the_suite() -> None:
    defined = sorted(n for n in vars(ConformanceSuite) if n.startswith("test_"))
    assert defined == sorted(SHARED_TESTS)
