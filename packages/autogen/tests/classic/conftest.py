import warnings

import pytest

# ag2 imports jsonschema.RefResolver, deprecated in the jsonschema execauth-core
# needs (>= 4.18): a DeprecationWarning at import time that is ag2's business, and
# that the repo-wide "warnings are errors" setting would turn into a collection error.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    autogen = pytest.importorskip("autogen")

if not hasattr(autogen, "ConversableAgent"):
    pytest.skip("the installed `autogen` is not classic AutoGen", allow_module_level=True)
