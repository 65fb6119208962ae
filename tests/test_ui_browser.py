"""The dashboard at GET /ui, driven in Debian's Chromium with Playwright against a real API server.

One server (with an embedded worker and webhook delivery) and one browser serve the whole module. Each test
signs in through the page or with a key in localStorage, works only through the page, and checks what the
page shows against the API and the outside world (the webhook receiver). Screenshots for the README are
written to docs/ at 1440x900.

Chromium: /usr/bin/chromium (`apt-get install -y chromium`; `make test` installs it when missing). Without
it the module is skipped, or fails when CI is set.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from apiserver import ApiServer, server_settings
from reelflow.api.app import create_app
from reelflow.providers.base import PermanentError, Task
from reelflow.providers.local import LocalProvider
from reelflow.providers.registry import Providers
from reelflow.providers.sim import SimProvider

CHROMIUM = "/usr/bin/chromium"
ON_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
MISSING = (
    f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium`"
    " (`make test` does that when run as root)"
)
if not Path(CHROMIUM).exists():
    if ON_CI:  # on CI the browser tests must run
        raise RuntimeError(f"CI is set but {MISSING}")
    pytest.skip(MISSING, allow_module_level=True)
try:
    from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the dev extras pin it
    if ON_CI:
        raise
    pytest.skip("playwright is not installed: pip install -e '.[dev]'", allow_module_level=True)

DOCS = Path(__file__).resolve().parent.parent / "docs"
WIDE = {"width": 1440, "height": 900}
NARROW = {"width": 390, "height": 844}
SUCCEEDED_RGB = "rgb(21, 128, 61)"  # --st-succeeded
WAITING_RGB = "rgb(139, 151, 168)"  # --st-waiting
FAILED_RGB = "rgb(220, 38, 38)"  # --st-failed


class FailOnceSim(SimProvider):
    """`sim`, plus `fail_once: true`: the job's first run in an execution fails permanently, later runs (a resume)
    work. (`fail_times` counts attempts, which a resume starts again from 1.)"""

    def __init__(self) -> None:
        super().__init__()
        self.failed: set[tuple[str, str]] = set()

    async def submit(self, task: Task) -> str:
        run = (task.execution_id, task.job_id)
        if task.params.get("fail_once") and run not in self.failed:
            self.failed.add(run)
            raise PermanentError(f"sim: job '{task.job_id}' fails on its first run (fail_once)")
        return await super().submit(task)

    async def wait(self, task: Task, provider_id: str, report: Any) -> Any:
        """`log_lines: N`: the run logs N numbered lines first, as a chatty model would."""
        for i in range(int(task.params.get("log_lines") or 0)):
            task.log.add(f"sim: step {i + 1:05d} of the render, all fine so far")
        return await super().wait(task, provider_id, report)


class Receiver:
    """A webhook endpoint on 127.0.0.1 that answers 200 and records every request."""

    def __init__(self) -> None:
        self.hits: list[tuple[dict[str, str], dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                receiver.hits.append(({k.lower(): v for k, v in self.headers.items()}, json.loads(body)))
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/reelflow"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def ids(self, execution_id: str) -> list[str]:
        return [h["webhook-id"] for h, body in self.hits if body["data"]["id"] == execution_id]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("ui")
    limits = root / "limits.yaml"
    limits.write_text("tenants:\n  capped: {monthly_executions: 1}\n")
    settings = server_settings(root, allow_private_urls=True, limits_file=str(limits))
    providers = Providers({"sim": FailOnceSim(), "local": LocalProvider()})
    app = create_app(settings, workers=1, deliver_webhooks=True, providers=providers)
    with ApiServer(settings, app=app) as server:
        yield server


@pytest.fixture(scope="module")
def key(api: ApiServer) -> str:
    return api.new_key("studio").api_key


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--autoplay-policy=no-user-gesture-required"])
        yield b
        b.close()


class Console:
    """Console errors and uncaught exceptions of the pages of one test; `expect_failure` lists the URLs whose
    HTTP error answers the test provokes on purpose (the browser logs each as a console error)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.allowed: list[str] = []

    def watch(self, page: Page) -> Page:
        def on_console(msg: Any) -> None:
            if msg.type != "error":
                return
            url = (msg.location or {}).get("url", "")
            if msg.text.startswith("Failed to load resource") and any(a in url for a in self.allowed):
                return
            self.errors.append(f"{msg.text} ({url})")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        return page

    def expect_failure(self, url_part: str) -> None:
        self.allowed.append(url_part)


@pytest.fixture
def console() -> Iterator[Console]:
    c = Console()
    yield c
    assert c.errors == [], f"the page logged errors: {c.errors}"


def new_page(
    browser: Browser, api: ApiServer, console: Console, api_key: str | None, viewport: dict[str, int] = WIDE
) -> tuple[BrowserContext, Page]:
    """A fresh browser context; with `api_key`, signed in (the key put where the page keeps it)."""
    context = browser.new_context(viewport=viewport, base_url=api.url)
    if api_key is not None:
        context.add_init_script(f"localStorage.setItem('reelflow.apiKey', {json.dumps(api_key)})")
    return context, console.watch(context.new_page())


@pytest.fixture
def page(browser: Browser, api: ApiServer, key: str, console: Console) -> Iterator[Page]:
    context, p = new_page(browser, api, console, key)
    yield p
    context.close()


def submit(api: ApiServer, api_key: str, plan: dict[str, Any]) -> str:
    with api.client(api_key) as http:
        r = http.post("/v1/executions", json=plan)
        assert r.status_code == 202, r.text
        return str(r.json()["id"])


