"""What a provider says about itself, read without running it: `ProviderInfo`, carried by each adapter class."""

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
