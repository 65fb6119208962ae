"""Structured logs: JSON lines with the execution and job being handled, and no secret in any line."""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import WorkerFactory, sim_job
from fakes.replicate import FakeReplicate
from reelflow import logs
from reelflow.config import Settings
from reelflow.engine.scheduler import Engine
from reelflow.providers.base import PermanentError, ProgressReporter, ProviderResult, Task, TransientError
from reelflow.providers.replicate import ReplicateProvider
from reelflow.providers.sim import SimProvider

CLI = [sys.executable, "-m", "reelflow.cli"]
ISO_MS_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
REQUIRED = ("time", "level", "logger", "message")


class RawRecords(logging.Handler):
    """Everything logged, before redaction: installed ahead of reelflow's handler, so it proves that a
    secret really went through the logging calls (the assertions on the redacted output are not vacuous)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        parts = [record.getMessage(), repr(logs.extra_fields(record))]
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
        self.texts.append("\n".join(parts))


class Captured:
    def __init__(self, stream: io.StringIO, raw: RawRecords) -> None:
        self.stream = stream
        self.raw = raw

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def entries(self) -> list[dict[str, Any]]:
        """Every line parsed as JSON (a line that is not JSON fails the test here)."""
        out = []
        for line in self.text.splitlines():
            entry = json.loads(line)
            assert isinstance(entry, dict), line
            out.append(entry)
        return out


CaptureFactory = Callable[..., Captured]


@pytest.fixture
def capture_logs(settings: Settings) -> Iterator[CaptureFactory]:
    """`capture_logs(level=…, fmt=…)`: reelflow's own logging set-up, writing into a buffer; undone afterwards."""
    root = logging.getLogger()
    before_level, before_handlers = root.level, list(root.handlers)
    named = {n: logging.getLogger(n) for n in (*logs.NOISY_LOGGERS, *logs.UVICORN_LOGGERS, "httpx", "httpcore")}
    saved = {n: (lg.level, lg.propagate, list(lg.handlers)) for n, lg in named.items()}

    def start(level: str = "DEBUG", fmt: str = "json") -> Captured:
        raw = RawRecords()
        root.addHandler(raw)
        stream = io.StringIO()
        configured = settings.model_copy(update={"log_level": level, "log_format": fmt})
        logs.configure_logging(configured, service=True, stream=stream)
        return Captured(stream, raw)

    yield start
    for h in list(root.handlers):
        if h not in before_handlers:
            root.removeHandler(h)
    root.setLevel(before_level)
    for n, (level, propagate, handlers) in saved.items():
        named[n].setLevel(level)
        named[n].propagate = propagate
        named[n].handlers[:] = handlers
    logging.captureWarnings(False)
    logs._redactor.forget_all()


def check_required(entry: dict[str, Any]) -> None:
    for field in REQUIRED:
        assert isinstance(entry.get(field), str) and entry[field], (field, entry)
    assert ISO_MS_UTC.match(entry["time"]), entry["time"]
    assert entry["level"] in logs.LEVEL_NAMES, entry


# ---------------------------------------------------------------------------------------------- (a) JSON lines


class ChattyProvider(SimProvider):
    """The simulated provider, logging from inside `wait` (a task of its own, started by the job's task), and
    failing job `bug` with an error of ours (an exception the worker logs with its traceback)."""

    async def submit(self, task: Task) -> str:
        if task.job_id == "bug":
            raise RuntimeError("a bug in a provider adapter")
        return await super().submit(task)

    async def wait(self, task: Task, provider_id: str, report: ProgressReporter) -> ProviderResult:
        logging.getLogger("tests.chatty").info("waiting on %s for %s", provider_id, task.job_id)
        return await super().wait(task, provider_id, report)


