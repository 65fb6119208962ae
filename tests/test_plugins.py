"""Provider plugins through real entry points: tiny distributions written into tmp_path and put on sys.path,
found by importlib.metadata in the `reelflow.providers` group."""

from __future__ import annotations

import importlib
import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import WorkerFactory
from reelflow.engine.scheduler import Engine
from reelflow.errors import PlanError
from reelflow.estimate import estimate_plan
from reelflow.plan import parse_plan
from reelflow.providers.catalog import get_model, known_providers, list_models, load_catalog_file, reset_extensions
from reelflow.providers.local import LocalProvider
from reelflow.providers.plugins import load_plugins
from reelflow.providers.registry import default_providers, missing_credential

GOOD_MODULE = '''
import struct
import zlib

from reelflow.providers.base import Output, ProgressUpdate, ProviderResult
from reelflow.providers.catalog import input_names

CALLS = {"made": 0, "submit": 0, "wait": 0, "cancel": 0}


def png(width, height):
    """A grey PNG of this size: outputs are stored only when their bytes are the image their job makes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = bytes([0] + [128] * width) * height
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    signature = bytes([137, 80, 78, 71, 13, 10, 26, 10])
    return signature + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


class AcmeProvider:
    """Draws a grey image as wide as the prompt is long."""

    name = "acme"
    key_env = "ACME_TOKEN"

    def __init__(self):
        CALLS["made"] += 1

    def models(self):
        return [
            {
                "id": "acme/echo",
                "types": ["generate-image", "run"],
                "params": {"prompt": {"type": "string", "required": True, "input": "text"}},
                "limits": {"prompt_length": 100},
                "price": {"unit": "run", "usd": 0.25},
            }
        ]

    async def submit(self, task):
        CALLS["submit"] += 1
        return "acme-" + task.job_id

    async def wait(self, task, provider_id, report):
        CALLS["wait"] += 1
        maybe = report(ProgressUpdate(phase="running", percent=50.0))
        if maybe is not None:
            await maybe
        names = input_names(task.model)
        body = {names.get(k, k): v for k, v in task.params.items()}
        path = task.workdir / "echo.png"
        path.write_bytes(png(len(body["text"]), 2))
        return ProviderResult(
            outputs=[Output(path=path, content_type="image/png")],
            fields={"provider_id": provider_id, "sent": body},
            cost_usd=0.25,
        )

    async def cancel(self, task, provider_id):
        CALLS["cancel"] += 1
'''

BROKEN_MODULES = {
    "import_fails": "raise RuntimeError('the acme SDK is not installed')\n",
    "factory_fails": "def make():\n    raise ValueError('no config')\n",
    "wrong_name": GOOD_MODULE.replace('name = "acme"', 'name = "other"'),
    "sync_submit": GOOD_MODULE.replace("async def submit", "def submit"),
    "bad_models": GOOD_MODULE.replace('"usd": 0.25', '"usd": "cheap"'),
    "foreign_model": GOOD_MODULE.replace('"id": "acme/echo"', '"id": "replicate/acme/echo"'),
}


