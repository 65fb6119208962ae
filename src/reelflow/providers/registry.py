"""Which Provider runs a job: by the provider part of its model, or `local` for ffmpeg operations."""

from __future__ import annotations

from .base import Provider


def default_providers() -> dict[str, Provider]:
    from .local import LocalProvider
    from .sim import SimProvider

    return {"local": LocalProvider(), "sim": SimProvider()}


class Providers:
    """A name -> Provider table; built-ins by default, replaceable in tests."""

    def __init__(self, providers: dict[str, Provider] | None = None) -> None:
        self._providers = providers if providers is not None else default_providers()

    def get(self, name: str | None) -> Provider | None:
        return self._providers.get(name or "local")

    def names(self) -> list[str]:
        return sorted(self._providers)