async def test_json_lines_name_the_execution_and_job_they_were_logged_for(
    engine: Engine, running_worker: WorkerFactory, capture_logs: CaptureFactory
) -> None:
    captured = capture_logs("DEBUG", "json")
    plan = {
        "jobs": [
            sim_job("flaky", latency_s=0.05, fail_times=1),
            sim_job("after", latency_s=0.06, depends_on=["flaky"]),
            sim_job("bug", latency_s=0, max_attempts=1),
        ],
        "options": {"on_failure": "continue"},
    }
    eid = await engine.submit(plan)
    other = await engine.submit({"jobs": [sim_job("solo", latency_s=0.05)]})
    async with running_worker(providers_={"sim": ChattyProvider()}):
        state = await engine.wait(eid, timeout=20)
        assert (await engine.wait(other, timeout=20))["status"] == "succeeded"
    jobs = {j["id"]: j for j in state["jobs"]}
    assert jobs["flaky"]["status"] == jobs["after"]["status"] == "succeeded"
    assert jobs["flaky"]["attempts"] == 2 and jobs["bug"]["status"] == "failed"

    entries = captured.entries()
    assert len(entries) >= 8
    for entry in entries:
        check_required(entry)

    [retry] = [e for e in entries if "retrying in" in e["message"]]
    assert retry["level"] == "WARNING" and retry["logger"] == "reelflow.worker"
    assert (retry["execution_id"], retry["job_id"]) == (eid, "flaky")
    assert retry["attempt"] == 1 and isinstance(retry["retry_in_s"], float)
    assert "sim: transient failure 1 of 1" in retry["message"]

    [crash] = [e for e in entries if "unexpected error" in e["message"]]
    assert (crash["execution_id"], crash["job_id"], crash["level"]) == (eid, "bug", "ERROR")
    assert crash["exc_info"].startswith("Traceback")
    assert "RuntimeError: a bug in a provider adapter" in crash["exc_info"]
    [failed] = [e for e in entries if e["message"].endswith("gave up after 1 attempts)")]
    assert (failed["execution_id"], failed["job_id"]) == (eid, "bug")

    # the provider's own line, logged in a task the job's task started, names the job too; every job once
    chatty = [e for e in entries if e["logger"] == "tests.chatty"]
    assert sorted((e["execution_id"], e["job_id"]) for e in chatty) == sorted(
        [(eid, "flaky"), (eid, "after"), (other, "solo")]
    )
    assert all(e["message"].endswith(f"for {e['job_id']}") for e in chatty)
    done = [e for e in entries if e["level"] == "DEBUG" and e["message"].endswith(" succeeded")]
    assert sorted(e["job_id"] for e in done) == ["after", "flaky", "solo"]
    assert all(e["message"] == f"job {e['execution_id']}/{e['job_id']} succeeded" for e in done)

    # lines about no job in particular carry no ids
    [stopping] = [e for e in entries if "stopping: no new claims" in e["message"]]
    assert "execution_id" not in stopping and "job_id" not in stopping


def test_text_format_and_the_default_choice(settings: Settings, capture_logs: CaptureFactory) -> None:
    captured = capture_logs("INFO", "text")
    logs.bind(execution_id="ex_text1", job_key="clip")  # this test's context only
    logging.getLogger("reelflow.test").warning("about %d things", 3, extra={"attempt": 2})
    logging.getLogger("reelflow.test").debug("not shown at INFO")
    [line] = captured.text.splitlines()
    assert re.match(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING reelflow.test about 3 things \[execution=ex_text1 job=clip\] "
        r"attempt=2$",
        line,
    ), line

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert logs.default_format(service=True, stream=io.StringIO()) == "json"
    assert logs.default_format(service=True, stream=Tty()) == "text"
    assert logs.default_format(service=False, stream=io.StringIO()) == "text"


# ---------------------------------------------------------------------------------------------- (b) secrets


