"""Which Provider runs a job: by the provider part of its model, or `local` for ffmpeg operations."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from .base import Provider

if TYPE_CHECKING:
    from .catalog import Catalog

log = logging.getLogger(__name__)


def credential_env(provider: str | None) -> str | None:
    """The environment variable holding a provider's credential, as the provider (built-in or plugin) declared."""
    from .plugins import provider_info

    info = provider_info(provider)
    return info.key_env if info is not None else None


def reads_local_files(provider: str | None) -> bool:
    """Whether this provider reads `task.inputs` (files on this machine) rather than URLs (its info says)."""
    from .plugins import provider_info

    info = provider_info(provider)
    return info is not None and info.reads_local_files


def missing_credential(provider: str | None) -> str | None:
    """The environment variable a provider needs that is not set, or None."""
    var = credential_env(provider)
    return var if var is not None and not os.environ.get(var) else None


def default_providers(catalog: Catalog | None = None) -> dict[str, Provider]:
    """The built-in providers and one of each provider plugin (a broken plugin is logged and left out).

    Without a `catalog`, builds the default one first (plugins' models, REELFLOW_CATALOG_FILE), so a worker
    refuses to start on a bad catalog file (CatalogFileError) instead of failing its jobs one by one. The
    built-in adapters read their models from `catalog` (the default one when None).
    """
    from .catalog import load_extensions
    from .plugins import load_builtins, make_providers

    if catalog is None:
        load_extensions()
    providers: dict[str, Provider] = {name: builtin.make() for name, builtin in load_builtins().items()}
    if catalog is not None:
        for provider in providers.values():
            if hasattr(provider, "catalog"):
                provider.catalog = catalog
    for name, provider in make_providers().items():
        if name in providers:
            log.error("provider plugin '%s' refused: a plugin cannot replace the built-in provider '%s'", name, name)
            continue
        providers[name] = provider
    return providers


class Providers:
    """A name -> Provider table; built-ins by default, replaceable in tests."""

    def __init__(self, providers: dict[str, Provider] | None = None, *, catalog: Catalog | None = None) -> None:
        self._providers = providers if providers is not None else default_providers(catalog)
        self.catalog = catalog
        """The catalog the built-in adapters were given (None: the default one)."""

    def get(self, name: str | None) -> Provider | None:
        return self._providers.get(name or "local")

    def names(self) -> list[str]:
        return sorted(self._providers)
