"""Signed artifact links, the public URL `serve` gives, ISO times on events, API docs without a CDN (issue 15).

Every link to one of the tenant's artifacts in a state, an event or a webhook body carries `?exp=&sig=` and opens
without an API key; a changed signature, expiry or key, or an expired link, answers 403 saying which; the Bearer
route is unchanged. Links are signed when an answer is written, and only for the tenant's own artifacts.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from apiserver import ApiServer, module_database, server_settings
from reelflow.api.app import create_app
from reelflow.config import Settings, public_url_for
from reelflow.storage import LinkRefused, LinkSigner, link_signature
from reelflow.webhooks import verify_webhook
from test_api import read_sse
from test_webhooks import Receiver

KEY = "ab/" + "ab" * 32 + ".png"
OTHER = "cd/" + "cd" * 32 + ".png"
TERMINAL = {"succeeded", "failed", "canceled"}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# --------------------------------------------------------------------------- the signer alone
def test_a_link_checks_with_its_key_and_expiry_only() -> None:
    now = [1_000_000.0]
    signer = LinkSigner(b"secret", "http://h:1/", 60, clock=lambda: now[0])
    link = signer.link(KEY)
    parts = urlsplit(link)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"http://h:1/v1/artifacts/{KEY}"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert set(query) == {"exp", "sig"} and query["exp"] == "1000060"
    signer.check(KEY, query["exp"], query["sig"])  # opens
    refusals = {
        "changed sig": (KEY, query["exp"], query["sig"][:-2] + "AA"),
        "changed exp": (KEY, "1000061", query["sig"]),
        "other key": (OTHER, query["exp"], query["sig"]),
        "other secret": (KEY, query["exp"], link_signature(b"other", KEY, 1000060)),
        "no sig": (KEY, query["exp"], None),
        "exp not a number": (KEY, "-5", query["sig"]),
    }
    for name, (key, exp, sig) in refusals.items():
        with pytest.raises(LinkRefused):
            signer.check(key, exp, sig)
            pytest.fail(name)
    now[0] += 60  # the expiry second itself no longer opens
    with pytest.raises(LinkRefused, match="expired"):
        signer.check(KEY, query["exp"], query["sig"])


async def test_only_the_owned_artifacts_are_signed_wherever_they_were_stored_from() -> None:
    signer = LinkSigner(b"s", "http://api:9", 60)
    answer = {
        "jobs": [{"result": {"url": f"http://worker-default:8000/v1/artifacts/{KEY}", "key": KEY, "size": 3}}],
        "metadata": {"mine": f"http://api:9/v1/artifacts/{KEY}", "theirs": f"http://api:9/v1/artifacts/{OTHER}"},
        "elsewhere": f"https://cdn.example/v1/artifacts/{KEY}",
    }
    asked: list[set[str]] = []

    async def owned(keys: Any) -> set[str]:
        asked.append(set(keys))
        return {KEY}

    signed = await signer.sign_links(answer, owned)
    assert asked == [{KEY, OTHER}]  # one question for the whole answer
    url = signed["jobs"][0]["result"]["url"]
    assert url.startswith(f"http://api:9/v1/artifacts/{KEY}?exp=")  # rebased on this server's public URL
    assert signed["metadata"]["mine"].startswith(f"http://api:9/v1/artifacts/{KEY}?exp=")
    assert signed["metadata"]["theirs"] == answer["metadata"]["theirs"]  # not the tenant's: left unsigned
    assert signed["elsewhere"] == answer["elsewhere"]  # another server's link
    assert answer["jobs"][0]["result"]["url"].startswith("http://worker-default")  # the input is not changed


# --------------------------------------------------------------------------- the public URL of serve
def test_serve_makes_the_public_url_its_own_address_unless_it_is_set() -> None:
    default = Settings(_env_file=None)
    assert public_url_for("127.0.0.1", 18000, default).public_url == "http://127.0.0.1:18000"
    assert public_url_for("0.0.0.0", 18000, default).public_url == "http://127.0.0.1:18000"
    assert public_url_for("::", 9, default).public_url == "http://127.0.0.1:9"
    assert public_url_for("::1", 9, default).public_url == "http://[::1]:9"
    assert public_url_for("media.example", 80, default).public_url == "http://media.example:80"
    served = public_url_for("127.0.0.1", 18000, default)
    assert not served.callbacks_enabled  # still the default: providers are not asked to call a local address
    assert default.public_url == "http://127.0.0.1:8000"  # the settings given are not changed
    chosen = Settings(_env_file=None, public_url="https://api.example")
    assert public_url_for("0.0.0.0", 18000, chosen).public_url == "https://api.example"


def test_the_serve_command_passes_its_port_on(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import reelflow.api.server as server
    import reelflow.engine.worker as worker
    import reelflow.logs as logs
    from reelflow import cli
    from reelflow.config import get_settings

    seen: dict[str, Any] = {}

    def fake_config(app: Any, settings: Settings, **options: Any) -> Any:
        seen["public_url"] = settings.public_url
        raise SystemExit(0)

    monkeypatch.setenv("REELFLOW_DATABASE_URL", f"sqlite:///{tmp_path}/r.db")
    monkeypatch.delenv("REELFLOW_PUBLIC_URL", raising=False)
    monkeypatch.setattr(server, "server_config", fake_config)
    monkeypatch.setattr(logs, "configure_logging", lambda *a, **k: None)  # the test process's logging stays
    monkeypatch.setattr(worker, "tune_gc", lambda: None)
    get_settings.cache_clear()
    try:
        CliRunner().invoke(cli.app, ["serve", "--port", "18000", "--workers", "0"])
    finally:
        get_settings.cache_clear()
    assert seen == {"public_url": "http://127.0.0.1:18000"}


# --------------------------------------------------------------------------- through the API
@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    r.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("links")
    with module_database(request.param, root) as url:
        settings = server_settings(root, database_url=url, allow_private_urls=True)
        with ApiServer(settings, workers=1, deliver_webhooks=True) as server:
            yield server


def still(prompt: str) -> dict[str, Any]:
    return {
        "id": "still", "type": "generate-image", "model": "local/image",
        "params": {"prompt": prompt, "width": 64, "height": 64},
    }  # fmt: skip


def run(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    r = http.post("/v1/executions", json=body)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 60
    while True:
        state: dict[str, Any] = http.get(f"/v1/executions/{r.json()['id']}").json()
        if state["status"] in TERMINAL:
            assert state["status"] == "succeeded", state["error"]
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.05)


def local(link: str) -> str:
    """A link's path and query, to ask the test server (links name the configured public URL)."""
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


