"""Remote outputs are copied into our storage: streamed, size-limited, type-checked, retried without paying twice."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import WorkerFactory, sim_job
from reelflow import media
from reelflow.engine.download import fetch_output
from reelflow.engine.scheduler import Engine
from reelflow.providers.base import (
    Output,
    PermanentError,
    ProgressReporter,
    ProviderResult,
    Task,
    TransientError,
)
from reelflow.providers.sim import SimProvider


class Files:
    """A tiny file server on 127.0.0.1: path -> (status, content type, body); counts requests."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, str, bytes]] = {}
        self.then: dict[str, tuple[int, str, bytes]] = {}
        """After its first answer, a path answers this instead (a failure that heals)."""
        self.hits: dict[str, int] = {}
        files = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                files.hits[self.path] = files.hits.get(self.path, 0) + 1
                status, ctype, body = files.routes.get(self.path, (404, "text/plain", b"nope"))
                if self.path in files.then:
                    files.routes[self.path] = files.then.pop(self.path)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def files() -> Iterator[Files]:
    f = Files()
    yield f
    f.server.shutdown()


@pytest.fixture
def clip(tmp_path: Path) -> bytes:
    path = tmp_path / "clip.mp4"
    asyncio.run(media.make_video(path, prompt="x", duration=1.0, width=64, height=64, fps=12))
    return path.read_bytes()


async def test_fetch_streams_media_and_refuses_what_is_not(files: Files, clip: bytes, tmp_path: Path) -> None:
    files.routes["/out/clip"] = (200, "video/mp4", clip)
    files.routes["/page"] = (200, "text/html", b"<html>")
    files.routes["/gone"] = (404, "text/plain", b"deleted")
    files.routes["/busy"] = (503, "text/plain", b"later")
    async with httpx.AsyncClient() as client:
        path, ctype = await fetch_output(client, f"{files.base}/out/clip", tmp_path / "a")
        assert path.suffix == ".mp4" and ctype == "video/mp4" and path.read_bytes() == clip
        with pytest.raises(PermanentError, match="text/html, not media"):
            await fetch_output(client, f"{files.base}/page", tmp_path / "b")
        with pytest.raises(PermanentError, match="HTTP 404"):
            await fetch_output(client, f"{files.base}/gone", tmp_path / "c")
        with pytest.raises(TransientError, match="HTTP 503"):
            await fetch_output(client, f"{files.base}/busy", tmp_path / "d")
        with pytest.raises(PermanentError, match="over the limit"):
            await fetch_output(client, f"{files.base}/out/clip", tmp_path / "e", limit_bytes=100)
        with pytest.raises(PermanentError, match="not http"):
            await fetch_output(client, "file:///etc/passwd", tmp_path / "f")
        with pytest.raises(TransientError):
            await fetch_output(client, "http://127.0.0.1:9/nothing", tmp_path / "g")


@pytest.mark.parametrize("size", [0, 2_840, 64 * 1024, 64 * 1024 + 1, 3 * 1024 * 1024 + 7])
async def test_a_body_of_any_size_lands_whole_in_a_folder_made_for_it(files: Files, tmp_path: Path, size: int) -> None:
    """Chunks up to 64 KiB are written from the event loop, larger ones in a thread: either way the file holds
    the body, byte for byte, in a folder made for it."""
    body = bytes((i * 7 + size) % 251 for i in range(size))
    files.routes["/out/v"] = (200, "video/mp4", body)
    async with httpx.AsyncClient() as client:
        path, _ = await fetch_output(client, f"{files.base}/out/v", tmp_path / "not" / "yet" / "output-0")
    assert path == tmp_path / "not" / "yet" / "output-0.mp4"
    assert path.read_bytes() == body


class RemoteOutputs(SimProvider):
    """Like a real provider: the result is a URL on its own server; the first download may fail."""

    def __init__(self, files: Files) -> None:
        super().__init__()
        self.files = files
        self.base_url = files.base  # the worker's egress guard allows a provider's configured host:port

    async def wait(self, task: Task, provider_id: str, report: ProgressReporter) -> ProviderResult:
        await super().wait(task, provider_id, report)
        return ProviderResult(outputs=[Output(url=f"{self.files.base}/out/{task.job_id}")], cost_usd=0.5)


async def test_a_remote_output_ends_up_in_our_storage_and_outlives_the_provider(
    engine: Engine, files: Files, clip: bytes, running_worker: WorkerFactory
) -> None:
    files.routes["/out/gen"] = (200, "video/mp4", clip)
    provider = RemoteOutputs(files)
    eid = await engine.submit({"jobs": [sim_job("gen")]})
    async with running_worker(providers_={"sim": provider}):
        state = await engine.wait(eid, timeout=20)
    result = state["jobs"][0]["result"]
    assert state["status"] == "succeeded"
    assert result["url"].endswith(".mp4") and "/v1/artifacts/" in result["url"]
    files.routes.clear()  # the provider deletes its copy
    assert Path(result["path"]).read_bytes() == clip
    assert result["has_video"] and abs(result["duration"] - 1.0) <= 0.1


async def test_a_failed_download_retries_on_the_same_remote_work(
    engine: Engine, files: Files, clip: bytes, running_worker: WorkerFactory
) -> None:
    files.routes["/out/gen"] = (503, "text/plain", b"busy")
    files.then["/out/gen"] = (200, "video/mp4", clip)  # busy once, then the file
    provider = RemoteOutputs(files)
    eid = await engine.submit({"jobs": [sim_job("gen", max_attempts=3)]})
    async with running_worker(providers_={"sim": provider}):
        state = await engine.wait(eid, timeout=20)
    job = state["jobs"][0]
    assert state["status"] == "succeeded"
    assert job["attempts"] == 2
    assert provider.submitted == 1, "the retry must wait on the same paid work, not submit again"
    assert files.hits["/out/gen"] == 2