def state(api: ApiServer, api_key: str, execution_id: str) -> dict[str, Any]:
    with api.client(api_key) as http:
        r = http.get(f"/v1/executions/{execution_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.05)


def finished(api: ApiServer, api_key: str, execution_id: str) -> dict[str, Any]:
    return dict(
        wait_for(
            lambda: (s := state(api, api_key, execution_id))["status"] in ("succeeded", "failed", "canceled") and s,
            f"execution {execution_id} to finish",
        )
    )


def sim(job_key: str, kind: str = "video", **params: Any) -> dict[str, Any]:
    extra = {k: params.pop(k) for k in ("depends_on", "max_attempts") if k in params}
    return {"id": job_key, "type": f"generate-{kind}", "model": f"sim/{kind}", "params": params, **extra}


def screenshot(page: Page, name: str) -> None:
    DOCS.mkdir(exist_ok=True)
    page.wait_for_timeout(400)  # colour transitions settle
    page.evaluate("document.querySelectorAll('.toast').forEach((t) => t.remove()); document.activeElement?.blur()")
    page.mouse.move(0, 0)
    page.screenshot(path=str(DOCS / name))


# ---------------------------------------------------------------------------------------------- serving


def test_the_page_is_served_without_a_key_and_stays_out_of_the_schema(api: ApiServer) -> None:
    with api.client() as http:
        page = http.get("/ui")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/ui/app.js">' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for name, kind in [("app.js", "text/javascript"), ("style.css", "text/css"), ("favicon.svg", "image/svg+xml")]:
            r = http.get(f"/ui/{name}")
            assert r.status_code == 200 and r.headers["content-type"].startswith(kind), name
            assert len(r.content) > 200
        assert http.get("/ui/", follow_redirects=False).headers["location"] == "/ui"
        missing = http.get("/ui/nothing.js")
        assert missing.status_code == 404
        assert missing.json()["detail"] == "no dashboard file 'nothing.js'"
        assert http.get("/ui/..%2fapi%2fapp.py").status_code == 404
        paths = http.get("/openapi.json").json()["paths"]
        assert not [p for p in paths if p.startswith("/ui")]
        assert http.get("/v1/executions").status_code == 401  # the data still needs the key


# ---------------------------------------------------------------------------------------------- sign in


def test_sign_in_keeps_the_key_and_sign_out_forgets_it(
    browser: Browser, api: ApiServer, key: str, console: Console
) -> None:
    console.expect_failure("/v1/executions?limit=1")  # the wrong key's 401
    context, page = new_page(browser, api, console, None)
    page.goto("/ui")
    expect(page.get_by_role("heading", name="Sign in to reelflow")).to_be_visible()
    page.fill("#api-key", "rf_000000000000_wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-error")).to_contain_text("This key was refused: invalid or revoked API key")
    assert page.evaluate("localStorage.getItem('reelflow.apiKey')") is None

    page.fill("#api-key", key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Executions")).to_be_visible()
    assert page.evaluate("localStorage.getItem('reelflow.apiKey')") == key
    key_id = key.split("_")[1]
    expect(page.locator("#key-id")).to_have_text(f"rf_{key_id}_…")

    page.reload()  # kept in the browser
    expect(page.get_by_role("heading", name="Executions")).to_be_visible()

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to reelflow")).to_be_visible()
    expect(page.locator("#signin-error")).to_contain_text("Signed out")
    assert page.evaluate("localStorage.getItem('reelflow.apiKey')") is None
    context.close()


# ---------------------------------------------------------------------------------------------- one execution

RECORDER = """() => {
  window.__sameDocument = true;
  window.__seen = {};
  const note = (name, value, colour) => {
    const list = (window.__seen[name] ||= []);
    if (!list.length || list[list.length - 1][0] !== value) list.push([value, colour]);
  };
  const stroke = (g) => getComputedStyle(g.querySelector('rect.box')).stroke;
  const look = () => {
    for (const g of document.querySelectorAll('#dag .node')) note(g.dataset.job, g.dataset.status, stroke(g));
    const badge = document.querySelector('#exec-status');
    if (badge) note('@execution', badge.dataset.status, badge.textContent);
  };
  look();
  // every change, not only the last of a batch: events read in one chunk set a node's status several times in
  // one task, and the observer then sees only the last unless it reads each change's old value
  new MutationObserver((records) => {
    for (const r of records) {
      const g = r.target;
      const node = r.type === 'attributes' && r.oldValue && g.matches && g.matches('#dag .node');
      if (node) note(g.dataset.job, r.oldValue, '');
    }
    look();
  }).observe(document.querySelector('main'),
    {subtree: true, attributes: true, attributeFilter: ['data-status'], attributeOldValue: true, childList: true});
}"""


def test_the_execution_page_follows_a_run_live_and_plays_its_outputs(
    page: Page, api: ApiServer, key: str, receiver: Receiver
) -> None:
    plan = {
        "jobs": [
            sim("still", "image", media=True, prompt="harbour at dusk", latency_s=1.5),
            sim("clip", "video", media=True, prompt="slow waves", image="$still", duration=2, latency_s=1.0),
            sim(
                "voice",
                "audio",
                media=True,
                prompt="the sea keeps its promise",
                duration=2,
                latency_s=0.6,
                depends_on=["still"],
            ),
            {"id": "final", "type": "merge-video-audio", "params": {"video": "$clip", "audio": "$voice"}},
        ],
        "metadata": {"order": 1234},
        "webhook": receiver.url,
    }
    eid = submit(api, key, plan)
    page.goto(f"/ui#/executions/{eid}")
    expect(page.locator("#dag .node")).to_have_count(4)
    page.evaluate(RECORDER)

    # the layered drawing: still first, clip and voice next, final last (left to right)
    xs = {
        job: page.locator(f'#dag .node[data-job="{job}"] rect.box').get_attribute("x")
        for job in ("still", "clip", "voice", "final")
    }
    assert float(xs["still"] or 0) < float(xs["clip"] or 0) == float(xs["voice"] or 0) < float(xs["final"] or 0)
    expect(page.locator("#dag path.edge")).to_have_count(4)  # still→clip, still→voice, clip→final, voice→final

    final = page.locator('#dag .node[data-job="final"]')
    expect(final).to_have_attribute("data-status", "succeeded", timeout=30_000)
    expect(page.locator("#exec-status")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#exec-status")).to_have_text("succeeded")
    expect(page.locator("#live")).to_have_attribute("data-state", "ended")
    page.wait_for_timeout(500)  # the stroke transition ends
    seen = page.evaluate("window.__seen")
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    # the final job was waiting when the page opened, and turned green in front of us, only ever forward: a state
    # read fresher than the stream (the page reads it again after events) is not walked back by the stream's older
    # events, so a short step between may not be drawn at all
    assert seen["final"][0] == ["waiting", WAITING_RGB], seen["final"]
    assert seen["final"][-1][0] == "succeeded", seen["final"]
    assert final.locator("rect.box").evaluate("r => getComputedStyle(r).stroke") == SUCCEEDED_RGB
    lifecycle = ["waiting", "queued", "running", "succeeded"]
    for what in ("final", "clip", "@execution"):
        statuses = [s for s, _ in seen[what]]
        assert statuses == sorted(statuses, key=lifecycle.index) and statuses[-1] == "succeeded", (what, statuses)
    assert "running" in [s for s, _ in seen["clip"]], seen["clip"]  # a 1 s job: seen running
    assert seen["@execution"][0][0] in ("queued", "running"), seen["@execution"]

    # timings, attempts and cost per job, from the state and the event stream
    card = page.locator("#job-clip")
    expect(card.locator(".badge").first).to_have_text("succeeded")
    expect(card).to_contain_text("Attempts1 of 3")
    expect(card).to_contain_text("Depends onstill")
    expect(card.locator(".attempts li")).to_have_count(1)
    expect(card.locator(".attempts li")).to_contain_text("#1")
    expect(page.locator("#events")).to_contain_text("execution.succeeded")
    expect(page.locator("#exec-summary")).to_contain_text("4 of 4 done")

    # outputs play in place: a real image, audio and video (with sound) fetched with the key
    expect(page.locator("#job-still .output img")).to_be_visible(timeout=10_000)
    assert (
        page.wait_for_function(
            "() => { const i = document.querySelector('#job-still .output img'); return i.complete && i.naturalWidth; }"
        ).json_value()
        == 320
    )
    audio_s = page.wait_for_function(
        "() => { const a = document.querySelector('#job-voice audio'); return a && a.readyState >= 1 && a.duration; }"
    ).json_value()
    assert 1.5 < audio_s < 2.5
    # before it plays, the video shows a frame (not black): it loads its metadata and seeks to 0.1 s
    poster = page.wait_for_function(
        """() => {
          const v = document.querySelector('#job-final video');
          if (!v || v.readyState < 2 || v.currentTime === 0 || !v.paused) return false;
          const c = document.createElement('canvas');
          c.width = 64; c.height = 36;
          const g = c.getContext('2d');
          g.drawImage(v, 0, 0, 64, 36);
          const px = g.getImageData(0, 0, 64, 36).data;
          let sum = 0;
          for (let i = 0; i < px.length; i += 4) sum += (px[i] + px[i + 1] + px[i + 2]) / 3;
          return {mean: sum / (px.length / 4), preload: v.preload, time: v.currentTime};
        }"""
    ).json_value()
    assert poster["preload"] == "metadata" and 0 < poster["time"] <= 0.15 and poster["mean"] > 8, poster
    video = page.wait_for_function(
        """async () => {
          const v = document.querySelector('#job-final video');
          if (!v || v.readyState < 1) return false;
          v.muted = true;
          await v.play();
          await new Promise((r) => setTimeout(r, 300));
          return {duration: v.duration, time: v.currentTime, w: v.videoWidth, src: v.currentSrc};
        }"""
    ).json_value()
    assert 1.5 < video["duration"] < 2.5 and video["time"] > 0 and video["w"] == 320, video
    assert video["src"].startswith("blob:")
    result = state(api, key, eid)["jobs"][3]["result"]
    assert result["has_audio"] is True and result["has_video"] is True
    page.evaluate("document.querySelector('#job-final video').pause()")
    screenshot(page, "ui-execution.png")


STATUS_CHANGES = """
window.__changes = [];
new MutationObserver((records) => {
  for (const r of records) {
    const t = r.target;
    if (t.id === 'exec-status' || (t.matches && t.matches('#dag .node'))) {
      window.__changes.push([t.id || t.dataset.job, r.oldValue, t.dataset.status]);
    }
  }
}).observe(document, {subtree: true, attributes: true, attributeFilter: ['data-status'], attributeOldValue: true});
"""


def test_a_finished_execution_opens_at_its_final_state_while_its_events_are_replayed(
    browser: Browser, api: ApiServer, key: str, console: Console
) -> None:
    # 60 jobs, 183 events: the stream replays them all into the events panel
    eid = submit(api, key, {"jobs": [sim(f"j{i}") for i in range(60)]})
    assert finished(api, key, eid)["status"] == "succeeded"
    context, page = new_page(browser, api, console, key)
    context.add_init_script(STATUS_CHANGES)
    page.goto(f"/ui#/executions/{eid}")
    expect(page.locator("#events li").last.locator(".ty")).to_have_text("execution.succeeded")
    assert page.locator("#events li").count() >= 3 * 60  # running, submitted, succeeded: each job's
    # the panel scrolls, and it followed the rows to the last one (it reads its scroll position once a frame)
    at_end = "(e) => e.scrollHeight > e.clientHeight + 100 && e.scrollTop + e.clientHeight >= e.scrollHeight - 8"
    page.wait_for_function(at_end, arg=page.locator("#events").element_handle(), timeout=5000)
    changes = page.evaluate("window.__changes")
    # The page shows what the state says from its first render on; the replayed history goes to the events panel,
    # not back into the execution's and the jobs' statuses (it set them to running again, then to their end, and
    # redrew the page once per event). Each record is [what, value before, value now].
    assert [c for c in changes if c[1] not in (None, "succeeded")] == [], changes[:10]
    assert len(changes) < 10 * 61, len(changes)  # a handful of renders, not one per replayed event
    expect(page.locator("#exec-status")).to_have_attribute("data-status", "succeeded")
    expect(page.locator('#dag .node[data-status="succeeded"]')).to_have_count(60)
    context.close()


def test_a_running_execution_opens_at_its_state_and_follows_what_is_new(
    browser: Browser, api: ApiServer, key: str, console: Console
) -> None:
    # 40 quick jobs done and one slow job still running when the page opens: 123 events to replay, then news
    eid = submit(api, key, {"jobs": [*(sim(f"j{i}") for i in range(40)), sim("slow", latency_s=5)]})
    done = lambda: sum(j["status"] == "succeeded" for j in state(api, key, eid)["jobs"])  # noqa: E731
    wait_for(lambda: done() == 40, "the 40 quick jobs to succeed")
    assert state(api, key, eid)["status"] == "running"
    context, page = new_page(browser, api, console, key)
    context.add_init_script(STATUS_CHANGES)
    page.goto(f"/ui#/executions/{eid}")
    page.wait_for_function("() => document.querySelectorAll('#events li').length >= 3 * 40", timeout=10_000)
    # what happens now is applied as it comes: the slow job's end, then the execution's
    expect(page.locator("#exec-status")).to_have_attribute("data-status", "succeeded", timeout=15_000)
    expect(page.locator('#dag .node[data-status="succeeded"]')).to_have_count(41)
    changes = page.evaluate("window.__changes")
    # The history the state already showed went to the events panel only: a quick job was never shown as anything
    # but succeeded (replayed, its events set it to queued or running again, then back). Each record is
    # [what, value before, value now].
    assert [c for c in changes if c[0].startswith("j") and c[2] != "succeeded"] == [], changes[:10]
    # the execution and the slow job only ever moved forward, from running to succeeded (a redraw may set a value again)
    moves = {(c[0], c[1], c[2]) for c in changes if c[1] is not None and c[1] != c[2]}
    assert moves == {("exec-status", "running", "succeeded"), ("slow", "running", "succeeded")}, moves
    context.close()


def test_resume_a_failed_execution_from_its_page(page: Page, api: ApiServer, key: str) -> None:
    plan = {
        "jobs": [
            sim("script", "audio", latency_s=0.2, cost_usd=0.02),
            sim("scene", "video", latency_s=0.4, depends_on=["script"], fail_once=True, cost_usd=0.5),
            sim("edit", "video", latency_s=0.4, depends_on=["scene"], cost_usd=0.1),
        ]
    }
    eid = submit(api, key, plan)
    assert finished(api, key, eid)["status"] == "failed"
    with api.client(key) as http:  # the number of the event that ended the first run
        log = http.get(f"/v1/executions/{eid}/events").text
    failed_seq = re.findall(r"id: (\d+)\nevent: execution.failed\n", log)
    assert len(failed_seq) == 1
    streams: list[dict[str, str]] = []
    page.on("request", lambda r: streams.append(r.headers) if r.url.endswith(f"/{eid}/events") else None)
    page.goto(f"/ui#/executions/{eid}")
    expect(page.locator("#exec-status")).to_have_attribute("data-status", "failed")
    expect(page.locator("#exec-error")).to_contain_text("job 'scene' failed: sim: job 'scene' fails on its first run")
    expect(page.locator('#dag .node[data-job="scene"]')).to_have_attribute("data-status", "failed")
    expect(page.locator('#dag .node[data-job="edit"]')).to_have_attribute("data-status", "skipped")
    assert (
        page.locator('#dag .node[data-job="scene"] rect.box').evaluate("r => getComputedStyle(r).stroke") == FAILED_RGB
    )
    expect(page.locator("#job-scene pre.error")).to_contain_text("fails on its first run (fail_once)")
    expect(page.locator("#btn-cancel")).to_be_disabled()
    page.evaluate(RECORDER)

    page.locator("#btn-resume").click()
    expect(page.locator("#exec-status")).to_have_attribute("data-status", "succeeded", timeout=15_000)
    expect(page.locator('#dag .node[data-job="edit"]')).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#exec-error")).to_be_hidden()
    expect(page.locator("#job-scene .attempts")).to_contain_text("resumed")
    expect(page.locator("#job-scene .attempts li[data-status='succeeded']")).to_have_count(1)
    expect(page.locator("#job-scene .attempts li[data-status='failed']")).to_have_count(1)
    seen = page.evaluate("window.__seen")
    assert [s for s, _ in seen["@execution"]] == ["failed", "running", "succeeded"], seen["@execution"]
    assert seen["scene"][0][0] == "failed" and seen["scene"][-1][0] == "succeeded", seen["scene"]
    assert page.evaluate("window.__sameDocument") is True
    assert state(api, key, eid)["status"] == "succeeded"
    # the stream is read with the key; after the resume it goes on from the last event seen (Last-Event-ID)
    assert len(streams) == 2, streams
    assert streams[0]["authorization"] == f"Bearer {key}" and "last-event-id" not in streams[0]
    assert streams[1]["last-event-id"] == failed_seq[0]
    expect(page.locator("#btn-resume")).to_be_disabled()
    expect(page.locator("#exec-summary")).to_contain_text("$0.62")

    # retry makes a new execution and the page moves to it
    page.locator("#btn-retry").click()
    page.wait_for_url(lambda url: "#/executions/ex_" in url and not url.endswith(eid))
    new_id = page.url.rsplit("/", 1)[-1]
    expect(page.locator(".toast").last).to_contain_text(f"Retrying as a new execution {new_id}")
    assert new_id != eid and state(api, key, new_id)["retry_of"] == eid


def test_an_action_the_server_refuses_shows_its_problem_detail(
    browser: Browser, api: ApiServer, console: Console
) -> None:
    capped = api.new_key("capped").api_key  # the limits file allows this tenant 1 execution a month
    eid = submit(api, capped, {"jobs": [sim("only", latency_s=0)]})
    finished(api, capped, eid)
    console.expect_failure("/retry")
    context, page = new_page(browser, api, console, capped)
    page.goto(f"/ui#/executions/{eid}")
    expect(page.locator("#exec-status")).to_have_attribute("data-status", "succeeded")
    page.locator("#btn-retry").click()
    alert = page.locator("#exec-alerts .alert")
    expect(alert).to_contain_text(
        "Cannot retry this execution: tenant 'capped' reached its monthly_executions limit of 1"
    )
    expect(page).to_have_url(re.compile(f"#/executions/{eid}$"))
    context.close()


# ---------------------------------------------------------------------------------------------- webhooks


def test_redeliver_a_webhook_from_the_deliveries_page(page: Page, api: ApiServer, key: str, receiver: Receiver) -> None:
    eid = submit(api, key, {"jobs": [sim("teaser", latency_s=0.1)], "webhook": receiver.url})
    wait_for(lambda: receiver.ids(eid), "the first webhook")
    page.goto(f"/ui#/deliveries?execution_id={eid}")
    rows = page.locator("#deliveries tbody tr[data-id]")
    expect(rows).to_have_count(1)
    row = rows.first
    expect(row).to_have_attribute("data-status", "delivered")
    expect(row.locator(".attempts-count")).to_have_text("1")
    expect(row).to_contain_text("execution.succeeded")
    expect(row).to_contain_text("HTTP 200")

    row.get_by_role("button", name="Redeliver").click()
    expect(page.locator(".toast")).to_contain_text("queued to be sent again")
    expect(row.locator(".attempts-count")).to_have_text("2", timeout=10_000)  # the page refreshes by itself
    expect(row).to_have_attribute("data-status", "delivered")
    ids = receiver.ids(eid)
    assert len(ids) == 2 and ids[0] == ids[1] == row.get_attribute("data-id")

    row.locator("td").first.click()  # the attempts, each with code and latency
    expect(page.locator("#deliveries tr.detail-row .attempts li")).to_have_count(2)

    page.locator("#delivery-filter").fill("")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"#/deliveries$"))
    with api.client(key) as http:
        everything = http.get("/v1/webhook-deliveries").json()["data"]
    assert any(d["execution_id"] == eid for d in everything)
    expect(page.locator("#deliveries tbody tr[data-id]")).to_have_count(len(everything))


