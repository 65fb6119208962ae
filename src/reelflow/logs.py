"""Process logging: one line per record on stderr, JSON or text, with the execution and job it concerns,
and no secret in it.

`configure_logging(settings)` is what `reelflow serve`, `worker` and `demo` call. JSON lines carry `time`
(ISO 8601, UTC, milliseconds), `level`, `logger`, `message`, `execution_id` / `job_id` when the record was
logged while a job or an execution's request was handled, `exc_info` (the formatted traceback) when there
is one, and any `extra=` fields. The ids come from context variables: the worker sets them in each job's
task (`bind`), the API for requests about one execution (`RequestLogContext`), and `ContextFilter` copies
them onto every record.

Secrets are masked by `RedactingFilter` on the handler, before any formatter sees the record: the exact
values of secret-looking environment variables (provider tokens, webhook secrets, AWS keys, ...) and
those registered at run time (`add_secret`), plus patterns: Bearer and other Authorization values, `whsec_`
secrets, reelflow API keys, well-known provider token shapes, `token=` / `key=` / `signature=` style
parameters (signed URLs' `X-Amz-Signature` included), and passwords in URLs. The patterns mask values, not
code: in a traceback's source lines `key=lambda p: p.at`, `token=self.token` or `"Authorization": auth`
stay as they are (`reads_as_code`).
"""

from __future__ import annotations

import contextvars
import json
import keyword
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from .config import Settings

REDACTED = "[REDACTED]"
MIN_SECRET_LEN = 8
"""Exact values shorter than this are not masked as such (masking 'abc' everywhere would garble logs);
the patterns still apply to them."""

LEVEL_NAMES = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
NOISY_LOGGERS = ("httpx", "httpcore", "hpack", "h2", "h11", "urllib3", "botocore", "boto3", "s3transfer",
                 "aiobotocore", "s3fs", "fsspec", "asyncio", "multipart", "python_multipart", "psycopg.pool")
"""Libraries held at WARNING (their DEBUG lines print requests and headers) unless REELFLOW_LOG_LEVEL
names them, as in `DEBUG,httpx=DEBUG`."""
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")

