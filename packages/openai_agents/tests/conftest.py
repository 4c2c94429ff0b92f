import os

import pytest

pytest.importorskip("agents")

# Never call out: with an API key in the environment the SDK would export traces.
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"

from agents import set_tracing_disabled

set_tracing_disabled(True)