# ---------------------------------------------------------------------------------------------- lists


def test_the_executions_list_filters_pages_and_refreshes(browser: Browser, api: ApiServer, console: Console) -> None:
    lister = api.new_key("lister").api_key
    ids = [submit(api, lister, {"jobs": [sim("a", latency_s=0)]}) for _ in range(27)]
    failed = [submit(api, lister, {"jobs": [sim("a", fail="permanent")]}) for _ in range(2)]
    for eid in ids[-3:] + failed:
        finished(api, lister, eid)
    wait_for(lambda: all(finished(api, lister, e)["status"] == "succeeded" for e in ids), "all to succeed")

    context, page = new_page(browser, api, console, lister)
    page.goto("/ui#/executions")
    rows = page.locator("#executions tbody tr[data-id]")
    expect(rows).to_have_count(25)
    assert rows.first.get_attribute("data-id") == failed[-1]  # newest first
    expect(page.locator("#exec-count")).to_have_text("25 shown")
    page.locator("#load-more").click()
    expect(rows).to_have_count(29)
    expect(page.locator("#load-more")).to_be_hidden()
    expect(page.locator("#exec-count")).to_have_text("29 shown · end of list")

    page.locator('.chip[data-filter="failed"]').click()
    expect(page).to_have_url(re.compile(r"#/executions\?status=failed$"))
    expect(rows).to_have_count(2)
    assert sorted(r.get_attribute("data-id") or "" for r in rows.all()) == sorted(failed)
    for r in rows.all():
        expect(r.locator(".badge")).to_have_text("failed")
        expect(r).to_contain_text("asked to fail (fail: permanent)")
    page.locator('.chip[data-filter="running"]').click()
    expect(page.locator(".empty")).to_contain_text("No running executions")

    # auto-refresh: a new execution shows up without a reload
    page.locator('.chip[data-filter="all"]').click()
    expect(rows).to_have_count(25)
    page.evaluate("window.__sameDocument = true")
    fresh = submit(api, lister, {"jobs": [sim("late", latency_s=0)]})
    expect(rows.first).to_have_attribute("data-id", fresh, timeout=10_000)
    expect(rows.first).to_have_attribute("data-status", "succeeded", timeout=10_000)
    assert page.evaluate("window.__sameDocument") is True
    rows.first.locator("a").click()
    expect(page.locator("#exec-status")).to_have_attribute("data-status", "succeeded")
    context.close()


