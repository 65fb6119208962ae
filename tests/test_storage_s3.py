"""S3 artifact storage against moto's S3 server on 127.0.0.1, and the deploy/ files (compose YAML, Dockerfile).

Every S3 request the storage's client sends is recorded (botocore's before-call event), so the tests can say
exactly which calls an operation made.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest
import s3fs
import yaml
from moto.server import ThreadedMotoServer

from reelflow.storage import BadKey, LocalStorage, S3Storage, StorageError, open_storage, parse_s3_url

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never reach for instance credentials
}
PUBLIC_URL = "http://api.example:8000"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in AWS_ENV.items():
            mp.setenv(name, value)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.stop()


@pytest.fixture
def aws_env(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("REELFLOW_S3_ENDPOINT_URL", "REELFLOW_S3_PUBLIC_BASE_URL", "REELFLOW_S3_PRESIGN_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    return endpoint


@pytest.fixture
def s3(aws_env: str) -> Any:
    """A plain boto3 client on the moto server, to look behind the storage's back."""
    return boto3.client("s3", endpoint_url=aws_env)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"art-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def calls(storage: S3Storage) -> list[str]:
    """A list that fills with the name of every S3 operation the storage's client sends from now on."""
    seen: list[str] = []

    def record(model: Any, **_: Any) -> None:
        seen.append(model.name)

    storage.fs.s3.meta.events.register("before-call.s3", record)
    return seen


def make(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def sha_key(data: bytes, suffix: str) -> str:
    digest = hashlib.sha256(data).hexdigest()
    return f"{digest[:2]}/{digest}{suffix}"


@pytest.fixture
def storage(aws_env: str, bucket: str) -> S3Storage:
    return S3Storage(bucket, "media/v1", PUBLIC_URL, endpoint_url=aws_env)


# --- uploads -----------------------------------------------------------------------------------------------


def test_put_uploads_under_the_content_key_with_its_content_type(
    storage: S3Storage, s3: Any, bucket: str, tmp_path: Path
) -> None:
    data = b"\x00\x01 not really an mp4"
    key = storage.put_file(make(tmp_path, "clip.MP4", data), ".MP4")
    assert key == sha_key(data, ".mp4")
    obj = s3.get_object(Bucket=bucket, Key=f"media/v1/{key}")
    assert obj["Body"].read() == data
    assert obj["ContentType"] == "video/mp4"
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in listed] == [f"media/v1/{key}"]
    assert storage.exists(key) is True
    assert storage.exists(sha_key(b"other", ".mp4")) is False
    assert storage.local_path(key) is None


def test_odd_suffixes_are_dropped_and_unknown_types_are_octet_stream(
    storage: S3Storage, s3: Any, bucket: str, tmp_path: Path
) -> None:
    key = storage.put_file(make(tmp_path, "x.weird", b"abc"), ".we/ird")
    assert key == sha_key(b"abc", "")
    assert s3.head_object(Bucket=bucket, Key=f"media/v1/{key}")["ContentType"] == "application/octet-stream"


def test_second_put_of_the_same_content_makes_no_upload(
    storage: S3Storage, s3: Any, bucket: str, tmp_path: Path
) -> None:
    seen = calls(storage)
    key = storage.put_file(make(tmp_path, "a.png", b"same bytes"), ".png")
    assert seen == ["HeadObject", "PutObject"]
    seen.clear()
    again = storage.put_file(make(tmp_path, "b.png", b"same bytes"), ".png")
    assert again == key
    assert seen == ["HeadObject"]  # looked, found, did not upload
    # and from the server's side: an object replaced behind our back is left alone by the second put
    s3.put_object(Bucket=bucket, Key=f"media/v1/{key}", Body=b"marker")
    storage.put_file(make(tmp_path, "c.png", b"same bytes"), ".png")
    assert s3.get_object(Bucket=bucket, Key=f"media/v1/{key}")["Body"].read() == b"marker"