@pytest.fixture(scope="module")
def made(api: ApiServer, receiver: Receiver) -> dict[str, Any]:
    """Tenant A's finished execution (a webhook to the receiver), and tenant B's key."""
    a, b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    a_key, b_key = api.new_key(a), api.new_key(b)
    with api.client(a_key.api_key) as http:
        state = run(http, {"jobs": [still("a red square")], "webhook": receiver.url})
    return {"state": state, "a": a_key, "b": b_key}


def test_a_state_link_opens_without_a_key_and_only_unchanged(api: ApiServer, made: dict[str, Any]) -> None:
    result = made["state"]["jobs"][0]["result"]
    link, key = result["url"], result["key"]
    assert made["state"]["result"]["url"].startswith(f"http://127.0.0.1:8000/v1/artifacts/{key}?exp=")
    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    assert int(query["exp"]) - time.time() == pytest.approx(7 * 86400, abs=60)  # 7 days by default
    with api.client() as anonymous:
        opened = anonymous.get(local(link))
        assert opened.status_code == 200, opened.text
        assert opened.content.startswith(b"\x89PNG") and opened.headers["content-type"] == "image/png"
        bad = {
            "does not match": f"/v1/artifacts/{key}?exp={query['exp']}&sig={query['sig'][::-1]}",
            "does not match ": f"/v1/artifacts/{key}?exp={int(query['exp']) + 1}&sig={query['sig']}",
            " does not match": f"/v1/artifacts/{OTHER}?exp={query['exp']}&sig={query['sig']}",
            "needs both": f"/v1/artifacts/{key}?exp={query['exp']}",
            "not a time": f"/v1/artifacts/{key}?exp=soon&sig={query['sig']}",
        }
        for why, path in bad.items():
            refused = anonymous.get(path)
            assert refused.status_code == 403, (why, refused.text)
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert why.strip() in refused.json()["detail"]
        assert anonymous.get(f"/v1/artifacts/{key}").status_code == 401  # no key, no signature: as before


def test_an_expired_link_answers_403(api: ApiServer, made: dict[str, Any]) -> None:
    key = made["state"]["jobs"][0]["result"]["key"]
    signer = api.call(api.app.state.services.signer())
    exp = int(time.time()) - 1  # signed with the server's own secret, but a second ago
    with api.client() as anonymous:
        refused = anonymous.get(f"/v1/artifacts/{key}?exp={exp}&sig={link_signature(signer.secret, key, exp)}")
    assert refused.status_code == 403 and "expired" in refused.json()["detail"]


