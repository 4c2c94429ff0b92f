"""Stores: replay (consume a token id once) and the audit log, in memory and SQLite."""

from .base import AuditLog, Debit, ReplayStore, StateStore, window_start
from .memory import MemoryAuditLog, MemoryReplayStore, MemoryStateStore
from .sqlite import SQLiteAuditLog, SQLiteReplayStore, SQLiteStateStore

__all__ = [
    "AuditLog",
    "Debit",
    "MemoryAuditLog",
    "MemoryReplayStore",
    "MemoryStateStore",
    "ReplayStore",
    "SQLiteAuditLog",
    "SQLiteReplayStore",
    "SQLiteStateStore",
    "StateStore",
    "window_start",
]
