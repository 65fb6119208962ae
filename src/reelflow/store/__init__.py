"""Durable state. `open_store(url)` picks the implementation from the database URL."""

from __future__ import annotations

from .base import Store


def open_store(url: str, *, pool_size: int = 10) -> Store:
    """The Store for a `REELFLOW_DATABASE_URL` (`pool_size`: PostgreSQL's connections per process)."""
    if url.startswith("sqlite:"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url)
    if url.startswith(("postgresql:", "postgres:")):
        from .postgres import PostgresStore

        return PostgresStore(url, max_connections=pool_size)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///path or postgresql://…")


__all__ = ["Store", "open_store"]