def test_the_bearer_route_is_unchanged(api: ApiServer, made: dict[str, Any]) -> None:
    key = made["state"]["jobs"][0]["result"]["key"]
    with api.client(made["a"].api_key) as a, api.client(made["b"].api_key) as b:
        assert a.get(f"/v1/artifacts/{key}").status_code == 200
        assert a.get(f"/v1/artifacts/{key}", headers={"Range": "bytes=0-9"}).status_code == 206
        assert b.get(f"/v1/artifacts/{key}").status_code == 404  # another tenant's
        assert b.get(f"/v1/artifacts/{key}?exp=1&sig=x").status_code == 404  # with a key, the query is not read


def test_another_tenant_gets_no_signature_for_an_artifact_it_does_not_own(
    api: ApiServer, made: dict[str, Any]
) -> None:
    a_result = made["state"]["jobs"][0]["result"]
    unsigned = f"http://127.0.0.1:8000/v1/artifacts/{a_result['key']}"
    with api.client(made["b"].api_key) as b:
        state = run(b, {"jobs": [still("a blue square")], "metadata": {"seen": unsigned}})
        assert state["metadata"]["seen"] == unsigned  # echoed, not signed: B does not own it
        b_result = state["jobs"][0]["result"]
        assert b_result["key"] != a_result["key"] and "sig=" in b_result["url"]
        a_query = urlsplit(a_result["url"]).query
        with api.client() as anonymous:  # A's signature on B's key does not open it
            assert anonymous.get(f"/v1/artifacts/{b_result['key']}?{a_query}").status_code == 403


def test_events_carry_iso_times_and_signed_links(api: ApiServer, made: dict[str, Any]) -> None:
    execution_id = made["state"]["id"]
    with api.client(made["a"].api_key) as http:
        events = [e["payload"] for e in read_sse(http, f"/v1/executions/{execution_id}/events")]
    assert all(ISO.match(e["created_at"]) for e in events)
    assert all(isinstance(e["created_at_unix"], float) for e in events)
    first = events[0]
    assert time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(first["created_at_unix"])) == first["created_at"][:19]
    done = next(e for e in events if e["type"] == "job.succeeded")
    with api.client() as anonymous:
        assert anonymous.get(local(done["data"]["result"]["url"])).status_code == 200


def test_a_webhook_body_link_opens(api: ApiServer, made: dict[str, Any], receiver: Receiver) -> None:
    execution_id = made["state"]["id"]
    deadline = time.monotonic() + 20
    while not (hits := [h for h in receiver.at() if h.event["data"]["id"] == execution_id]):
        assert time.monotonic() < deadline, "no webhook came"
        time.sleep(0.05)
    body = verify_webhook(hits[0].body, hits[0].headers, made["a"].webhook_secret)  # signed over what was sent
    assert body["type"] == "execution.succeeded" and ISO.match(body["created_at"])
    assert body["created_at"] == body["timestamp"]
    link = body["data"]["jobs"][0]["result"]["url"]
    assert "sig=" in link
    with api.client() as anonymous:
        opened = anonymous.get(local(link))
        assert opened.status_code == 200 and opened.content.startswith(b"\x89PNG")
    stored = api.query("SELECT payload FROM webhook_deliveries WHERE execution_id = ?", execution_id)
    assert all("sig=" not in p for (p,) in stored)  # signed when sent, never stored


def test_the_link_secret_setting_is_used(tmp_path: Path) -> None:
    settings = server_settings(tmp_path, link_secret="shared-by-every-process", link_seconds=5)
    app = create_app(settings)
    with ApiServer(settings, app=app) as server:
        signer = server.call(app.state.services.signer())
    assert signer.secret == b"shared-by-every-process" and signer.seconds == 5


# --------------------------------------------------------------------------- API docs without a CDN
class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_docs_are_served_from_the_app_itself(tmp_path: Path, page: str) -> None:
    with ApiServer(server_settings(tmp_path)) as server, server.client() as http:
        html = http.get(page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert html.headers["content-security-policy"].startswith("default-src 'self';")  # and nothing else
        foreign = re.findall(r"https?://[^\s\"'`)<>]+", html.text)
        assert foreign == [], foreign  # nothing is fetched from another host (no CDN, no fonts)
        parser = _Refs()
        parser.feed(html.text)
        assets = [*parser.refs, *re.findall(r"url: ['\"]([^'\"]+)['\"]", html.text)]
        assert any(a.endswith(".js") for a in assets), assets
        for asset in assets:
            assert asset.startswith("/"), asset
            got = http.get(asset)
            assert got.status_code == 200, (asset, got.status_code)
            assert len(got.content) > 100
