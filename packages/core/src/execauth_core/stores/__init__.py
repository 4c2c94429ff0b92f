"""Stores: replay (consume a token id once) and the audit log, in memory and SQLite."""

from .base import AuditLog, Debit, ReplayStore, StateStore, window_start
from .memory import MemoryAuditLog, MemoryReplayStore, MemoryStateStore
from .sqlite import SQLiteAuditLog, SQLiteReplayStore

__all__ = [
    "AuditLog",
    "Debit",
    "MemoryAuditLog",
    "MemoryReplayStore",
    "MemoryStateStore",
    "ReplayStore",
    "SQLiteAuditLog",
    "SQLiteReplayStore",
    "StateStore",
    "window_start",
]