def provider_secrets() -> dict[str, str]:
    """Credentials in no well-known shape, so only their exact values can mask them."""
    return {
        "REPLICATE_API_TOKEN": "rpl" + secrets.token_hex(16),
        "FAL_KEY": f"{uuid.uuid4()}:{secrets.token_hex(16)}",
        "ELEVENLABS_API_KEY": "el" + secrets.token_hex(16),
        "OPENAI_API_KEY": "oa" + secrets.token_hex(16),
        "REPLICATE_WEBHOOK_SECRET": "whsec_" + secrets.token_urlsafe(24),
        "OPENAI_WEBHOOK_SECRET": "whsec_" + secrets.token_urlsafe(24),
        "ACME_PLUGIN_TOKEN": "ac" + secrets.token_hex(12),  # a plugin's credential: found by its name
    }


SECRET_NAMES = tuple(provider_secrets())


class LeakyProvider(SimProvider):
    """A careless adapter: its errors and debug lines quote credentials, headers and a signed URL."""

    def __init__(self, env: dict[str, str], signed_url: str) -> None:
        super().__init__()
        self.env = env
        self.signed_url = signed_url
        self.log = logging.getLogger("tests.leaky")

    async def submit(self, task: Task) -> str:
        env = self.env
        if task.job_id == "echo-key":
            raise RuntimeError(f"client built with FAL_KEY={env['FAL_KEY']} and {env['ACME_PLUGIN_TOKEN']}")
        if task.attempt == 1:
            raise TransientError(f"upstream 401, Authorization: Key {env['FAL_KEY']} (token {env['OPENAI_API_KEY']})")
        self.log.debug(
            "sending %s",
            {"url": self.signed_url, "headers": {"Authorization": f"Bearer {env['OPENAI_API_KEY']}"}},
            extra={"xi_api_key": env["ELEVENLABS_API_KEY"], "nested": {"list": [env["REPLICATE_WEBHOOK_SECRET"]]}},
        )
        raise PermanentError(
            f"elevenlabs refused xi-api-key {env['ELEVENLABS_API_KEY']}; signing secret "
            f"{env['OPENAI_WEBHOOK_SECRET']}; output at {self.signed_url}"
        )


