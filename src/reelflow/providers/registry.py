"""Which Provider runs a job: by the provider part of its model, or `local` for ffmpeg operations."""

from __future__ import annotations

import logging
import os

from .base import Provider

log = logging.getLogger(__name__)

CREDENTIALS = {
    "replicate": "REPLICATE_API_TOKEN",
    "fal": "FAL_KEY",
    "elevenlabs": "ELEVENLABS_API_KEY",
    "openai": "OPENAI_API_KEY",
    "google": "GEMINI_API_KEY",
}


def credential_env(provider: str | None) -> str | None:
    """The environment variable holding a provider's credential: a built-in's, or what a plugin declared."""
    if not provider:
        return None
    if provider in CREDENTIALS:
        return CREDENTIALS[provider]
    from .plugins import credential_env as plugin_credential_env

    return plugin_credential_env(provider)


def missing_credential(provider: str | None) -> str | None:
    """The environment variable a provider needs that is not set, or None."""
    var = credential_env(provider)
    return var if var is not None and not os.environ.get(var) else None


def default_providers() -> dict[str, Provider]:
    """The built-in providers and one of each provider plugin (a broken plugin is logged and left out).

    Loads the catalog's extensions first (plugins' models, REELFLOW_CATALOG_FILE), so a worker refuses
    to start on a bad catalog file (CatalogFileError) instead of failing its jobs one by one.
    """
    from .catalog import load_extensions
    from .elevenlabs import ElevenLabsProvider
    from .fal import FalProvider
    from .google import GoogleProvider
    from .local import LocalProvider
    from .openai import OpenAIProvider
    from .plugins import make_providers
    from .replicate import ReplicateProvider
    from .sim import SimProvider

    load_extensions()
    providers: dict[str, Provider] = {
        "local": LocalProvider(),
        "sim": SimProvider(),
        "replicate": ReplicateProvider(),
        "fal": FalProvider(),
        "elevenlabs": ElevenLabsProvider(),
        "openai": OpenAIProvider(),
        "google": GoogleProvider(),
    }
    for name, provider in make_providers().items():
        if name in providers:
            log.error("provider plugin '%s' refused: a plugin cannot replace the built-in provider '%s'", name, name)
            continue
        providers[name] = provider
    return providers


class Providers:
    """A name -> Provider table; built-ins by default, replaceable in tests."""

    def __init__(self, providers: dict[str, Provider] | None = None) -> None:
        self._providers = providers if providers is not None else default_providers()

    def get(self, name: str | None) -> Provider | None:
        return self._providers.get(name or "local")

    def names(self) -> list[str]:
        return sorted(self._providers)
