"""pytest plugin (``pytest11`` entry point): full assertion diffs in the installed
suite, and the results files written at the end of the session."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("execauth_conformance.suite")

from . import results  # noqa: E402 - after register_assert_rewrite, by design


@pytest.fixture
def conformance_results_dir() -> object:
    """Where this session's results files go (``$EXECAUTH_RESULTS_DIR``, default ./results)."""
    return results.results_dir()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    written = results.write_all()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        for path in written:
            reporter.write_line(f"execauth-conformance: results written to {path}")