async def test_no_secret_reaches_the_log_output(
    engine: Engine,
    running_worker: WorkerFactory,
    capture_logs: CaptureFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    env = provider_secrets()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    amz_signature = secrets.token_hex(32)
    signed_url = (
        "https://bucket.s3.amazonaws.com/out.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential=AKIAEXAMPLE%2F20261124&X-Amz-Signature={amz_signature}"
    )
    captured = capture_logs("DEBUG,httpx=DEBUG,httpcore=DEBUG", "json")  # HTTP clients' debug lines included
    token = env["REPLICATE_API_TOKEN"]
    with FakeReplicate(token=token, latency_s=0.05, queue_s=0) as fake:
        # a real Replicate job whose failure message echoes the token and the Authorization header
        fake.prediction_fails(f"token {token} is not allowed; got Authorization: Bearer {token}")
        replicate = ReplicateProvider(token, fake.base_url, poll_initial_s=0.05, poll_max_s=0.1)
        eid = await engine.submit(
            {
                "jobs": [
                    {"id": "img", "type": "generate-image", "model": "replicate/black-forest-labs/flux-schnell",
                     "params": {"prompt": "a sunset"}},
                    sim_job("leaky", latency_s=0, max_attempts=2),
                    sim_job("echo-key", latency_s=0, max_attempts=1),
                ],
                "options": {"on_failure": "continue"},
            }
        )
        leaky = LeakyProvider(env, signed_url)
        async with running_worker(providers_={"sim": leaky, "replicate": replicate}):
            state = await engine.wait(eid, timeout=30)
    jobs = {j["id"]: j for j in state["jobs"]}
    assert all(j["status"] == "failed" for j in jobs.values()), jobs
    assert token in jobs["img"]["error"], "the provider's message did echo the token"

    hidden = [*env.values(), amz_signature]
    raw = "\n".join(captured.raw.texts)
    for value in hidden:  # each secret went through a logging call...
        assert value in raw, f"the test never logged {value[:6]}…"
    out = captured.text
    for value in hidden:  # ...and none came out
        assert value not in out
    entries = captured.entries()
    for entry in entries:
        check_required(entry)
    assert any(e["logger"].startswith(("httpx", "httpcore")) for e in entries), "HTTP debug lines were captured"
    assert out.count(logs.REDACTED) >= len(hidden)
    failed_img = [e for e in entries if e.get("job_id") == "img" and "failed" in e["message"]]
    assert failed_img and all(logs.REDACTED in e["message"] for e in failed_img)
    [debug_line] = [e for e in entries if e["logger"] == "tests.leaky"]
    assert debug_line["xi_api_key"] == logs.REDACTED and debug_line["nested"] == {"list": [logs.REDACTED]}
    assert "X-Amz-Signature=[REDACTED]" in debug_line["message"] and "X-Amz-Algorithm=AWS4-HMAC-SHA256" in out
    [crash] = [e for e in entries if e.get("job_id") == "echo-key" and "exc_info" in e]
    assert "FAL_KEY=[REDACTED]" in crash["exc_info"] and "RuntimeError" in crash["exc_info"]


def test_patterns_mask_secrets_nobody_registered() -> None:
    api_key = f"rf_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    whsec = "whsec_" + secrets.token_urlsafe(32)
    pw = secrets.token_hex(8)
    cases = {
        f"GET /v1/x?key={api_key}&job=a": f"GET /v1/x?key={logs.REDACTED}&job=a",
        f"Authorization: Bearer {secrets.token_hex(10)}": f"Authorization: {logs.REDACTED}",
        f"[(b'authorization', b'Token {pw}')]": f"[(b'authorization', b'{logs.REDACTED}')]",
        f"secret {whsec}.": f"secret {logs.REDACTED}.",
        f"postgresql://app:{pw}@db:5432/x": f"postgresql://app:{logs.REDACTED}@db:5432/x",
        f'{{"password": "{pw}", "n": 1}}': f'{{"password": "{logs.REDACTED}", "n": 1}}',
        f"u?Signature={pw}&sig={pw}&access_token={pw}": f"u?Signature={logs.REDACTED}&sig={logs.REDACTED}"
        f"&access_token={logs.REDACTED}",
        "callback?execution=ex_1&job=clip": "callback?execution=ex_1&job=clip",  # nothing secret: unchanged
        "a basic plan for the bearer of news": "a basic plan for the bearer of news",
    }
    for text, expected in cases.items():
        assert logs.redact(text) == expected


CODE_LINES = [
    "    items.sort(key=lambda p: p.at)",
    "    return sorted(rows, key=itemgetter(1))",
    "    client = Client(token=self.token, api_key=api_key, secret=None, password=password)",
    '    url = f"{base}?key={key}&token={token}&X-Amz-Signature={sig}"',
    '    headers = {"Authorization": f"Bearer {token}", "x-api-key": api_key}',
    "    headers = {'Authorization': auth_header}",
    "    raise RuntimeError(f\"client built with FAL_KEY={env['FAL_KEY']}\")",
    "    cache_key=cache_key_of(job), sort_key=self._sort_key, key=str.lower, sig=0",
    "    request.headers[b'authorization'] = b'Bearer ' + token",
]


def test_code_is_left_alone() -> None:
    for line in CODE_LINES:
        assert logs.redact(line) == line


def test_every_secret_form_is_still_masked() -> None:
    hexed, urlsafe = secrets.token_hex(12), secrets.token_urlsafe(24)
    r = logs.REDACTED
    cases = {
        f"Authorization: Bearer {urlsafe}": f"Authorization: {r}",
        f"authorization: Key {hexed}": f"authorization: {r}",
        f"Authorization: {urlsafe}": f"Authorization: {r}",
        f"headers={{'Authorization': 'Token {hexed}'}}": f"headers={{'Authorization': '{r}'}}",
        f"sent Bearer {urlsafe} upstream": f"sent Bearer {r} upstream",
        f"Basic {secrets.token_hex(8)}": f"Basic {r}",
        f"the secret whsec_{urlsafe}": f"the secret {r}",
        f"token r8_{secrets.token_hex(16)} refused": f"token {r} refused",
        f"key sk-{secrets.token_hex(16)} refused": f"key {r} refused",
        f"key sk_{secrets.token_hex(16)} refused": f"key {r} refused",
        f"GET /out.mp4?key=abcdefgh&token={hexed}&n=1": f"GET /out.mp4?key={r}&token={r}&n=1",
        f"https://s3/x?X-Amz-Credential=AKIA%2F2026&X-Amz-Signature={hexed}": (
            f"https://s3/x?X-Amz-Credential={r}&X-Amz-Signature={r}"
        ),
        f"client(api_key={hexed}, token={urlsafe})": f"client(api_key={r}, token={r})",
        "login password=hunter2 refused": f"login password={r} refused",
        f"FAL_KEY={hexed}:{hexed}": f"FAL_KEY={r}",
        f"postgresql://app:{hexed}@db/x": f"postgresql://app:{r}@db/x",
        f'{{"api_key": "{hexed}"}}': f'{{"api_key": "{r}"}}',
        f"key={'A' * 24}": f"key={r}",  # letters only, but as long as a token: not a name
    }
    for text, expected in cases.items():
        assert logs.redact(text) == expected, text


def _sorted_by(rows: list[int], key: Callable[[int], int], token: str) -> list[int]:
    raise ValueError(f"upstream refused ?key={token}&sig={token} with Authorization: Bearer {token}")


def _leaky(token: str) -> list[int]:
    return _sorted_by([3, 1], key=lambda p: -p, token=token)


def test_a_traceback_keeps_its_code_and_loses_its_secrets(capture_logs: CaptureFactory) -> None:
    import inspect

    captured = capture_logs("INFO", "json")
    token = secrets.token_urlsafe(24)
    try:
        _leaky(token)
    except ValueError:
        logging.getLogger("tests.trace").exception("the call failed")
    [entry] = [e for e in captured.entries() if e["logger"] == "tests.trace"]
    trace = entry["exc_info"]
    assert token in "\n".join(captured.raw.texts) and token not in captured.text
    source = {line.strip() for fn in (_leaky, _sorted_by) for line in inspect.getsource(fn).splitlines()}
    shown = [line.strip() for line in trace.splitlines() if line.strip() in source]
    assert "return _sorted_by([3, 1], key=lambda p: -p, token=token)" in shown
    assert 'raise ValueError(f"upstream refused ?key={token}&sig={token} with Authorization: Bearer {token}")' in shown
    assert trace.splitlines()[-1] == (
        "ValueError: upstream refused ?key=[REDACTED]&sig=[REDACTED] with Authorization: [REDACTED]"
    )


def test_the_metrics_token_is_masked_wherever_it_appears(settings: Settings, capture_logs: CaptureFactory) -> None:
    token = "plain" + "words" * 3  # no digit, no known shape: only its exact value can mask it
    stream = io.StringIO()
    logs.configure_logging(settings.model_copy(update={"metrics_token": token}), service=True, stream=stream,
                           environ={})  # fmt: skip
    logging.getLogger("tests.metrics").warning("scraped with %s", token)
    assert stream.getvalue().count(logs.REDACTED) == 1 and token not in stream.getvalue()


# ---------------------------------------------------------------------------------------------- (c) processes


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_serve_process_writes_only_json_lines_without_secrets(worker_env: dict[str, str], tmp_path: Path) -> None:
    env = worker_env | provider_secrets() | {"REELFLOW_LOG_FORMAT": "json", "REELFLOW_LOG_LEVEL": "DEBUG"}
    env.pop("REELFLOW_API_KEY", None)
    made = subprocess.run([*CLI, "keys", "create", "--tenant", "acme", "--json"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    api_key, webhook_secret = key["api_key"], key["webhook_secret"]
    assert api_key not in made.stderr and webhook_secret not in made.stderr
    wrong_key = f"rf_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    token = env["REPLICATE_API_TOKEN"]

    port = free_port()
    errlog = (tmp_path / "serve.err").open("w+")
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port), "--workers", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=errlog)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.err").read_text()
            time.sleep(0.1)
        good = {"Authorization": f"Bearer {api_key}"}
        with httpx.Client(base_url=base, timeout=10) as http:
            plan = {"jobs": [sim_job("flaky", latency_s=0.05, fail_times=1)]}
            submitted = http.post("/v1/executions", json=plan, headers=good)
            assert submitted.status_code == 202, submitted.text
            eid = submitted.json()["id"]
            deadline = time.monotonic() + 30
            while http.get(f"/v1/executions/{eid}", headers=good).json()["status"] != "succeeded":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            # secrets where uvicorn's access line prints them: the query string
            assert http.get(f"/v1/executions/{eid}?token={token}&api_key={api_key}", headers=good).status_code == 200
            bad = http.get(f"/v1/executions/{eid}?key={wrong_key}", headers={"Authorization": f"Bearer {wrong_key}"})
            assert bad.status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 0
    err = (tmp_path / "serve.err").read_text()
    entries = [json.loads(line) for line in err.splitlines()]  # every line is JSON
    assert len(entries) >= 6
    for entry in entries:
        check_required(entry)
    for value in (api_key, webhook_secret, wrong_key, *(env[name] for name in SECRET_NAMES)):
        assert value not in err
    access = [e for e in entries if e["logger"] == "uvicorn.access"]
    [post] = [e for e in access if e.get("http_method") == "POST"]
    assert post["execution_id"] == eid and post["http_status"] == 202
    leaked_paths = [e for e in access if "token=" in e["http_path"]]
    assert [e["http_path"] for e in leaked_paths] == [
        f"/v1/executions/{eid}?token={logs.REDACTED}&api_key={logs.REDACTED}"
    ]
    assert leaked_paths[0]["execution_id"] == eid
    [refused] = [e for e in access if e["http_status"] == 401]
    assert refused["http_path"] == f"/v1/executions/{eid}?key={logs.REDACTED}"
    [retry] = [e for e in entries if "retrying in" in e["message"]]
    assert (retry["execution_id"], retry["job_id"]) == (eid, "flaky")
    assert any(e["logger"] == "uvicorn.error" and "Uvicorn running" in e["message"] for e in entries)


# ---------------------------------------------------------------------------------------------- (d) bad settings


@pytest.mark.parametrize(
    ("command", "variable", "value", "said"),
    [
        ("worker", "REELFLOW_LOG_LEVEL", "LOUD", "REELFLOW_LOG_LEVEL='LOUD': 'LOUD' is not a log level: use DEBUG"),
        ("serve", "REELFLOW_LOG_LEVEL", "INFO,httpx=NOISY", "'NOISY' is not a log level (for logger 'httpx')"),
        ("worker", "REELFLOW_LOG_FORMAT", "xml", "REELFLOW_LOG_FORMAT='xml': Input should be 'json' or 'text'"),
    ],
)
def test_a_bad_log_setting_is_a_precise_usage_error(
    worker_env: dict[str, str], command: str, variable: str, value: str, said: str
) -> None:
    proc = subprocess.run([*CLI, command], env=worker_env | {variable: value}, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert said in " ".join(proc.stderr.split()), proc.stderr
    assert "Traceback" not in proc.stderr


def test_log_level_parsing() -> None:
    assert logs.parse_level("info") == (logging.INFO, {})
    assert logs.parse_level(" WARNING , httpx=DEBUG,reelflow.api=error") == (
        logging.WARNING, {"httpx": logging.DEBUG, "reelflow.api": logging.ERROR}
    )
    assert logs.parse_level("") == (logging.INFO, {})
    for bad, said in [("INFO,DEBUG", "gives the overall level twice"), ("=DEBUG", "names no logger"),
                      ("verbose", "'verbose' is not a log level")]:
        with pytest.raises(ValueError, match=re.escape(said)):
            logs.parse_level(bad)
