"""What a provider says about itself, read without running it: `ProviderInfo`, carried by each adapter class;
the built-in providers' in `BUILTIN_INFO`, readable without importing their adapters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ProviderInfo:
    """A provider's description: its name, credential, default limits, what it reads, where its models are."""

    name: str
    """The `<provider>` of its model ids, and its name in the provider table."""
    key_env: str | None = None
    """The environment variable holding its credential (plans using it are refused while unset); None: no key."""
    default_limits: Mapping[str, float] | None = None
    """Its documented limits (`max_concurrent`, `requests_per_minute`, ...), the defaults the limits file
    (REELFLOW_LIMITS_FILE) overrides; None: it has no entry among the defaults."""
    reads_local_files: bool = False
    """It reads `task.inputs` (files on this machine) rather than URLs: only for such providers are our
    artifacts fetched to local files before a job runs."""
    paid: bool = False
    """Work there costs money: an attempt whose answer was lost is reconciled before it is paid again."""
    catalog: str | None = None
    """The module holding its built-in models and the input maps its adapter reads (a `providers.catalog`
    module); None for a provider whose models come from a plugin or the catalog file only."""


BUILTIN_INFO: dict[str, ProviderInfo] = {
    "local": ProviderInfo(name="local", reads_local_files=True, catalog="reelflow.providers.catalog.builtin"),
    "sim": ProviderInfo(name="sim", catalog="reelflow.providers.catalog.builtin"),
    "replicate": ProviderInfo(
        name="replicate",
        key_env="REPLICATE_API_TOKEN",
        default_limits={"requests_per_minute": 3000, "creates_per_minute": 600},
        paid=True,
        catalog="reelflow.providers.catalog.replicate",
    ),
    "fal": ProviderInfo(
        name="fal", key_env="FAL_KEY", default_limits={}, paid=True, catalog="reelflow.providers.catalog.fal"
    ),
    "elevenlabs": ProviderInfo(
        name="elevenlabs",
        key_env="ELEVENLABS_API_KEY",
        default_limits={"max_concurrent": 2},
        paid=True,
        catalog="reelflow.providers.catalog.elevenlabs",
    ),
    "openai": ProviderInfo(
        name="openai",
        key_env="OPENAI_API_KEY",
        default_limits={},
        reads_local_files=True,
        paid=True,
        catalog="reelflow.providers.catalog.openai",
    ),
    "google": ProviderInfo(
        name="google",
        key_env="GEMINI_API_KEY",
        default_limits={},
        reads_local_files=True,
        paid=True,
        catalog="reelflow.providers.catalog.google",
    ),
}
"""Each built-in provider's info, by name; its adapter class carries the same object as `info` (each
adapter's docstring next to it says where its default limits come from). Here so that what a submission
asks of a provider (its credential: `registry.missing_credential`) needs none of the adapters, which load
httpx, the webhook verifiers, the media helpers and the metrics."""
