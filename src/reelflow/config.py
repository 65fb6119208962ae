"""Settings from the environment (and a `.env` file), as SPEC §4 names them."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of reelflow; environment variables are `REELFLOW_<NAME>` unless noted."""

    model_config = SettingsConfigDict(env_prefix="REELFLOW_", env_file=".env", extra="ignore")

    database_url: str = "sqlite:///./.reelflow/reelflow.db"
    storage_url: str = "file://./.reelflow/artifacts"
    public_url: str = "http://127.0.0.1:8000"
    limits_file: str | None = None
    lease_seconds: float = Field(default=60.0, gt=0)
    allow_private_urls: bool = False
    retry_base_s: float = Field(default=1.0, ge=0)
    """First retry's backoff ceiling; doubles per attempt (full jitter), capped at `retry_max_s`."""
    retry_max_s: float = Field(default=300.0, ge=0)
    poll_interval_s: float = Field(default=0.1, gt=0)
    """How often an idle worker looks for new work in the database."""
    log_level: str = "INFO"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