def write_dist(site: Path, dist: str, modules: dict[str, str], entry_points: dict[str, str]) -> None:
    """A minimal installed distribution: `<dist>-1.0.dist-info/{METADATA,entry_points.txt}` plus modules."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[reelflow.providers]\n{lines}\n")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """A folder on sys.path for distributions; plugins and the catalog are rediscovered around the test."""
    folder = tmp_path / "site"
    folder.mkdir()
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    reset_extensions()
    yield folder
    sys.path.remove(str(folder))
    for name in [m for m in sys.modules if m.startswith("acme_")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    reset_extensions()


@pytest.fixture
def acme(site: Path) -> Path:
    write_dist(site, "acme-reelflow", {"acme_reelflow": GOOD_MODULE}, {"acme": "acme_reelflow:AcmeProvider"})
    return site


def plan(prompt: str = "hello from the plugin") -> dict[str, object]:
    return {"jobs": [{"id": "echo", "type": "generate-image", "model": "acme/echo", "params": {"prompt": prompt}}]}


def test_a_plugin_is_found_with_its_models_and_credential(acme: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugins = load_plugins()
    assert list(plugins) == ["acme"]
    assert plugins["acme"].origin == "acme_reelflow:AcmeProvider from acme-reelflow 1.0"
    assert "acme" in known_providers()
    model = get_model("acme/echo")
    assert model is not None and model.provider == "acme" and model.params["prompt"].max_length == 100
    assert "acme/echo" in {m.id for m in list_models()}
    assert estimate_plan(plan())["cost_usd"] == pytest.approx(0.25)
    with pytest.raises(PlanError, match="longer than 100 characters"):
        parse_plan(plan("x" * 101))
    monkeypatch.delenv("ACME_TOKEN", raising=False)
    assert missing_credential("acme") == "ACME_TOKEN"
    monkeypatch.setenv("ACME_TOKEN", "t0ken")
    assert missing_credential("acme") is None
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    assert missing_credential("replicate") == "REPLICATE_API_TOKEN"  # built-ins unchanged
    assert missing_credential("sim") is None


async def test_a_plan_on_a_plugin_model_runs_end_to_end(
    acme: Path, engine: Engine, running_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACME_TOKEN", raising=False)
    with pytest.raises(PlanError, match="acme/echo needs ACME_TOKEN, which is not set"):
        await engine.submit(plan())
    monkeypatch.setenv("ACME_TOKEN", "t0ken")
    providers = default_providers()
    assert {"local", "sim", "replicate", "fal", "elevenlabs", "openai", "acme"} <= set(providers)
    eid = await engine.submit(plan())
    async with running_worker(providers_=providers):
        state = await engine.wait(eid, timeout=30)
    assert state["status"] == "succeeded", state["error"]
    [job] = state["jobs"]
    result = job["result"]
    assert result["provider_id"] == "acme-echo"
    assert result["sent"] == {"text": "hello from the plugin"}  # the model's input mapping, read by the plugin
    assert Path(result["path"]).read_bytes().startswith(b"\x89PNG")
    assert (result["width"], result["height"]) == (len("hello from the plugin"), 2)  # probed from the stored file
    assert job["cost"] == {"estimated": 0.25, "actual": 0.25}  # the plugin model's price, and what it reported
    calls = sys.modules["acme_reelflow"].CALLS
    assert (calls["submit"], calls["wait"], calls["cancel"]) == (1, 1, 0)


@pytest.mark.parametrize(
    ("module", "target", "logged"),
    [
        ("import_fails", "acme_broken:AcmeProvider", "skipped: RuntimeError: the acme SDK is not installed"),
        ("factory_fails", "acme_broken:make", "skipped: ValueError: no config"),
        ("wrong_name", "acme_broken:AcmeProvider", "skipped: PluginError: its provider's name is 'other', not 'acme'"),
        ("sync_submit", "acme_broken:AcmeProvider", "skipped: PluginError: its provider's submit() must be async"),
        ("bad_models", "acme_broken:AcmeProvider", "model 'acme/echo': price.usd: Input should be a valid number"),
        ("foreign_model", "acme_broken:AcmeProvider", "id: unknown provider 'replicate'"),
    ],
)
async def test_a_broken_plugin_is_logged_by_name_and_skipped(
    site: Path,
    module: str,
    target: str,
    logged: str,
    caplog: pytest.LogCaptureFixture,
    engine: Engine,
    running_worker: WorkerFactory,
) -> None:
    write_dist(site, "acme-broken", {"acme_broken": BROKEN_MODULES[module]}, {"acme": target})
    with caplog.at_level(logging.ERROR, logger="reelflow.providers.plugins"):
        providers = default_providers()
    assert "acme" not in providers
    assert {"local", "sim", "replicate", "fal", "elevenlabs", "openai"} <= set(providers)
    [record] = [r for r in caplog.records if r.name == "reelflow.providers.plugins"]
    assert record.getMessage().startswith(f"provider plugin 'acme' ({target} from acme-broken 1.0)")
    assert logged in record.getMessage()
    assert get_model("acme/echo") is None and "acme" not in known_providers()
    with pytest.raises(PlanError, match="unknown provider 'acme'"):
        parse_plan(plan())
    # the worker runs on without it
    eid = await engine.submit({"type": "generate-image", "model": "sim/image", "params": {"latency_s": 0.01}})
    async with running_worker(providers_=providers):
        state = await engine.wait(eid, timeout=30)
    assert state["status"] == "succeeded", state["error"]


def test_a_plugin_cannot_take_a_built_in_name(site: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_dist(
        site,
        "acme-impostor",
        {"acme_impostor": GOOD_MODULE.replace('"acme"', '"local"')},
        {"local": "acme_impostor:AcmeProvider"},
    )
    with caplog.at_level(logging.ERROR, logger="reelflow.providers.plugins"):
        providers = default_providers()
    assert isinstance(providers["local"], LocalProvider)
    assert "acme_impostor" not in sys.modules  # refused before anything of it ran
    messages = [r.getMessage() for r in caplog.records if r.name == "reelflow.providers.plugins"]
    assert messages == [
        "provider plugin 'local' (acme_impostor:AcmeProvider from acme-impostor 1.0) refused: 'local' is a "
        "built-in provider and a plugin cannot replace it"
    ]


def test_a_second_plugin_of_the_same_name_is_refused(acme: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_dist(acme, "acme-copy", {"acme_copy": GOOD_MODULE}, {"acme": "acme_copy:AcmeProvider"})
    with caplog.at_level(logging.ERROR, logger="reelflow.providers.plugins"):
        plugins = load_plugins()
    assert list(plugins) == ["acme"]
    [message] = [r.getMessage() for r in caplog.records if r.name == "reelflow.providers.plugins"]
    assert "refused: provider 'acme' comes from" in message


def test_a_catalog_file_may_add_models_of_a_plugin_provider(acme: Path, tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "models:\n  - id: acme/shout\n    types: [generate-image]\n    params:\n      prompt: {type: string}\n"
        "    price: {unit: image, usd: 0.5}\n  - id: acme/echo\n    types: [run]\n    price: {unit: run, usd: 1}\n"
    )
    with pytest.raises(
        Exception,
        match=r"catalog.yaml:7: model 'acme/echo': id: already in the catalog "
        r"\(provider plugin 'acme'\)",
    ):
        load_catalog_file(path)
    path.write_text(path.read_text().split("  - id: acme/echo")[0])
    load_catalog_file(path)
    shout = get_model("acme/shout")
    assert shout is not None and shout.price.usd == 0.5
