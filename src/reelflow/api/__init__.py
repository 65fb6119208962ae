"""The HTTP API (FastAPI): `create_app()`."""

from .app import create_app

__all__ = ["create_app"]
