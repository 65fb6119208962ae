"""Which Provider runs a job: by the provider part of its model, or `local` for ffmpeg operations."""

from __future__ import annotations

import os

from .base import Provider

CREDENTIALS = {
    "replicate": "REPLICATE_API_TOKEN",
    "fal": "FAL_KEY",
    "elevenlabs": "ELEVENLABS_API_KEY",
    "openai": "OPENAI_API_KEY",
}


def missing_credential(provider: str | None) -> str | None:
    """The environment variable a provider needs that is not set, or None."""
    var = CREDENTIALS.get(provider or "")
    return var if var is not None and not os.environ.get(var) else None


def default_providers() -> dict[str, Provider]:
    from .elevenlabs import ElevenLabsProvider
    from .fal import FalProvider
    from .local import LocalProvider
    from .openai import OpenAIProvider
    from .replicate import ReplicateProvider
    from .sim import SimProvider

    return {
        "local": LocalProvider(),
        "sim": SimProvider(),
        "replicate": ReplicateProvider(),
        "fal": FalProvider(),
        "elevenlabs": ElevenLabsProvider(),
        "openai": OpenAIProvider(),
    }


class Providers:
    """A name -> Provider table; built-ins by default, replaceable in tests."""

    def __init__(self, providers: dict[str, Provider] | None = None) -> None:
        self._providers = providers if providers is not None else default_providers()

    def get(self, name: str | None) -> Provider | None:
        return self._providers.get(name or "local")

    def names(self) -> list[str]:
        return sorted(self._providers)