def test_narrow_screens_keep_everything_within_the_width(
    browser: Browser, api: ApiServer, key: str, console: Console
) -> None:
    context, page = new_page(browser, api, console, key, viewport=NARROW)
    diamond = [
        sim("still", "image", latency_s=0),
        sim("clip", image="$still", latency_s=0),
        sim("voice", "audio", latency_s=0, depends_on=["still"]),
        sim("final", latency_s=0, depends_on=["clip", "voice"]),
    ]
    eid = submit(api, key, {"jobs": diamond})
    finished(api, key, eid)
    console.expect_failure("/v1/stats")  # 404 until the server has the endpoint
    for hash_ in ("#/executions", f"#/executions/{eid}", "#/deliveries", "#/overview", "#/workers", "#/nowhere"):
        page.goto(f"/ui{hash_}")
        expect(page.locator("main .loading")).to_have_count(0)
        page.wait_for_timeout(200)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= NARROW["width"], f"{hash_} is {width}px wide on a 390px screen"
        # nothing cut inside the page either: every nav link whole on screen, no text running out of its box
        edges = page.locator("#nav a").evaluate_all("as => as.map((a) => a.getBoundingClientRect().right)")
        assert edges and max(edges) <= NARROW["width"], (hash_, edges)
        spilled = page.evaluate(
            "() => [...document.querySelectorAll('main .summary .value, main .figure .value')]"
            ".filter((e) => e.scrollWidth > e.clientWidth + 1).map((e) => e.textContent)"
        )
        assert spilled == [], (hash_, spilled)
    # the graph stacks top to bottom when the screen is narrow
    page.goto(f"/ui#/executions/{eid}")
    expect(page.locator("#dag .node")).to_have_count(4)
    ys = [
        float(page.locator(f'#dag .node[data-job="{j}"] rect.box').get_attribute("y") or 0) for j in ("still", "final")
    ]
    assert ys[0] < ys[1]
    context.close()


