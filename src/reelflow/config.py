"""Settings from the environment (and a `.env` file), under the names the README's "Configuration" lists."""

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
    """Base URL of artifact links and provider callbacks. Unset: `serve` makes it the address and port it listens
    on (`public_url_for`); other commands keep this default."""
    link_seconds: int = Field(default=7 * 86400, ge=1, le=366 * 86400)
    """How long a signed artifact link (`?exp=&sig=`) opens, from the moment it is written into an answer."""
    link_secret: str | None = None
    """The HMAC secret of signed artifact links, the same in every API and worker process. Unset: a random
    secret kept in the database (made once by the first process that needs it); see docs/security.md."""
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
    ffmpeg_memory_mb: int = Field(default=1024, ge=32, le=1_048_576)
    """Memory cap of each ffmpeg process in MB (its private memory: heap and thread stacks)."""
    ffmpeg_timeout_s: float = Field(default=1800.0, gt=0, le=7 * 86400)
    """Longest one ffmpeg run may take; a longer one is killed and its job fails."""
    ffmpeg_concurrency: int | None = Field(default=None, ge=1, le=4096)
    """ffmpeg operations running at once in one worker process (probes not counted). Unset: the core count."""
    probe_in_process: bool = True
    """Probe files (duration, streams) with PyAV's FFmpeg inside the worker process when PyAV is installed, instead
    of an ffmpeg run per batch of files; off: every probe is an ffmpeg run under the caps."""
    local_timeout_s: float = Field(default=1800.0, gt=0, le=30 * 86400)
    """The `timeout_s` of a local job (ffmpeg in the worker) whose plan sets none."""
    local_work_budget: float = Field(default=40_000.0, gt=0, le=1e12, allow_inf_nan=False)
    """Megapixel-frames (width x height x frames / 10^6) one local operation may encode, and may decode."""
    concat_max_inputs: int = Field(default=200, ge=1, le=100_000)
    """Inputs one `concat` job may join."""
    caption_max_cues: int = Field(default=5000, ge=1, le=10_000_000)
    """Caption cues (timed lines) one `captions` job may burn."""
    caption_max_bytes: int = Field(default=1_000_000, ge=1, le=1_000_000_000)
    """Bytes of caption text (srt, text, segments or words) one `captions` job may take."""
    log_level: str = "INFO"
    """DEBUG, INFO, WARNING, ERROR or CRITICAL, optionally followed by per-logger levels: `DEBUG,httpx=DEBUG`."""
    log_format: Literal["json", "text"] | None = None
    """Unset: JSON lines for `serve` and `worker` when stderr is not a terminal, text otherwise."""
    callbacks: bool | None = None
    """Ask providers to call `POST {public_url}/v1/providers/{p}/callback` when work ends. Unset: on when
    REELFLOW_PUBLIC_URL is set (the default URL is only reachable from this machine)."""
    http_read_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """`serve`: the time a client has to send a request's headers and body; a slower one is disconnected."""
    http_max_connections: int = Field(default=1000, ge=1, le=1_000_000)
    """`serve`: open connections one process accepts; more are answered 503 and closed."""
    metrics_addr: str | None = None
    """`serve`: `host:port` of a listener of its own for `/metrics` (then not on the API port)."""
    metrics_token: str | None = None
    """When set, `/metrics` answers only requests with `Authorization: Bearer <this token>`."""

    @field_validator("metrics_addr", "metrics_token", "link_secret", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return (value.strip() or None) if isinstance(value, str) else value

    @field_validator("metrics_addr")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            split_host_port(value)  # a ValueError says what is wrong
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _allowed_hosts(cls, value: str) -> str:
        if value.strip():  # `net` loads httpx: not for the usual empty value
            from .net import parse_allowed_hosts

            parse_allowed_hosts(value)  # a ValueError names the entry it cannot read
        return value.strip()

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.strip() in ("INFO", ""):  # the default: `logs` (its masking rules) is not loaded to say so
            return value.strip()
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


def public_url_for(host: str, port: int, settings: Settings) -> Settings:
    """The settings `serve --host H --port P` runs with: unless REELFLOW_PUBLIC_URL is set, `public_url` is
    `http://H:P`, an every-interface address (`0.0.0.0`, `::`, empty) written as 127.0.0.1, the one address
    sure to reach it from this machine (set REELFLOW_PUBLIC_URL for other machines). A link made before
    `serve` knew its port would point elsewhere; REELFLOW_PUBLIC_URL still counts as set (callbacks)."""
    if "public_url" in settings.model_fields_set:
        return settings
    host = host.strip().strip("[]")
    if host in ("", "0.0.0.0", "::", "*"):
        host = "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    served = settings.model_copy(update={"public_url": f"http://{shown}:{port}"})
    served.__pydantic_fields_set__.discard("public_url")  # still the default: callbacks stay off
    return served


def split_host_port(value: str) -> tuple[str, int]:
    """`127.0.0.1:9100`, `[::1]:9100`, `:9100` (every address) -> (host, port); a ValueError otherwise."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port (like 127.0.0.1:9100)")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if ":" in host and not value.strip().startswith("["):
        raise ValueError(f"{value!r}: write an IPv6 address in brackets, like [::1]:9100")
    return host or "0.0.0.0", int(port)


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
