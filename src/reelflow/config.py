"""Settings from the environment (and a `.env` file), as SPEC §4 names them."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal
from urllib.parse import quote, urlencode

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of reelflow; environment variables are `REELFLOW_<NAME>` unless noted."""

    model_config = SettingsConfigDict(env_prefix="REELFLOW_", env_file=".env", extra="ignore")

    database_url: str = "sqlite:///./.reelflow/reelflow.db"
    database_pool_size: int = Field(default=10, ge=1, le=1000)
    """PostgreSQL: most connections one process holds (its API requests, worker and webhook loops share them),
    plus one for LISTEN. Size the server's max_connections for every process's pool."""
    storage_url: str = "file://./.reelflow/artifacts"
    public_url: str = "http://127.0.0.1:8000"
    limits_file: str | None = None
    catalog_file: str | None = None
    """A YAML file of extra models (see examples/catalog.yaml), loaded when the catalog is first used."""
    lease_seconds: float = Field(default=60.0, gt=0)
    allow_private_urls: bool = False
    """Development switch: the egress guard lets every destination through (see `reelflow.net`)."""
    allowed_hosts: str = ""
    """Destinations the egress guard lets through besides public addresses: a comma list of `host` (any
    port) or `host:port` (that port only), matched exactly; IPv6 addresses in brackets."""
    retry_base_s: float = Field(default=1.0, ge=0)
    """First retry's backoff ceiling; doubles per attempt (full jitter), capped at `retry_max_s`."""
    retry_max_s: float = Field(default=300.0, ge=0)
    poll_interval_s: float = Field(default=0.1, gt=0)
    """How often an idle worker looks for new work in the database."""
    log_level: str = "INFO"
    """DEBUG, INFO, WARNING, ERROR or CRITICAL, optionally followed by per-logger levels: `DEBUG,httpx=DEBUG`."""
    log_format: Literal["json", "text"] | None = None
    """Unset: JSON lines for `serve` and `worker` when stderr is not a terminal, text otherwise."""
    callbacks: bool | None = None
    """Ask providers to call `POST {public_url}/v1/providers/{p}/callback` when work ends. Unset: on when
    REELFLOW_PUBLIC_URL is set (the default URL is only reachable from this machine)."""

    @field_validator("allowed_hosts")
    @classmethod
    def _allowed_hosts(cls, value: str) -> str:
        from .net import parse_allowed_hosts

        parse_allowed_hosts(value)  # a ValueError names the entry it cannot read
        return value.strip()

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        from .logs import parse_level

        parse_level(value)  # a ValueError names the bad part
        return value.strip()

    @field_validator("log_format", mode="before")
    @classmethod
    def _format_lower(cls, value: object) -> object:
        return value.strip().lower() or None if isinstance(value, str) else value

    @property
    def callbacks_enabled(self) -> bool:
        if self.callbacks is not None:
            return self.callbacks
        return "public_url" in self.model_fields_set

    def callback_url(self, provider: str, execution_id: str, job_key: str) -> str:
        """Where `provider` should report on one job's work."""
        query = urlencode({"execution": execution_id, "job": job_key})
        return f"{self.public_url.rstrip('/')}/v1/providers/{quote(provider, safe='')}/callback?{query}"


class SettingsError(ValueError):
    """The environment (or `.env`) holds a value Settings refuses; the message names each variable."""


def describe_settings_error(exc: ValidationError) -> str:
    """`REELFLOW_LOG_LEVEL='LOUD': 'LOUD' is not a log level: …`, one line per problem."""
    lines = []
    for error in exc.errors():
        loc = error.get("loc") or ("?",)
        name = "REELFLOW_" + str(loc[0]).upper()
        msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"{name}={error.get('input')!r}: {msg}" if "input" in error else f"{name}: {msg}")
    return "invalid configuration: " + "; ".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once; a bad value is a SettingsError naming its variable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(describe_settings_error(exc)) from None
