"""Stores: replay (consume a token id once), state (budgets, rates) and the audit log.

Memory and SQLite here; Redis (``.redis``) and PostgreSQL (``.postgres``) load on
use, e.g. through ``open_stores("redis://...")``."""

from .base import AuditLog, Debit, ReplayStore, StateStore, window_start
from .memory import MemoryAuditLog, MemoryReplayStore, MemoryStateStore
from .sqlite import SQLiteAuditLog, SQLiteReplayStore, SQLiteStateStore
from .urls import Stores, open_stores

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
    "Stores",
    "open_stores",
    "window_start",
]