def test_big_files_go_up_in_parts_and_come_back_whole(aws_env: str, bucket: str, tmp_path: Path) -> None:
    storage = S3Storage(bucket, "", PUBLIC_URL, endpoint_url=aws_env, part_size_mb=5)
    data = bytes(range(256)) * (11 * 4096)  # 11 MiB: 5 + 5 + 1
    seen = calls(storage)
    key = storage.put_file(make(tmp_path, "big.mov", data), ".mov")
    assert seen.count("CreateMultipartUpload") == 1
    assert seen.count("UploadPart") == 3
    assert seen.count("CompleteMultipartUpload") == 1
    assert "PutObject" not in seen
    got = storage.fetch_to(key, tmp_path / "in")
    assert got is not None and got.read_bytes() == data


def test_fetch_to_downloads_once_and_missing_keys_give_none(storage: S3Storage, tmp_path: Path) -> None:
    key = storage.put_file(make(tmp_path, "v.wav", b"RIFF....WAVE"), ".wav")
    seen = calls(storage)
    first = storage.fetch_to(key, tmp_path / "work")
    assert first is not None and first.parent == tmp_path / "work" and first.read_bytes() == b"RIFF....WAVE"
    assert seen == ["GetObject"]
    assert storage.fetch_to(key, tmp_path / "work") == first
    assert seen == ["GetObject"]  # the copy in the folder is reused
    assert storage.fetch_to(sha_key(b"nothing", ".wav"), tmp_path / "work") is None
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == [first.name]  # no temp file left behind


async def test_concurrent_puts_from_threads_do_not_block_the_loop(storage: S3Storage, tmp_path: Path) -> None:
    files = [make(tmp_path, f"f{i}.txt", f"file {i}".encode()) for i in range(6)]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    t = asyncio.ensure_future(ticker())
    keys = await asyncio.gather(*(asyncio.to_thread(storage.put_file, f, ".txt") for f in files))
    t.cancel()
    assert keys == [sha_key(f"file {i}".encode(), ".txt") for i in range(6)]
    assert all(await asyncio.gather(*(asyncio.to_thread(storage.exists, k) for k in keys)))
    assert ticks > 1


# --- URLs --------------------------------------------------------------------------------------------------


def test_presigned_url_fetches_the_bytes(storage: S3Storage, tmp_path: Path) -> None:
    key = storage.put_file(make(tmp_path, "p.jpg", b"jpeg bytes"), ".jpg")
    url = storage.url(key)
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path == f"/{storage.bucket}/media/v1/{key}"
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["604800"]  # 7 days by default
    r = httpx.get(url)
    assert r.status_code == 200
    assert r.content == b"jpeg bytes"
    assert r.headers["content-type"] == "image/jpeg"
    assert storage.key_from_url(url) == key


def test_presign_expiry_is_configurable_and_bounded(aws_env: str, bucket: str, tmp_path: Path) -> None:
    short = S3Storage(bucket, "", PUBLIC_URL, endpoint_url=aws_env, presign_seconds=600)
    key = short.put_file(make(tmp_path, "s.gif", b"GIF89a"), ".gif")
    assert parse_qs(urlsplit(short.url(key)).query)["X-Amz-Expires"] == ["600"]
    with pytest.raises(StorageError, match="presign_seconds must be between 1 and 604800"):
        S3Storage(bucket, "", PUBLIC_URL, endpoint_url=aws_env, presign_seconds=8 * 24 * 3600)


def test_public_base_url_form_needs_no_request(aws_env: str, bucket: str, tmp_path: Path) -> None:
    storage = S3Storage(
        bucket, "media/v1", PUBLIC_URL, endpoint_url=aws_env, public_base_url="https://cdn.example/assets/"
    )
    key = storage.put_file(make(tmp_path, "a.mp3", b"ID3"), ".mp3")
    seen = calls(storage)
    url = storage.url(key)
    assert url == f"https://cdn.example/assets/media/v1/{key}"
    assert seen == []
    assert storage.key_from_url(url) == key
    assert storage.key_from_url(f"https://cdn.example/assets/other/{key}") is None
    assert storage.key_from_url(f"https://cdn.example/media/v1/{key}") is None


