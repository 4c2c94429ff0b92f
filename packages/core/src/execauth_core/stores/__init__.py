"""Stores: replay (consume a token id once) and the audit log, in memory and SQLite."""

from .base import AuditLog, ReplayStore
from .memory import MemoryAuditLog, MemoryReplayStore
from .sqlite import SQLiteAuditLog, SQLiteReplayStore

__all__ = [
    "AuditLog",
    "MemoryAuditLog",
    "MemoryReplayStore",
    "ReplayStore",
    "SQLiteAuditLog",
    "SQLiteReplayStore",
]
