"""/docs (Swagger UI) and /redoc (ReDoc) render in Chromium with every request going to the API server itself.

Chromium: /usr/bin/chromium, as for the dashboard's browser tests (tests/test_ui_browser.py); without it the
module is skipped, or fails when CI is set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from apiserver import ApiServer, server_settings

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise RuntimeError(f"CI is set but Chromium is not at {CHROMIUM}")
    pytest.skip(f"Chromium not found at {CHROMIUM}", allow_module_level=True)
from playwright.sync_api import Browser, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with ApiServer(server_settings(tmp_path_factory.mktemp("docs"))) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


@pytest.mark.parametrize(
    ("page_path", "rendered"),
    [("/docs", ".swagger-ui .info .title"), ("/redoc", "[role=navigation], .menu-content")],
)
def test_the_docs_render_offline_from_the_server_alone(
    server: ApiServer, browser: Browser, page_path: str, rendered: str
) -> None:
    context = browser.new_context()
    requested: list[str] = []
    blocked: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    context.on("requestfailed", lambda r: blocked.append(r.url) if "csp" in (r.failure or "").lower() else None)
    page = context.new_page()
    try:
        page.goto(server.url + page_path)
        page.wait_for_selector(rendered, timeout=20_000)
        page.wait_for_load_state("networkidle")
        assert "reelflow" in page.inner_text("body")
        assert "executions" in page.inner_text("body").lower()  # the operations came from /openapi.json
    finally:
        context.close()
    local = (server.url + "/", f"blob:{server.url}/", "data:")
    others = [u for u in requested if not u.startswith(local) and u not in blocked]
    assert others == [], others  # no CDN, no fonts, no validator badge: nothing but this server
    assert all(not u.startswith(local) for u in blocked)  # the page's policy kept the browser from going out
    assert server.url + "/openapi.json" in requested