SECRET_ENV = ("REPLICATE_API_TOKEN", "FAL_KEY", "ELEVENLABS_API_KEY", "OPENAI_API_KEY", "REPLICATE_WEBHOOK_SECRET",
              "OPENAI_WEBHOOK_SECRET", "REELFLOW_API_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "PGPASSWORD")
SECRET_ENV_NAME = re.compile(r"(?:TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIALS?)$", re.IGNORECASE)
"""Any other environment variable whose name ends like this holds a secret too (a plugin's credential)."""

execution_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("reelflow_execution_id", default=None)
job_key_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("reelflow_job_key", default=None)


def bind(*, execution_id: str | None = None, job_key: str | None = None) -> None:
    """Tag what the current context (an asyncio task, a thread) logs from now on with this execution id and
    job key (the plan's key of the job; records carry it as `job_id`).

    Set it inside the task that does the work: a task copies the context when it is created, so a value set
    there stays in that task (and the tasks it creates) and never reaches the others."""
    if execution_id is not None:
        execution_id_var.set(execution_id)
    if job_key is not None:
        job_key_var.set(job_key)


# ---------------------------------------------------------------------------------------------- redaction

_NOT_DONE = r"(?!\[REDACTED\])"  # a value already masked is left as it is

_WORDS = ("token", "key", "sig", "secret", "passw", "credential")

_KEYWORDS = frozenset(keyword.kwlist)
_NAME_PATH = re.compile(r"[A-Za-z_]+(?:\.[A-Za-z_]+)*")
"""`lambda`, `self._key`, `str.lower`: names without a digit (a generated secret nearly always has one)."""


def reads_as_code(value: str, before: str = "") -> bool:
    """True when the value of a `key=`, `token=`, `Authorization:` ... is code, not a secret: a traceback's
    `sorted(x, key=lambda p: p.at)`, `Client(token=self.token)`, `key=itemgetter(1)`, `f"...?key={key}"`.

    A keyword, a dotted name without digits (unless it is 20 letters or more, like a random token), a call,
    an index or a placeholder. In a URL's query (`before` is `?` or `&`) only a placeholder is code."""
    if value[:1] == "{":
        return True
    if before in ("?", "&"):
        return False
    if value in _KEYWORDS or any(c in value for c in "([{<>"):
        return True
    if value.isdigit():
        return len(value) < 8
    return _NAME_PATH.fullmatch(value) is not None and (len(value) < 20 or "_" in value or "." in value)


def _unless_code(group: int, masked: str) -> Callable[[re.Match[str]], str]:
    """A replacement that masks (`masked`, with group references) unless group `group` reads as code."""

    def replace(m: re.Match[str]) -> str:
        before = m.string[m.start() - 1] if m.start() else ""
        return m.group(0) if reads_as_code(m.group(group).strip(), before) else m.expand(masked)

    return replace


def _rule(
    pattern: str, replacement: _Replacement, *, any_of: tuple[str, ...] = (), all_of: tuple[str, ...] = ()
) -> _Rule:
    """A masking rule. `any_of` / `all_of`: lower-case substrings without which the pattern cannot match,
    tested first because they are far cheaper than the pattern (most lines skip most rules)."""
    return re.compile(pattern), replacement, all_of, any_of


_Replacement = str | Callable[[re.Match[str]], str]
_Rule = tuple[re.Pattern[str], _Replacement, tuple[str, ...], tuple[str, ...]]
_RULES: tuple[_Rule, ...] = (
    # an Authorization-like header or field, in any of the shapes it is printed in: `Authorization: Key x`,
    # `'authorization': 'Bearer x'`, `(b'authorization', b'Token x')`, `authorization=x`
    _rule(
        r"""(?i)((?:proxy-)?authorization|x-api-key|xi-api-key|api-key|x-goog-api-key)"""
        r"""(['"]?\s*[:=,]\s*[(\[]?\s*(?:b?['"])?)""" + _NOT_DONE + r"""([^'"\r\n,)\]}]+)""",
        _unless_code(3, rf"\1\2{REDACTED}"),
        any_of=("authorization", "api-key"),
    ),
    _rule(r"(?i)\b(bearer)(\s+)" + _NOT_DONE + r"[A-Za-z0-9._~+/=-]{8,}", rf"\1\2{REDACTED}", any_of=("bearer",)),
    _rule(r"\b(Basic)(\s+)[A-Za-z0-9+/=]{8,}", rf"\1\2{REDACTED}", any_of=("basic",)),
    _rule(r"whsec_[A-Za-z0-9+/=_-]+", REDACTED, any_of=("whsec_",)),
    _rule(r"rf_[0-9a-f]{12}_[A-Za-z0-9_-]{20,64}", REDACTED, any_of=("rf_",)),  # reelflow API keys (keys.KEY_RE)
    _rule(
        r"\b(?:r8_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|sk_[A-Za-z0-9]{20,})", REDACTED, any_of=("r8_", "sk-", "sk_")
    ),
    # name=value where the name ends like a secret: signed URLs (X-Amz-Signature, X-Amz-Credential,
    # X-Amz-Security-Token, Signature, sig), token=, key=, api_key=, password=, ...
    _rule(
        r"(?i)(?<![A-Za-z0-9_.-])([A-Za-z0-9_.-]*(?:token|key|signature|secret|password|passwd|credential|sig))="
        + _NOT_DONE
        + r"([^&\s'\"#,;)}\]]+)",
        _unless_code(2, rf"\1={REDACTED}"),
        all_of=("=",),
        any_of=_WORDS,
    ),
    # "password": "x", 'api_key': 'x' in JSON or a dict's repr
    _rule(
        r"""(?i)(['"][A-Za-z0-9_.-]*(?:token|secret|password|passwd|api[_-]?key|signature|credential)['"]\s*:\s*['"])"""
        + _NOT_DONE
        + r"""([^'"]*)""",
        rf"\1{REDACTED}",
        any_of=_WORDS,
    ),
    # a password in a URL: scheme://user:password@host
    _rule(
        r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@'\"]*:)" + _NOT_DONE + r"([^\s/@'\"]+)(@)",
        rf"\1{REDACTED}\3",
        all_of=("://", "@"),
    ),
)
_ANY_TRIGGER = re.compile(
    "|".join(sorted({re.escape(t) for _, _, all_of, any_of in _RULES for t in (any_of or all_of[:1])}))
)
"""One search of the lower-cased text that tells whether any rule could match at all (usually none can)."""


class Redactor:
    """Masks known secret values and secret-shaped text."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._exact: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: str | None) -> None:
        if not value or len(value) < MIN_SECRET_LEN or value in self._values:
            return
        with self._lock:
            self._values.add(value)
            # longest first, so a secret that contains another is masked whole
            alternatives = sorted(self._values, key=len, reverse=True)
            self._exact = re.compile("|".join(re.escape(v) for v in alternatives))

    def forget_all(self) -> None:
        with self._lock:
            self._values.clear()
            self._exact = None

    def redact(self, text: str) -> str:
        exact = self._exact
        if exact is not None:
            text = exact.sub(REDACTED, text)
        lower = text.lower()
        if _ANY_TRIGGER.search(lower) is None:
            return text
        for pattern, replacement, all_of, any_of in _RULES:
            if all(t in lower for t in all_of) and (not any_of or any(t in lower for t in any_of)):
                text = pattern.sub(replacement, text)
        return text


_redactor = Redactor()


def add_secret(value: str | None) -> None:
    """Never log `value` (an API key just made, a secret fetched at run time): it is masked wherever it appears."""
    _redactor.add(value)


def redact(text: str) -> str:
    """`text` with every known secret and secret-shaped part replaced by `[REDACTED]`."""
    return _redactor.redact(text)


def secrets_from_environment(env: Mapping[str, str]) -> list[str]:
    """The values of the environment's secret-named variables (providers read their credentials from the
    environment only, so a `.env` file holds none of theirs; the database URL's password is added apart)."""
    return [v for k, v in env.items() if k in SECRET_ENV or SECRET_ENV_NAME.search(k)]


def _clean(value: Any, depth: int = 0) -> Any:
    """An `extra=` value made JSON-ready, its text redacted."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    if depth < 4 and isinstance(value, Mapping):
        return {str(k): _clean(v, depth + 1) for k, v in value.items()}
    if depth < 4 and isinstance(value, list | tuple | set | frozenset):
        return [_clean(v, depth + 1) for v in value]
    return redact(str(value))


_STANDARD_ATTRS = frozenset(logging.LogRecord("x", 0, "x", 0, "x", None, None).__dict__) | {
    "message", "asctime", "taskName", "execution_id", "job_id",
    "color_message",  # uvicorn's copy of the message with terminal colours
}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's `extra=` fields (names not starting with `_`)."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class RedactingFilter(logging.Filter):
    """Rewrites a record so that nothing a formatter prints holds a secret: the message (formatted once,
    then masked), the traceback, the stack, and every `extra=` field."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_reelflow_redacted", False):
            return True
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            fields = ("client_addr", "http_method", "http_path", "http_version", "http_status")
            record.__dict__.update(zip(fields, record.args, strict=True))
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what there is rather than lose the line
            message = f"{record.msg!s} {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in extra_fields(record).items():
            setattr(record, key, _clean(value))
        record.__dict__["_reelflow_redacted"] = True
        return True


