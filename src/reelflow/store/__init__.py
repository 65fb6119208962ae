"""Durable state. `open_store(url)` picks the implementation from the database URL."""

from __future__ import annotations

from .base import Store


def open_store(url: str) -> Store:
    """The Store for a `REELFLOW_DATABASE_URL`."""
    if url.startswith("sqlite:"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url)
    if url.startswith(("postgresql:", "postgres:")):
        from .postgres import PostgresStore

        return PostgresStore(url)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///path or postgresql://…")


__all__ = ["Store", "open_store"]