EDGE_HITS = """() => {
  // every edge sampled along its length: which node boxes, other than its own two ends, does it pass through?
  const boxes = [...document.querySelectorAll('#dag .node')].map((g) => {
    const r = g.querySelector('rect.box');
    const [x, y, w, h] = ['x', 'y', 'width', 'height'].map((a) => Number(r.getAttribute(a)));
    return { job: g.dataset.job, x, y, w, h };
  });
  const hits = [];
  for (const e of document.querySelectorAll('#dag path.edge')) {
    const ends = [e.dataset.from, e.dataset.to];
    const length = e.getTotalLength();
    for (let at = 0; at <= length; at += 2) {
      const p = e.getPointAtLength(at);
      for (const b of boxes) {
        if (ends.includes(b.job)) continue;
        if (p.x > b.x + 1 && p.x < b.x + b.w - 1 && p.y > b.y + 1 && p.y < b.y + b.h - 1) {
          hits.push(`${ends.join('→')} under ${b.job}`);
          break;
        }
      }
    }
  }
  return [...new Set(hits)];
}"""


@pytest.mark.parametrize("viewport", [WIDE, NARROW], ids=["wide", "narrow"])
def test_an_edge_that_skips_a_layer_goes_around_the_jobs_between(
    browser: Browser, api: ApiServer, key: str, console: Console, viewport: dict[str, int]
) -> None:
    # the demo's shape (voice skips clip's layer on its way to merged) and an edge that skips three layers
    plan = [
        sim("still", "image", latency_s=0),
        sim("voice", "audio", latency_s=0),
        sim("clip", image="$still", latency_s=0),
        sim("merged", latency_s=0, depends_on=["clip", "voice"]),
        sim("final", latency_s=0, depends_on=["merged"]),
        sim("thumb", "image", latency_s=0, depends_on=["still", "final"]),
        sim("poster", "image", latency_s=0, depends_on=["still", "thumb"]),
    ]
    eid = submit(api, key, {"jobs": plan})
    finished(api, key, eid)
    context, page = new_page(browser, api, console, key, viewport=viewport)
    page.goto(f"/ui#/executions/{eid}")
    expect(page.locator("#dag .node")).to_have_count(7)
    expect(page.locator("#dag path.edge")).to_have_count(8)  # one path per dependency, waypoints or not
    assert page.evaluate(EDGE_HITS) == []
    # each path still starts at its dependency and ends at its dependent
    ends = page.evaluate(
        """() => [...document.querySelectorAll('#dag path.edge')].map((e) => {
             const box = (job) => document.querySelector(`#dag .node[data-job="${job}"] rect.box`).getBBox();
             const a = e.getPointAtLength(0), b = e.getPointAtLength(e.getTotalLength());
             const near = (p, r) =>
               p.x >= r.x - 3 && p.x <= r.x + r.width + 3 && p.y >= r.y - 3 && p.y <= r.y + r.height + 3;
             return near(a, box(e.dataset.from)) && near(b, box(e.dataset.to));
           })"""
    )
    assert ends == [True] * 8, ends
    context.close()


# ---------------------------------------------------------------------------------------------- overview


def test_the_overview_shows_the_stats_or_says_they_are_not_available(
    page: Page, api: ApiServer, key: str, console: Console
) -> None:
    finished(
        api, key, submit(api, key, {"jobs": [sim("cover", "image", fail="permanent")], "metadata": {"order": 1239}})
    )
    running = submit(api, key, {"jobs": [sim("long-take", latency_s=30, cost_usd=1.25)], "metadata": {"order": 1240}})
    wait_for(lambda: state(api, key, running)["status"] == "running", "the long execution to start")
    with api.client(key) as http:
        stats = http.get("/v1/stats")
        listed = http.get("/v1/executions", params={"limit": 6}).json()["data"]
    page.goto("/ui#/overview")
    if stats.status_code == 404:
        console.expect_failure("/v1/stats")
        expect(page.locator("#stats-unavailable")).to_contain_text("not available")
    else:
        assert stats.status_code == 200, stats.text
        figures = stats.json()
        total = sum(figures["executions"]["by_status"].values())
        expect(page.locator("#fig-executions .value")).to_have_text(f"{total:,}")
        expect(page.locator("#stats-scope")).to_contain_text(figures["tenant"])
    recent = page.locator("#recent tbody tr")
    expect(recent).to_have_count(len(listed))
    expect(recent.first).to_contain_text(running)
    screenshot(page, "ui-overview.png")

    page.get_by_role("link", name="Executions", exact=True).click()
    expect(page.locator("#executions tbody tr[data-id]").first).to_have_attribute("data-id", running)
    screenshot(page, "ui-executions.png")
    with api.client(key) as http:
        assert http.post(f"/v1/executions/{running}/cancel").status_code == 200
    expect(page.locator(f'#executions tr[data-id="{running}"]')).to_have_attribute(
        "data-status", "canceled", timeout=10_000
    )


# ---------------------------------------------------------------------------------------------- item 16 of issue 15