class ContextFilter(logging.Filter):
    """Copies the context's execution and job ids onto the record (an explicit `extra=` id wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "execution_id", None) is None:
            record.__dict__["execution_id"] = execution_id_var.get()
        if getattr(record, "job_id", None) is None:
            record.__dict__["job_id"] = job_key_var.get()
        return True


# ---------------------------------------------------------------------------------------------- formats


def iso_time(created: float) -> str:
    """`2026-11-24T12:00:57.123Z`."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("execution_id", "job_id"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = record.stack_info
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`2026-11-24T12:00:57.123Z WARNING reelflow.worker message [execution=… job=…] key=value …`."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{iso_time(record.created)} {record.levelname} {record.name} {record.getMessage()}"
        ids = [f"{name}={value}" for name, value in (("execution", getattr(record, "execution_id", None)),
                                                      ("job", getattr(record, "job_id", None))) if value]
        if ids:
            line += f" [{' '.join(ids)}]"
        extras = extra_fields(record)
        if extras:
            line += " " + " ".join(f"{k}={json.dumps(v, ensure_ascii=False, default=str)}" for k, v in extras.items())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


# ---------------------------------------------------------------------------------------------- set-up


def parse_level(text: str) -> tuple[int, dict[str, int]]:
    """`INFO` or `DEBUG,httpx=DEBUG,reelflow.api=WARNING`: the root level and per-logger levels.

    A ValueError says exactly which part is wrong."""
    choices = ", ".join(LEVEL_NAMES[:-1]) + " or " + LEVEL_NAMES[-1]
    root: int | None = None
    loggers: dict[str, int] = {}
    if not text.strip():  # an empty variable means the default
        return logging.INFO, loggers
    for part in (p.strip() for p in text.split(",")):
        name, eq, level = part.rpartition("=")
        name, level = name.strip(), (level if eq else part).strip()
        if eq and not name:
            raise ValueError(f"{part!r} names no logger before '='")
        if level.upper() not in LEVEL_NAMES:
            if eq:
                raise ValueError(f"{level!r} is not a log level (for logger {name!r}): use {choices}")
            raise ValueError(f"{level!r} is not a log level: use {choices}, then optionally ',logger=LEVEL' parts")
        value = logging.getLevelNamesMapping()[level.upper()]
        if eq:
            loggers[name] = value
        elif root is not None:
            raise ValueError(f"{text!r} gives the overall level twice: give it once, then ',logger=LEVEL' parts")
        else:
            root = value
    return (logging.INFO if root is None else root), loggers


