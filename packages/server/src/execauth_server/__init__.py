"""execauth-server: the authority as an HTTP service, and executor-side verification."""

from __future__ import annotations

from ._version import __version__

__all__ = ["__version__"]