def test_key_from_url_knows_our_urls_and_nothing_else(storage: S3Storage, aws_env: str, tmp_path: Path) -> None:
    key = storage.put_file(make(tmp_path, "k.png", b"png"), ".png")
    host = urlsplit(aws_env).netloc
    b = storage.bucket
    ours = [
        storage.url(key),
        f"http://{host}/{b}/media/v1/{key}",  # unsigned, or signed some other time
        f"s3://{b}/media/v1/{key}",
        f"{PUBLIC_URL}/v1/artifacts/{key}",  # the API's artifact route
    ]
    assert [storage.key_from_url(u) for u in ours] == [key] * 4
    foreign = [
        f"http://{host}/other-bucket/media/v1/{key}",
        f"http://{host}/{b}/media/{key}",
        f"http://{host}/{b}/media/v1/../v1/{key}",
        f"http://{host}/{b}/media/v1/{key}/x",
        f"http://{host}/{b}/media/v1/{key[:3]}{key[4:]}",  # 63 hex digits
        f"http://{host}/{b}/media/v1/{key}%0A",
        f"https://{host}/{b}/media/v1/{key}",  # another scheme, another origin
        f"http://evil.example/{b}/media/v1/{key}",
        f"s3://other-bucket/media/v1/{key}",
        f"s3://{b}/{key}",
        f"https://evil.example/v1/artifacts/{key}",
        "https://example.com/cat.png",
        "not a url",
    ]
    assert [storage.key_from_url(u) for u in foreign] == [None] * len(foreign)


@pytest.mark.parametrize(
    "bad", ["", "../etc/passwd", "00/" + "0" * 63, "00/" + "0" * 64 + "\n", "00/" + "g" * 64, "00/" + "0" * 64 + ".MP4"]
)
def test_keys_are_validated_before_any_request(storage: S3Storage, tmp_path: Path, bad: str) -> None:
    seen = calls(storage)
    for op in (storage.url, storage.exists, storage.local_path, lambda k: storage.fetch_to(k, tmp_path)):
        with pytest.raises(BadKey, match="invalid artifact key"):
            op(bad)
    assert seen == []


def test_local_storage_rejects_a_key_with_a_trailing_newline(tmp_path: Path) -> None:
    local = LocalStorage(tmp_path / "a", PUBLIC_URL)
    with pytest.raises(BadKey):
        local.url("00/" + "0" * 64 + "\n")


# --- opening -----------------------------------------------------------------------------------------------