def default_format(service: bool, stream: IO[str]) -> str:
    """JSON for `serve` and `worker` when stderr is not a terminal (a container, a log collector); text else."""
    isatty = getattr(stream, "isatty", None)
    return "json" if service and not (callable(isatty) and isatty()) else "text"


def configure_logging(
    settings: Settings,
    *,
    service: bool = False,
    stream: IO[str] | None = None,
    environ: Mapping[str, str] | None = None,
    extra_secrets: Iterable[str] = (),
) -> logging.Handler:
    """Send every log record to `stream` (stderr), formatted as REELFLOW_LOG_FORMAT says (see
    `default_format`), at REELFLOW_LOG_LEVEL (for a command other than a `service`, at WARNING unless that
    is set), with context ids added and secrets masked. Replaces the handler an earlier call installed;
    returns the new one."""
    stream = stream if stream is not None else sys.stderr
    level, per_logger = parse_level(settings.log_level)
    if not service and "log_level" not in settings.model_fields_set:
        level = max(level, logging.WARNING)  # `demo` and the like stay quiet unless asked
    fmt = settings.log_format or default_format(service, stream)
    env = os.environ if environ is None else environ
    for value in secrets_from_environment(env):
        add_secret(value)
    add_secret(urlsplit(settings.database_url).password)
    add_secret(getattr(settings, "metrics_token", None))
    for value in extra_secrets:
        add_secret(value)

    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    handler._reelflow = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_reelflow", False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if level < logging.WARNING else logging.NOTSET)
    for name in UVICORN_LOGGERS:  # their records reach our handler through the root, formatted like ours
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
        lg.setLevel(logging.NOTSET)
    for name, named_level in per_logger.items():
        logging.getLogger(name).setLevel(named_level)
    logging.captureWarnings(True)  # Python warnings become records too, so a JSON stream stays JSON
    return handler


# ---------------------------------------------------------------------------------------------- the API

_EXECUTION_PATH = re.compile(r"^/v1/executions/([A-Za-z0-9_-]{1,100})(?:/|$)")


class RequestLogContext:
    """ASGI middleware: a request about one execution (`/v1/executions/{id}…`, a provider callback's
    `?execution=…&job=…`) logs with its ids, uvicorn's access line included.

    The ids are not reset afterwards on purpose: uvicorn runs each request in a task of its own, so they
    cannot reach another request, and the error handler that runs outside this middleware still sees them."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            path = scope.get("path", "")
            if m := _EXECUTION_PATH.match(path):
                bind(execution_id=m.group(1))
            elif path.startswith("/v1/providers/") and scope.get("query_string"):
                query = parse_qs(scope["query_string"].decode("latin-1"))
                execution, job = query.get("execution", [None])[0], query.get("job", [None])[0]
                bind(execution_id=execution[:100] if execution else None, job_key=job[:100] if job else None)
        await self.app(scope, receive, send)
