"""The ``execauth`` logger, with a NullHandler: a library does not print; the host
application decides where its records go. Every module that logs takes it from here,
so the handler is in place whichever module is imported first (``import
execauth_core`` itself loads nothing, see ``__init__``)."""

from __future__ import annotations

import logging

log = logging.getLogger("execauth")
log.addHandler(logging.NullHandler())