def test_a_missing_bucket_is_a_clear_error_at_open_time(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELFLOW_S3_ENDPOINT_URL", aws_env)
    with pytest.raises(StorageError, match=r"S3 bucket 'no-such-bucket' does not exist at http://127\.0\.0\.1:\d+"):
        open_storage("s3://no-such-bucket/x", PUBLIC_URL)


def test_an_unreachable_endpoint_is_a_clear_error_at_open_time(aws_env: str, bucket: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nothing listens there
    dead = f"http://127.0.0.1:{port}"
    # one attempt instead of s3fs's and botocore's retries (about 13 s of them)
    fs = s3fs.S3FileSystem(endpoint_url=dead, config_kwargs={"retries": {"max_attempts": 1}}, skip_instance_cache=True)
    fs.retries = 1
    with pytest.raises(StorageError, match=rf"s3://{bucket}/ at {dead}: opening bucket .* failed: .*Connect"):
        S3Storage(bucket, "", PUBLIC_URL, endpoint_url=dead, fs=fs)


def test_open_storage_reads_the_s3_settings_from_the_environment(
    aws_env: str, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REELFLOW_S3_ENDPOINT_URL", aws_env)
    monkeypatch.setenv("REELFLOW_S3_PUBLIC_BASE_URL", "https://files.example")
    storage = open_storage(f"s3://{bucket}/out/", PUBLIC_URL)
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix, storage.endpoint_url) == (bucket, "out", aws_env)
    key = storage.put_file(make(tmp_path, "e.srt", b"1\n00:00:00,000 --> 00:00:01,000\nhi\n"), ".srt")
    assert storage.url(key) == f"https://files.example/out/{key}"
    monkeypatch.delenv("REELFLOW_S3_PUBLIC_BASE_URL")
    monkeypatch.setenv("REELFLOW_S3_PRESIGN_SECONDS", "3600")
    signed = open_storage(f"s3://{bucket}", PUBLIC_URL)
    assert isinstance(signed, S3Storage) and signed.prefix == ""
    assert parse_qs(urlsplit(signed.url(key)).query)["X-Amz-Expires"] == ["3600"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://", "invalid S3 bucket name ''"),
        ("s3://Upper/x", "invalid S3 bucket name 'Upper'"),
        ("s3://b/x", "invalid S3 bucket name 'b'"),
        ("s3://bucket/a/../b", "invalid S3 prefix '/a/../b'"),
        ("s3://bucket/a b", "invalid S3 prefix"),
        ("s3://bucket/x?versionId=1", "expected s3://bucket/prefix"),
        ("gs://bucket/x", "unsupported storage URL 'gs://bucket/x'"),
    ],
)
def test_bad_storage_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(StorageError, match=re.escape(message)):
        open_storage(url, PUBLIC_URL)


def test_parse_s3_url_strips_slashes() -> None:
    assert parse_s3_url("s3://my.bucket-1//a/b_c/") == ("my.bucket-1", "a/b_c")


# --- deploy/ -----------------------------------------------------------------------------------------------

SPEC_ENV = {
    "REELFLOW_DATABASE_URL",
    "REELFLOW_STORAGE_URL",
    "REELFLOW_PUBLIC_URL",
    "REPLICATE_API_TOKEN",
    "FAL_KEY",
    "ELEVENLABS_API_KEY",
    "OPENAI_API_KEY",
    "REELFLOW_LIMITS_FILE",
    "REELFLOW_LEASE_SECONDS",
    "REELFLOW_ALLOW_PRIVATE_URLS",
    "REELFLOW_LOG_LEVEL",
    "REELFLOW_CALLBACKS",
    "REELFLOW_S3_ENDPOINT_URL",
    "REELFLOW_S3_PUBLIC_BASE_URL",
    "REELFLOW_S3_PRESIGN_SECONDS",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_compose_has_postgres_api_worker_and_minio(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {"postgres", "api", "worker", "minio"}
    pg = services["postgres"]
    assert pg["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in pg["volumes"])
    assert set(compose["volumes"]) >= {"pgdata", "minio"}
    api, worker = services["api"], services["worker"]
    assert api["command"][:3] == ["reelflow", "serve", "--workers"] and api["command"][3] == "0"
    assert "--host" in api["command"] and api["command"][api["command"].index("--host") + 1] == "0.0.0.0"
    assert worker["command"][:2] == ["reelflow", "worker"]
    assert worker["deploy"]["replicas"] == 2
    for svc in (api, worker):
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["reelflow", "migrate"]
    assert "healthcheck" in services["minio"]


def test_compose_environment_uses_the_spec_names(compose: dict[str, Any]) -> None:
    anchors = compose.get("x-reelflow-env", {})
    for name in ("api", "worker", "migrate"):
        env = env_of(compose["services"][name])
        assert env["REELFLOW_DATABASE_URL"].startswith("postgresql://")
        assert "@postgres:5432/" in env["REELFLOW_DATABASE_URL"]
        assert env["REELFLOW_STORAGE_URL"].startswith("s3://")
        assert env["REELFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
        unknown = {k for k in env if k.startswith(("REELFLOW_", "AWS_"))} - SPEC_ENV
        assert not unknown, f"{name}: names not in the README's configuration table or deploy/README.md: {unknown}"
    assert anchors, "the shared environment is one YAML anchor"
    bucket, _ = parse_s3_url(env_of(compose["services"]["api"])["REELFLOW_STORAGE_URL"])
    assert bucket in " ".join(compose["services"]["minio-init"]["entrypoint"])


def test_dockerfile_is_slim_non_root_and_serves_by_default() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[0].startswith("FROM python:3.11-slim")
    assert not re.search(r"apt-get install[^\n]*ffmpeg", text)
    user = [ln for ln in lines if ln.startswith("USER ")]
    assert user and user[-1] not in ("USER root", "USER 0")
    assert lines.index(user[-1]) > max(i for i, ln in enumerate(lines) if ln.startswith("RUN "))
    assert lines[-1] == 'CMD ["reelflow", "serve", "--host", "0.0.0.0", "--port", "8000"]'
    assert re.search(r"^RUN pip install [^\n]*/src\b", text, re.M) and "pip install -e" not in text


def test_readme_documents_every_s3_setting() -> None:
    readme = (ROOT / "deploy" / "README.md").read_text()
    for name in ("REELFLOW_S3_ENDPOINT_URL", "REELFLOW_S3_PUBLIC_BASE_URL", "REELFLOW_S3_PRESIGN_SECONDS"):
        assert name in readme
    for topic in ("pg_dump", "reelflow migrate", "advisory lock", "--concurrency"):
        assert topic in readme


# --- through the engine ------------------------------------------------------------------------------------


async def test_a_local_pipeline_runs_on_s3_storage(
    aws_env: str, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A still, then a video moving over it, with every output in the bucket: the worker fetches the still
    from S3 for ffmpeg, and the results carry signed URLs that serve the bytes."""
    import httpx

    from reelflow import media
    from reelflow.config import Settings
    from reelflow.engine.scheduler import Engine
    from reelflow.engine.worker import Worker
    from reelflow.providers.local import LocalProvider
    from reelflow.providers.registry import Providers
    from reelflow.store.sqlite import SQLiteStore

    monkeypatch.setenv("REELFLOW_S3_ENDPOINT_URL", aws_env)
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/reelflow.db",
        storage_url=f"s3://{bucket}/media",
        poll_interval_s=0.05,
        _env_file=None,  # type: ignore[call-arg]
    )
    store = SQLiteStore(settings.database_url)
    await store.migrate()
    engine = Engine(store, settings)
    plan = {
        "jobs": [
            {"id": "still", "type": "generate-image", "model": "local/image",
             "params": {"prompt": "a sunset", "width": 320, "height": 180}},
            {"id": "clip", "type": "generate-video", "model": "local/video",
             "params": {"prompt": "waves", "image": "$still", "duration": 2}},
        ]
    }
    eid = await engine.submit(plan)
    worker = Worker(store, settings=settings, providers=Providers({"local": LocalProvider()}))
    task = asyncio.create_task(worker.run())
    try:
        state = await engine.wait(eid, timeout=60)
    finally:
        worker.stop()
        await task
        await store.close()
    assert state["status"] == "succeeded", state["error"]
    clip = state["jobs"][1]["result"]
    assert "path" not in clip and clip["url"].startswith(aws_env)
    listed = boto3.client("s3", endpoint_url=aws_env).list_objects_v2(Bucket=bucket, Prefix="media/")
    assert {o["Key"] for o in listed["Contents"]} == {f"media/{j['result']['key']}" for j in state["jobs"]}
    async with httpx.AsyncClient() as http:
        body = (await http.get(clip["url"])).content
    local = tmp_path / "clip.mp4"
    local.write_bytes(body)
    info = await media.probe(local)
    assert info["has_video"] and info["duration"] == pytest.approx(2.0, abs=0.1)