TIME_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def with_params(page: Page, plan: dict[str, Any], execution_id: str) -> list[bool]:
    """Until the API's states carry them, add each job's submitted `params` and the execution's `outputs` (every
    leaf job's output) to GET /v1/executions/{id} in the page (a no-op once the server gives them). Answers a
    list that holds True once a state had to be completed."""
    added: list[bool] = []
    by_id = {j["id"]: j.get("params", {}) for j in plan["jobs"]}

    def handle(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        for job in body.get("jobs", []):
            if "params" not in job:
                job["params"] = by_id.get(job["id"], {})
                added.append(True)
        if "outputs" not in body:
            needed = {d for job in body.get("jobs", []) for d in job.get("depends_on", [])}
            body["outputs"] = [
                {
                    "job_id": j["id"],
                    "type": j["type"],
                    "url": j["result"]["url"],
                    "duration": j["result"].get("duration"),
                }
                for j in body.get("jobs", [])
                if j["id"] not in needed and j.get("result") and j["result"].get("url")
            ]
            added.append(True)
        route.fulfill(response=response, json=body)

    page.route(re.compile(rf"/v1/executions/{execution_id}$"), handle)
    return added


def sse_events(api: ApiServer, api_key: str, execution_id: str) -> list[dict[str, Any]]:
    with api.client(api_key) as http:
        text = http.get(f"/v1/executions/{execution_id}/events").text
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def assert_one_time_format(page: Page) -> None:
    times = page.locator("main time")
    assert times.count() > 0
    for text, title in page.eval_on_selector_all("main time", "ts => ts.map((t) => [t.textContent, t.title])"):
        assert TIME_TEXT.match(text), f"time shown as {text!r}"
        assert title.endswith("ago") or title == "just now", title


def test_a_job_shows_its_prompt_parameters_log_and_the_plan_and_timeline(
    browser: Browser, api: ApiServer, key: str, console: Console
) -> None:
    plan = {
        "jobs": [
            sim("storyboard", "image", prompt="a lighthouse in fog, wide shot", latency_s=0.4, seed=7),
            sim(
                "shot",
                "video",
                prompt="the beam sweeps the waves",
                latency_s=0.6,
                duration=4,
                depends_on=["storyboard"],
                log_lines=6,
            ),
            sim("score", "audio", prompt="low strings", latency_s=0.2, depends_on=["storyboard"], max_attempts=5),
        ],
        "metadata": {"order": 77, "client": "harbour"},
    }
    eid = submit(api, key, plan)
    done = finished(api, key, eid)
    assert done["status"] == "succeeded"
    context, page = new_page(browser, api, console, key)
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    with_params(page, plan, eid)
    page.goto(f"/ui#/executions/{eid}")
    expect(page.locator("#exec-status")).to_have_attribute("data-status", "succeeded")

    # the execution's outputs: one row per leaf job
    rows = page.locator("#exec-outputs tbody tr")
    expect(rows).to_have_count(2)
    assert sorted(r.get_attribute("data-job") or "" for r in rows.all()) == ["score", "shot"]
    expect(rows.first.locator(".out-link a")).to_have_attribute("href", re.compile(r"^https://sim\.invalid/"))

    # the prompt and every other parameter, per job
    for job in plan["jobs"]:
        card = page.locator(f"#job-{job['id']}")
        expect(card.locator("blockquote.prompt")).to_have_text(job["params"]["prompt"])
        for name, value in job["params"].items():
            if name != "prompt":
                expect(card.locator(f'dd[data-param="{name}"]')).to_have_text(json.dumps(value))

    # the plan as JSON, the same as submitted, and copied as it is shown
    shown = json.loads(page.locator("#plan-json").text_content() or "")
    assert shown["metadata"] == plan["metadata"]
    for submitted, got in zip(plan["jobs"], shown["jobs"], strict=True):
        assert {k: got.get(k) for k in submitted} == submitted, got
    page.locator("#plan-copy").click()
    expect(page.locator(".toast")).to_contain_text("Plan copied")
    assert json.loads(page.evaluate("navigator.clipboard.readText()")) == shown

    # the timeline: each job's bar starts and ends at its API times, dependents after what they wait for
    origin = datetime.fromisoformat(done["created_at"])
    for job in done["jobs"]:
        row = page.locator(f'#timeline .tl-row[data-job="{job["id"]}"]')
        expect(row.locator(".seg.run")).to_have_count(1)
        start, end = float(row.get_attribute("data-start") or -1), float(row.get_attribute("data-end") or -1)
        assert abs(start - (datetime.fromisoformat(job["started_at"]) - origin).total_seconds()) < 0.002
        assert abs(end - (datetime.fromisoformat(job["finished_at"]) - origin).total_seconds()) < 0.002
    # measured in one evaluation: a live page may redraw the timeline between two separate measurements
    bars = page.evaluate(
        """(ids) => Object.fromEntries(ids.map((id) => {
             const box = document.querySelector(`#timeline .tl-row[data-job="${id}"] .seg.run`).getBoundingClientRect();
             return [id, {x: box.x, width: box.width}];
           }))""",
        [job["id"] for job in done["jobs"]],
    )
    for dependent in ("shot", "score"):
        assert bars[dependent]["x"] >= bars["storyboard"]["x"] + bars["storyboard"]["width"] - 1.5, bars
    # its axis marks are round steps from 0 ("0", "500 ms", "1 s", "2 s"...), never "2.0 s" or "1 min 0 s"
    marks = page.locator("#timeline .tl-ticks span").all_text_contents()
    assert marks[0] == "0" and 3 <= len(marks) <= 6, marks
    unit = {"ms": 0.001, "s": 1, "min": 60, "h": 3600}
    seconds = [float(m.split()[0]) * unit[m.split()[1]] for m in marks[1:]]
    assert all(re.fullmatch(r"\d+(\.5)? (ms|s|min|h)", m) for m in marks[1:]), marks
    steps = {round(b - a, 6) for a, b in zip([0.0, *seconds], seconds, strict=False)}
    assert len(steps) == 1, marks  # evenly spaced

    # each job's log: exactly its events, from the execution's event stream
    events = sse_events(api, key, eid)
    log = page.locator("#job-shot details.log")
    log.locator("summary").click()
    mine = [e for e in events if e["job"] == "shot"]
    expect(log.locator("summary")).to_have_text(f"Log · {len(mine)} events")
    assert [int(s) for s in log.locator("li").evaluate_all("ls => ls.map((l) => l.dataset.seq)")] == [
        e["seq"] for e in mine
    ]
    expect(log.locator("li").last).to_contain_text("job.succeeded")

    # graph edges are drawn first, behind the nodes: each node's centre is the node's, not an edge's
    order = page.evaluate(
        "() => [...document.querySelectorAll('#dag > g')].map((g) => g.querySelector('.edge') ? 'edges' : 'nodes')"
    )
    assert order == ["edges", "nodes"], order
    page.locator("#dag").scroll_into_view_if_needed()
    for job in plan["jobs"]:
        box = page.locator(f'#dag .node[data-job="{job["id"]}"] rect.box').bounding_box()
        assert box is not None
        top = page.evaluate(
            "([x, y]) => document.elementFromPoint(x, y).closest('.node')?.dataset.job ?? null",
            [box["x"] + 8, box["y"] + box["height"] / 2],
        )
        assert top == job["id"]

    # provider logs: what the provider logged, or a sentence saying it logged nothing
    shot_log = page.locator("#job-shot details.plog")
    shot_log.locator("summary").click()
    expect(shot_log.locator("summary")).to_contain_text("6 lines")
    expect(shot_log.locator("pre.plog-text")).to_contain_text("sim: step 00006 of the render")
    quiet = page.locator("#job-storyboard details.plog")
    quiet.locator("summary").click()
    expect(quiet.locator(".plog-body")).to_contain_text("The provider logged nothing for this job.")
    expect(quiet.locator("pre.plog-text")).to_have_count(0)

    assert_one_time_format(page)
    page.evaluate("document.getElementById('jobs').scrollIntoView(); window.scrollBy(0, -64)")
    screenshot(page, "ui-execution-plan.png")
    context.close()


def test_a_job_shows_its_provider_log_and_its_time_in_the_providers_queue(
    browser: Browser, api: ApiServer, key: str, console: Console
) -> None:
    plan = {
        "jobs": [
            sim("render", "video", prompt="harbour at dusk", queue_s=1.0, latency_s=0.3, log_lines=2500),
            {"id": "still", "type": "generate-image", "model": "local/image",
             "params": {"prompt": "sunset", "width": 64, "height": 48}},
        ]
    }  # fmt: skip
    eid = submit(api, key, plan)
    done = finished(api, key, eid)
    assert done["status"] == "succeeded", done
    with api.client(key) as http:
        logs = {j: http.get(f"/v1/executions/{eid}/jobs/{j}/logs").json() for j in ("render", "still")}
    render = next(j for j in done["jobs"] if j["id"] == "render")
    queued = render["provider_queued_s"]
    assert 0.95 <= queued <= 1.3, render  # sim kept it queued 1.0 s; the worker saw it start within a poll
    assert logs["render"]["truncated"] and logs["render"]["dropped_chars"] > 0
    assert "$ ffmpeg " in logs["still"]["text"] and not logs["still"]["truncated"]

    context, page = new_page(browser, api, console, key)
    page.goto(f"/ui#/executions/{eid}")
    expect(page.locator("#exec-status")).to_have_attribute("data-status", "succeeded")

    # the time in the provider's queue: in the job's card, and as a hatched part of its timeline bar
    card = page.locator("#job-render")
    expect(card.locator("dd.provider-timing")).to_have_text(f"queued at provider {queued:.1f} s")
    row = page.locator('#timeline .tl-row[data-job="render"]')
    expect(row.locator(".seg.provider-wait")).to_have_count(1)
    expect(row.locator(".tl-pq")).to_have_count(1)
    assert float(row.locator(".tl-pq").get_attribute("data-seconds") or -1) == queued  # JS writes 1.0 as "1"
    # Both widths in one browser task: the page may redraw the timeline between two separate measurements (a
    # refresh, an event), and an element measured after its row was redrawn has no box (bounding_box() gave None
    # under CI's load).
    wait_w, run_w = page.evaluate("""() => ['.seg.provider-wait', '.seg.run'].map((s) => document
        .querySelector(`#timeline .tl-row[data-job="render"] ${s}`)?.getBoundingClientRect().width ?? null)""")
    # 1.0 s of a ~1.3 s run; the run part may have no width at all when the worker saw the start late (a poll)
    assert wait_w is not None and wait_w > 0.5 * (run_w or 0.0), (wait_w, run_w)

    # the provider logs panel: loaded when opened, the API's text, and what was left out said
    panel = card.locator("details.plog")
    expect(panel.locator("pre.plog-text")).to_have_count(0)  # nothing fetched before it is opened
    panel.locator("summary").click()
    expect(panel.locator(".plog-note")).to_have_text(
        f"{logs['render']['dropped_chars']:,} earlier characters were left out (the last 64 KiB are kept)"
    )
    assert panel.locator("pre.plog-text").text_content() == logs["render"]["text"]
    expect(panel.locator("summary")).to_contain_text(f"{len(logs['render']['text'].splitlines()):,} lines")
    still = page.locator("#job-still details.plog")
    still.locator("summary").click()
    expect(still.locator("pre.plog-text")).to_contain_text("$ ffmpeg ")
    assert still.locator("pre.plog-text").text_content() == logs["still"]["text"]
    expect(still.locator(".plog-note")).to_have_count(0)
    # a job run in the worker has no provider queue: no "0 ms queued at provider" beside it
    expect(page.locator("#job-still dd.provider-timing")).to_have_count(0)
    expect(page.locator('#timeline .tl-row[data-job="still"] .tl-pq')).to_have_count(0)
    expect(page.locator('#timeline .tl-row[data-job="render"] .tl-pq')).to_have_count(1)
    assert_one_time_format(page)
    context.close()


def test_run_again_with_edited_inputs(page: Page, api: ApiServer, key: str, console: Console) -> None:
    plan = {"jobs": [sim("teaser", prompt="too dark", latency_s=0, fail="permanent")], "metadata": {"take": 1}}
    eid = submit(api, key, plan)
    assert finished(api, key, eid)["status"] == "failed"
    with_params(page, plan, eid)
    page.goto(f"/ui#/executions/{eid}")
    expect(page.locator("#job-teaser blockquote.prompt")).to_have_text("too dark")
    page.locator("#plan-edit-open").click()
    editor = page.locator("#plan-edit")
    expect(editor).to_be_focused()
    edited = json.loads(editor.input_value())
    editor.fill("{not json")
    page.locator("#plan-run").click()
    expect(page.locator("#plan .alert")).to_contain_text("The plan is not valid JSON")

    del edited["jobs"][0]["params"]["fail"]  # the tweak: no failure this time, and a brighter prompt
    edited["jobs"][0]["params"]["prompt"] = "brighter, golden hour"
    edited["metadata"]["take"] = 2
    editor.fill(json.dumps(edited, indent=2))
    page.locator("#plan-run").click()
    page.wait_for_url(lambda url: "#/executions/ex_" in url and not url.endswith(eid))
    new_id = page.url.rsplit("/", 1)[-1]
    expect(page.locator(".toast").last).to_contain_text(f"Submitted as a new execution {new_id}")
    expect(page.locator("#exec-status")).to_have_attribute("data-status", "succeeded", timeout=15_000)
    new = state(api, key, new_id)
    assert new["status"] == "succeeded" and new["metadata"] == {"take": 2}
    if "params" in new["jobs"][0]:
        assert new["jobs"][0]["params"]["prompt"] == "brighter, golden hour"
        expect(page.locator("#job-teaser blockquote.prompt")).to_have_text("brighter, golden hour")


def test_search_and_filter_the_executions(browser: Browser, api: ApiServer, console: Console) -> None:
    finder = api.new_key("finder").api_key
    one = submit(api, finder, {"jobs": [sim("a", latency_s=0)], "metadata": {"shot": "1"}})
    two = submit(api, finder, {"jobs": [sim("a", latency_s=0)], "metadata": {"shot": "2"}})
    two_b = submit(api, finder, {"jobs": [sim("a", fail="permanent")], "metadata": {"shot": "2", "take": "b"}})
    for eid in (one, two, two_b):
        finished(api, finder, eid)
    asked: list[str] = []
    context, page = new_page(browser, api, console, finder)
    page.on("request", lambda r: asked.append(r.url) if "/v1/executions?" in r.url else None)
    page.goto("/ui#/executions")
    rows = page.locator("#executions tbody tr[data-id]")
    expect(rows).to_have_count(3)

    def ids() -> list[str]:
        return sorted(r.get_attribute("data-id") or "" for r in rows.all())

    page.locator("#f-meta").fill("shot=2")
    page.locator("#f-apply").click()
    expect(page).to_have_url(re.compile(r"#/executions\?meta=shot%3D2$"))
    expect(rows).to_have_count(2)
    assert ids() == sorted([two, two_b])
    expect(page.locator("#exec-count")).to_have_text("2 shown of 3 loaded · end of list")
    page.locator('.chip[data-filter="failed"]').click()  # the status goes to the API, the metadata stays
    expect(rows).to_have_count(1)
    assert ids() == [two_b] and "status=failed" in asked[-1]
    page.locator('.chip[data-filter="all"]').click()
    # the chip draws the list anew: type into the new form, not the one it replaces
    expect(page.locator('.chip[data-filter="all"]')).to_have_attribute("aria-pressed", "true")
    page.locator("#f-meta").fill("shot=2, take=b")
    page.locator("#f-apply").click()
    expect(rows).to_have_count(1)

    page.locator("#f-clear").click()
    expect(rows).to_have_count(3)
    page.locator("#f-q").fill(one[-6:])  # part of an id
    page.locator("#f-apply").click()
    expect(rows).to_have_count(1)
    assert ids() == [one]

    # dates: from (the API's created_after) and to (in the page), local days
    local_day = "(() => { const d = new Date(); return new Date(d - d.getTimezoneOffset() * 60000); })()"
    today = page.evaluate(f"{local_day}.toISOString().slice(0, 10)")
    day = datetime.fromisoformat(today)
    tomorrow, yesterday = (day + timedelta(days=1)).date().isoformat(), (day - timedelta(days=1)).date().isoformat()
    page.goto(f"/ui#/executions?from={tomorrow}")
    expect(page.locator("#executions-empty, .empty").first).to_contain_text("No matching executions")
    assert "created_after=" in asked[-1]
    page.goto(f"/ui#/executions?to={yesterday}")
    expect(page.locator(".empty").first).to_contain_text("No matching executions")
    page.goto(f"/ui#/executions?from={today}&to={today}")
    expect(rows).to_have_count(3)
    expect(page.locator("#f-from")).to_have_value(today)
    with api.client(finder) as http:
        created_after = asked[-1].split("created_after=")[1].split("&")[0]
        listed = http.get("/v1/executions", params={"created_after": unquote(created_after)}).json()["data"]
    assert sorted(e["id"] for e in listed) == ids()
    assert_one_time_format(page)
    context.close()


def test_webhook_attempts_show_the_request_and_the_response(
    page: Page, api: ApiServer, key: str, receiver: Receiver
) -> None:
    eid = submit(api, key, {"jobs": [sim("teaser", latency_s=0)], "webhook": receiver.url})
    wait_for(lambda: receiver.ids(eid), "the webhook")
    sent = next(body for _, body in receiver.hits if body["data"]["id"] == eid)
    with api.client(key) as http:
        attempt = http.get("/v1/webhook-deliveries", params={"execution_id": eid}).json()["data"][0]["attempts"][0]
    if "request_body" not in attempt:  # until the API keeps them: the page shows what it is given
        page.goto(f"/ui#/webhooks?execution_id={eid}")  # #/webhooks is the deliveries page too
        page.locator("#deliveries tbody tr[data-id] td").first.click()
        expect(page.locator("#deliveries .exchange .body-missing").first).to_contain_text("keeps no copy")

        def handle(route: Any) -> None:
            response = route.fetch()
            body = response.json()
            for d in body["data"]:
                for a in d["attempts"]:
                    a.setdefault("request_body", json.dumps(sent) if d["execution_id"] == eid else None)
                    a.setdefault("response_body", "{}")
            route.fulfill(response=response, json=body)

        page.route(re.compile(r"/v1/webhook-deliveries\?"), handle)
    page.goto(f"/ui#/deliveries?execution_id={eid}")
    page.locator("#deliveries tbody tr[data-id] td").first.click()
    exchange = page.locator("#deliveries .attempt .exchange").first
    expect(exchange.locator(".request .label")).to_contain_text(f"POST {receiver.url}")
    assert json.loads(exchange.locator(".request pre").text_content() or "") == sent
    expect(exchange.locator(".response .label")).to_contain_text("HTTP 200")
    expect(exchange.locator(".response pre")).to_have_text("{}")
    assert_one_time_format(page)
    screenshot(page, "ui-deliveries.png")


def test_the_workers_page_and_unknown_pages(page: Page, api: ApiServer, key: str, console: Console) -> None:
    busy = submit(api, key, {"jobs": [sim("long-render", latency_s=30)]})
    wait_for(lambda: state(api, key, busy)["status"] == "running", "the long execution to start")
    with api.client(key) as http:
        stats = http.get("/v1/stats")
    page.goto("/ui#/overview")
    page.get_by_role("link", name="Workers", exact=True).click()
    expect(page).to_have_url(re.compile(r"#/workers$"))
    expect(page.get_by_role("heading", name="Workers and queue")).to_be_visible()
    if stats.status_code == 404:
        console.expect_failure("/v1/stats")
        expect(page.locator("#stats-unavailable")).to_contain_text("not available")
    else:
        figures = stats.json()
        expect(page.locator("#w-live .value")).to_have_text(f"{figures['workers']['live']:,}")
        expect(page.locator("#w-queue .value")).to_have_text(f"{figures['queue_depth']:,}")
        expect(page.locator("#w-slots .value")).to_have_text(f"{figures['workers']['slots_in_use']:,}")
        expect(page.locator("#worker-providers tbody tr")).to_have_count(len(figures["providers"]))
        expect(page.get_by_role("heading", name="Circuits")).to_be_visible()  # from GET /v1/providers
        assert_one_time_format(page)
    screenshot(page, "ui-workers.png")
    with api.client(key) as http:
        assert http.post(f"/v1/executions/{busy}/cancel").status_code == 200
    if stats.status_code == 200 and "list" not in stats.json()["workers"]:  # per worker and per queue, once given
        extra = {
            "list": [{"id": "vm-1", "slots": 8, "slots_in_use": 3, "last_seen": "2026-12-06T10:00:00Z"}],
            "queues": [{"name": "replicate", "depth": 4}, {"name": "local", "depth": 0}],
        }

        def handle(route: Any) -> None:
            response = route.fetch()
            body = response.json()
            body["workers"]["list"] = extra["list"]
            body["queues"] = extra["queues"]
            route.fulfill(response=response, json=body)

        page.route(re.compile(r"/v1/stats$"), handle)
        page.reload()
        expect(page.locator("#worker-list tbody tr")).to_have_count(1)
        expect(page.locator("#worker-list tbody tr")).to_contain_text("3 of 8")
        expect(page.locator("#queue-list tbody tr")).to_have_count(2)
        expect(page.locator("#queue-list tbody tr").first).to_contain_text("replicate4")

    page.goto("/ui#/webhooks")
    expect(page.get_by_role("heading", name="Webhook deliveries")).to_be_visible()
    expect(page.locator('#nav a[aria-current="page"]')).to_have_text("Webhooks")
    for unknown in ("#/nowhere", "#/executions/ex_1/extra", "#/overview/2"):
        page.goto(f"/ui{unknown}")
        expect(page.locator("#not-found")).to_contain_text("Page not found")
        expect(page.locator("#executions")).to_have_count(0)
