import pytest

pytest.importorskip("autogen_agentchat")
pytest.importorskip("autogen_core")
pytest.importorskip("autogen_ext.models.replay")
