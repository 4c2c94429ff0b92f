"""The shared conformance suite through Guard.remote against a real server, bare and
through a real LangGraph agent loop; results go to the cross-adapter comparison."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from execauth_conformance import AdapterHarness, ConformanceSuite
from execauth_core import AllowListPolicy, Authority, LocalSigner
from execauth_server.app import AuthorityService, create_app
from execauth_server.config import hash_secret, parse_config
from execauth_server.testing import serving

from .remote_harness import RemoteHarness

SECRET = "conformance-caller-secret"


@pytest.fixture(scope="module")
def service_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, Any]]:
    data = tmp_path_factory.mktemp("remote-conformance")
    config = parse_config(
        {
            "data_dir": str(data),
            "callers": [{"name": "suite", "secret_sha256": hash_secret(SECRET), "principals": ["*"]}],
        }
    )
    placeholder = Authority(AllowListPolicy([]), LocalSigner.generate(), issuer="i", audience="a")
    app = create_app(config, service=AuthorityService(config, authority=placeholder))
    with serving(app) as url:
        yield app, url, config


class TestRemoteConformance(ConformanceSuite):
    @pytest.fixture
    def harness(self, service_app: tuple[Any, str, Any]) -> AdapterHarness:
        app, url, config = service_app
        return RemoteHarness(app, url, SECRET, config)


try:
    from .langgraph_harness import LangGraphHarness
except ImportError as exc:  # the tox env `server` installs langgraph; CI must not go without it
    _missing = str(exc)

    def test_langgraph_is_installed_for_the_remote_run() -> None:
        from .conftest import unavailable

        unavailable(f"langgraph is not installed ({_missing}): pip install './packages/langgraph[test]'")

else:

    class TestRemoteLangGraphConformance(ConformanceSuite):
        """A real LangGraph agent loop (scripted model) whose guard is remote."""

        @pytest.fixture
        def harness(self, service_app: tuple[Any, str, Any]) -> AdapterHarness:
            app, url, config = service_app
            return RemoteHarness(app, url, SECRET, config, inner=LangGraphHarness())
