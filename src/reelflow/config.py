"""Settings from the environment (and a `.env` file), as SPEC §4 names them."""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import quote, urlencode

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of reelflow; environment variables are `REELFLOW_<NAME>` unless noted."""

    model_config = SettingsConfigDict(env_prefix="REELFLOW_", env_file=".env", extra="ignore")

    database_url: str = "sqlite:///./.reelflow/reelflow.db"
    storage_url: str = "file://./.reelflow/artifacts"
    public_url: str = "http://127.0.0.1:8000"
    limits_file: str | None = None
    catalog_file: str | None = None
    """A YAML file of extra models (see examples/catalog.yaml), loaded when the catalog is first used."""
    lease_seconds: float = Field(default=60.0, gt=0)
    allow_private_urls: bool = False
    retry_base_s: float = Field(default=1.0, ge=0)
    """First retry's backoff ceiling; doubles per attempt (full jitter), capped at `retry_max_s`."""
    retry_max_s: float = Field(default=300.0, ge=0)
    poll_interval_s: float = Field(default=0.1, gt=0)
    """How often an idle worker looks for new work in the database."""
    log_level: str = "INFO"
    callbacks: bool | None = None
    """Ask providers to call `POST {public_url}/v1/providers/{p}/callback` when work ends. Unset: on when
    REELFLOW_PUBLIC_URL is set (the default URL is only reachable from this machine)."""

    @property
    def callbacks_enabled(self) -> bool:
        if self.callbacks is not None:
            return self.callbacks
        return "public_url" in self.model_fields_set

    def callback_url(self, provider: str, execution_id: str, job_key: str) -> str:
        """Where `provider` should report on one job's work."""
        query = urlencode({"execution": execution_id, "job": job_key})
        return f"{self.public_url.rstrip('/')}/v1/providers/{quote(provider, safe='')}/callback?{query}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
