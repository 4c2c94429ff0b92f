"""execauth-conformance: frozen vectors and the shared suite every adapter passes.

An adapter plugs in with one harness (see :class:`AdapterHarness`) and one test
class inheriting :class:`ConformanceSuite`.
"""

from ._version import __version__
from .harness import AdapterHarness, CallOutcome, ReferenceHarness, ToolCallCase
from .suite import SHARED_TESTS, ConformanceSuite
from .vectors import VectorIntegrityError

__all__ = [
    "SHARED_TESTS",
    "AdapterHarness",
    "CallOutcome",
    "ConformanceSuite",
    "ReferenceHarness",
    "ToolCallCase",
    "VectorIntegrityError",
    "__version__",
]
