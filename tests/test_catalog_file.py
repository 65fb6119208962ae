"""The user model catalog (REELFLOW_CATALOG_FILE): a good file's models validate, estimate, run and are
listed; a bad file is refused whole, with file, line, model and field of each problem."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apiserver import ApiServer, server_settings
from conftest import WorkerFactory
from fakes.replicate import FakeReplicate
from reelflow.config import Settings
from reelflow.engine.scheduler import Engine
from reelflow.errors import PlanError
from reelflow.estimate import estimate_plan
from reelflow.plan import parse_plan
from reelflow.providers.catalog import (
    Catalog,
    CatalogFileError,
    get_model,
    input_names,
    list_models,
    load_catalog_file,
    load_extensions,
    reset_extensions,
)
from reelflow.providers.catalog import elevenlabs as catalog_elevenlabs
from reelflow.providers.catalog import fal as catalog_fal
from reelflow.providers.catalog import replicate as catalog_replicate
from reelflow.providers.replicate import ReplicateProvider

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "catalog.yaml"
EXAMPLE_IDS = {"replicate/acme/dreamclip", "fal/acme/sketch-to-video", "replicate/acme/poster", "elevenlabs/eleven_v3"}


@pytest.fixture(autouse=True)
def clean_catalog() -> Iterator[None]:
    """Each test starts and ends with no user models (the built-in maps restored)."""
    reset_extensions()
    yield
    reset_extensions()


def write(tmp_path: Path, text: str, name: str = "catalog.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def job(model: str, type_: str, **params: Any) -> dict[str, Any]:
    return {"jobs": [{"id": "a", "type": type_, "model": model, "params": params}]}


def problems_of(path: Path) -> list[str]:
    with pytest.raises(CatalogFileError) as caught:
        load_catalog_file(path)
    return [str(p) for p in caught.value.problems]


# --------------------------------------------------------------------------- a good file


def test_the_example_file_loads_and_its_models_are_catalogued() -> None:
    before = len(list_models())
    loaded = load_catalog_file(EXAMPLE)
    assert {m.id for m in loaded} == EXAMPLE_IDS
    assert len(list_models()) == before + 4
    clip = get_model("replicate/acme/dreamclip")
    assert clip is not None and clip.provider == "replicate" and clip.name == "acme/dreamclip"
    assert clip.types == ["generate-video", "run"]
    assert clip.price.unit == "second" and clip.price.usd == 0.08
    # limits become the parameters' own bounds
    assert clip.max_duration == 10
    assert clip.params["prompt"].max_length == 1500
    assert clip.params["duration"].maximum == 10 and clip.params["duration"].choices == [5, 10]
    # the input mapping is not part of the public spec
    assert "input" not in clip.model_dump()["params"]["image"]


def test_a_file_model_may_say_when_its_price_was_read(tmp_path: Path) -> None:
    text = (
        "models:\n  - id: replicate/acme/x\n    types: [generate-video]\n    price: {unit: run, usd: 1}\n"
        "    price_read: '2026-12-01'\n"
    )
    [spec] = load_catalog_file(write(tmp_path, text))
    assert spec.price_read == "2026-12-01" and spec.model_dump(mode="json")["price_read"] == "2026-12-01"
    [problem] = problems_of(write(tmp_path, text.replace("2026-12-01", "last week"), "bad.yaml"))
    assert "price_read" in problem


def test_a_file_model_may_say_its_price_is_unconfirmed_but_not_also_read(tmp_path: Path) -> None:
    text = (
        "models:\n  - id: replicate/acme/x\n    types: [generate-video]\n    price: {unit: run, usd: 1}\n"
        "    price_unconfirmed: our own guess\n"
    )
    [spec] = load_catalog_file(write(tmp_path, text))
    dumped = spec.model_dump(mode="json")
    assert (dumped["price_unconfirmed"], dumped["price_read"], dumped["price_confirmed"]) == (
        "our own guess",
        None,
        False,
    )
    both = text.replace("acme/x", "acme/y") + "    price_read: '2026-12-01'\n"
    [problem] = problems_of(write(tmp_path, both, "both.yaml"))
    assert "either read (price_read) or unconfirmed, not both" in problem


def test_settings_name_the_file_and_it_loads_once(tmp_path: Path) -> None:
    settings = Settings(catalog_file=str(EXAMPLE), _env_file=None)  # type: ignore[call-arg]
    load_extensions(settings)
    assert get_model("fal/acme/sketch-to-video") is not None
    load_extensions(settings)  # a second call changes nothing
    assert sum(m.id in EXAMPLE_IDS for m in list_models()) == 4
    reset_extensions()
    assert get_model("fal/acme/sketch-to-video") is None


def test_plans_with_user_models_validate_and_estimate_with_their_price() -> None:
    load_catalog_file(EXAMPLE)
    plan = {
        "jobs": [
            {
                "id": "clip",
                "type": "generate-video",
                "model": "replicate/acme/dreamclip",
                "params": {"prompt": "waves", "duration": 10},
            },
            {
                "id": "poster",
                "type": "generate-image",
                "model": "replicate/acme/poster",
                "params": {"prompt": "a poster", "num_outputs": 3},
            },
            {"id": "voice", "type": "generate-audio", "model": "elevenlabs/eleven_v3", "params": {"text": "x" * 250}},
            {
                "id": "sketch",
                "type": "generate-video",
                "model": "fal/acme/sketch-to-video",
                "params": {"prompt": "p", "image": "https://example.com/a.png"},
            },
            {
                "id": "default",
                "type": "generate-video",
                "model": "replicate/acme/dreamclip",
                "params": {"image": "$poster"},
            },
        ]
    }
    parse_plan(plan)
    answer = estimate_plan(plan)
    costs = {j["id"]: j["cost_usd"] for j in answer["jobs"]}
    assert costs["clip"] == pytest.approx(0.8)  # 10 s at $0.08/s
    assert costs["poster"] == pytest.approx(0.03)  # 3 images at $0.01
    assert costs["voice"] == pytest.approx(0.05)  # 250 characters at $0.0002
    assert costs["sketch"] == pytest.approx(0.2)  # per run
    assert costs["default"] == pytest.approx(0.4)  # the default duration, 5 s
    assert answer["cost_usd"] == pytest.approx(1.48)
    clip_seconds = next(j["seconds"] for j in answer["jobs"] if j["id"] == "clip")
    assert clip_seconds == pytest.approx(30 + 6 * 10)


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        (job("replicate/acme/dreamclip", "generate-video", prompt="x", duration=7), "duration must be one of 5, 10"),
        (job("replicate/acme/dreamclip", "generate-video", prompt="x" * 1501), "longer than 1500 characters"),
        (job("replicate/acme/dreamclip", "generate-video", duration=5), "one of prompt or image is required"),
        (job("replicate/acme/dreamclip", "generate-image", prompt="x"), "does not support generate-image"),
        (job("replicate/acme/poster", "generate-image", prompt="x", colour="red"), "unknown parameter 'colour'"),
        (job("elevenlabs/eleven_v3", "generate-audio", text="x" * 5001), "longer than 5000 characters"),
    ],
)
def test_plans_breaking_a_user_models_rules_are_refused(plan: dict[str, Any], expected: str) -> None:
    load_catalog_file(EXAMPLE)
    with pytest.raises(PlanError) as caught:
        parse_plan(plan)
    assert expected in str(caught.value)


def test_input_names_reach_the_adapters_through_the_catalog_and_leave_the_data_modules_alone() -> None:
    catalog = Catalog()
    catalog.load_file(EXAMPLE)
    mapped = {"image": "first_frame", "duration": "length_s"}
    assert catalog.replicate_inputs("replicate/acme/dreamclip") == mapped
    assert catalog.replicate_inputs("replicate/acme/dreamclip:abc123") == mapped
    spec = catalog.replicate_spec("replicate/acme/dreamclip")
    assert spec is not None and spec.price.usd == 0.08
    eleven = catalog.elevenlabs_spec("elevenlabs/eleven_v3")
    assert eleven is not None and eleven.price.unit == "character"
    assert catalog.input_names("replicate/acme/poster") == {"aspect_ratio": "ratio"}
    body = catalog_fal.to_fal_input(
        "fal/acme/sketch-to-video",
        {"prompt": "p", "image": "https://example.com/a.png", "duration": 4, "resolution": "720p"},
        catalog.fal_inputs("fal/acme/sketch-to-video"),
    )
    assert body == {"prompt": "p", "image_url": "https://example.com/a.png", "duration": "4", "resolution": "720P"}
    # the process's default catalog and the providers' data modules never saw them
    assert get_model("replicate/acme/dreamclip") is None
    assert input_names("replicate/acme/poster") == {}
    assert "replicate/acme/dreamclip" not in catalog_replicate.INPUT_MAPS
    assert "replicate/acme/dreamclip" not in catalog_replicate.MODELS_BY_ID
    assert "fal/acme/sketch-to-video" not in catalog_fal.INPUT_MAP
    assert "elevenlabs/eleven_v3" not in catalog_elevenlabs.MODELS_BY_ID
    assert Catalog().get("replicate/acme/dreamclip") is None
    assert catalog.uninstall("replicate/acme/dreamclip")
    assert catalog.get("replicate/acme/dreamclip") is None
    assert catalog.replicate_inputs("replicate/acme/dreamclip") == {}


def test_a_catalog_handed_to_plan_validation_is_the_one_used() -> None:
    catalog = Catalog()
    catalog.load_file(EXAMPLE)
    plan = job("replicate/acme/poster", "generate-image", prompt="x")
    assert parse_plan(plan, catalog=catalog).jobs[0].model == "replicate/acme/poster"
    with pytest.raises(PlanError, match="unknown model 'replicate/acme/poster'"):
        parse_plan(plan)


def test_replace_overrides_a_built_in_model_until_unloaded(tmp_path: Path) -> None:
    built_in = get_model("replicate/black-forest-labs/flux-schnell")
    assert built_in is not None
    path = write(
        tmp_path,
        """
models:
  - id: replicate/black-forest-labs/flux-schnell
    replace: true
    types: [generate-image]
    params:
      prompt: {type: string, required: true}
    price: {unit: image, usd: 0.5}
""",
    )
    load_catalog_file(path)
    assert estimate_plan(job("replicate/black-forest-labs/flux-schnell", "generate-image", prompt="x"))[
        "cost_usd"
    ] == pytest.approx(0.5)
    assert catalog_replicate.MODELS_BY_ID["replicate/black-forest-labs/flux-schnell"] == built_in  # untouched
    reset_extensions()
    assert get_model("replicate/black-forest-labs/flux-schnell") == built_in
    catalog = Catalog()
    catalog.load_file(path)
    replaced = catalog.replicate_spec("replicate/black-forest-labs/flux-schnell")
    assert replaced is not None and replaced.price.usd == 0.5
    assert catalog.uninstall("replicate/black-forest-labs/flux-schnell")
    assert catalog.get("replicate/black-forest-labs/flux-schnell") == built_in


async def test_a_user_replicate_model_runs_end_to_end_with_mapped_inputs(
    engine: Engine, running_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_catalog_file(EXAMPLE)
    with FakeReplicate(latency_s=0.2, queue_s=0.05) as rep:
        monkeypatch.setenv("REPLICATE_API_TOKEN", rep.token)
        monkeypatch.setenv("REELFLOW_REPLICATE_BASE_URL", rep.base_url)
        provider = ReplicateProvider()
        eid = await engine.submit(
            job("replicate/acme/dreamclip", "generate-video", image="https://example.com/a.png", duration=10, seed=3)
        )
        async with running_worker(providers_={"replicate": provider}):
            state = await engine.wait(eid, timeout=60)
        await provider.aclose()
    assert state["status"] == "succeeded", state["error"]
    [prediction] = rep.predictions.values()
    assert prediction.model == "acme/dreamclip"
    # our names became the model's own; the default aspect ratio was filled in
    assert prediction.input == {
        "first_frame": "https://example.com/a.png",
        "length_s": 10,
        "seed": 3,
        "aspect_ratio": "16:9",
    }
    assert rep.creates == 1
    assert state["jobs"][0]["result"]["url"]
    assert state["cost"]["actual"] == pytest.approx(0.8)  # priced by the user's catalog: 10 s at $0.08


async def test_a_catalog_handed_to_engine_worker_and_adapter_runs_its_models(
    store: Any, settings: Settings, running_worker: WorkerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = Catalog()
    catalog.load_file(EXAMPLE)
    engine = Engine(store, settings, catalog=catalog)
    plan = job("replicate/acme/dreamclip", "generate-video", image="https://example.com/a.png", duration=10)
    with pytest.raises(PlanError, match="unknown model"):
        await Engine(store, settings).submit(plan)  # the default catalog lacks it
    with FakeReplicate(latency_s=0.1, queue_s=0.05) as rep:
        monkeypatch.setenv("REPLICATE_API_TOKEN", rep.token)
        monkeypatch.setenv("REELFLOW_REPLICATE_BASE_URL", rep.base_url)
        provider = ReplicateProvider()
        provider.catalog = catalog
        eid = await engine.submit(plan)
        async with running_worker(providers_={"replicate": provider}, catalog=catalog):
            state = await engine.wait(eid, timeout=60)
        await provider.aclose()
    assert state["status"] == "succeeded", state["error"]
    [prediction] = rep.predictions.values()
    assert prediction.input["first_frame"] == "https://example.com/a.png"
    assert state["cost"]["actual"] == pytest.approx(0.8)
    assert get_model("replicate/acme/dreamclip") is None


def test_user_models_are_listed_by_the_api(tmp_path: Path) -> None:
    load_catalog_file(EXAMPLE)
    with ApiServer(server_settings(tmp_path)) as api:
        key = api.new_key("catalog")
        with api.client(key.api_key) as http:
            r = http.get("/v1/models")
    assert r.status_code == 200, r.text
    models = {m["id"]: m for m in r.json()["data"]}
    assert EXAMPLE_IDS <= set(models)
    assert models["replicate/acme/poster"]["price"] == {"unit": "image", "usd": 0.01}
    assert models["replicate/acme/dreamclip"]["params"]["prompt"]["max_length"] == 1500


def _cli(tmp_path: Path, catalog: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "REELFLOW_CATALOG_FILE": str(catalog),
        "REELFLOW_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db",
        "REELFLOW_STORAGE_URL": f"file://{tmp_path}/artifacts",
    }
    return subprocess.run(
        [sys.executable, "-m", "reelflow.cli", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_cli_lists_and_estimates_user_models_from_the_environment(tmp_path: Path) -> None:
    listed = _cli(tmp_path, EXAMPLE, "models", "--json")
    assert listed.returncode == 0, listed.stderr
    assert EXAMPLE_IDS <= {m["id"] for m in json.loads(listed.stdout)}
    plan = write(
        tmp_path,
        "type: generate-video\nmodel: replicate/acme/dreamclip\nparams: {prompt: x, duration: 5}\n",
        "plan.yaml",
    )
    estimated = _cli(tmp_path, EXAMPLE, "estimate", str(plan), "--json")
    assert estimated.returncode == 0, estimated.stderr
    assert json.loads(estimated.stdout)["cost_usd"] == pytest.approx(0.4)


def test_the_cli_refuses_a_bad_catalog_file_with_a_message_not_a_traceback(tmp_path: Path) -> None:
    bad = write(tmp_path, "models:\n  - id: replicate/acme/x\n    types: [generate-video]\n    price: {unit: minute}\n")
    plan = write(tmp_path, "type: generate-image\nmodel: local/image\nparams: {prompt: x}\n", "plan.yaml")
    result = _cli(tmp_path, bad, "estimate", str(plan))
    assert result.returncode == 2  # a configuration problem is bad usage: exit status 2
    assert "Traceback" not in result.stderr
    assert f"{bad}:4: model 'replicate/acme/x': price.unit:" in result.stderr


# --------------------------------------------------------------------------- bad files


BAD_FILES: list[tuple[str, str, list[str]]] = [
    (
        "yaml-syntax",
        "models:\n  - id: replicate/acme/x\n    types: [generate-video\n    price: {unit: run, usd: 1}\n",
        [":4: YAML syntax error: expected ',' or ']', but got ':' (column 10)"],
    ),
    (
        "unknown-field",
        "models:\n  - id: replicate/acme/x\n    types: [generate-video]\n    params:\n"
        "      prompt: {type: string, max_lenght: 10}\n    price: {unit: run, usd: 1}\n",
        [
            ":5: model 'replicate/acme/x': params.prompt.max_lenght: unknown field 'max_lenght' "
            "(did you mean 'max_length'?)"
        ],
    ),
    (
        "unknown-model-field",
        "models:\n  - id: replicate/acme/x\n    types: [generate-video]\n    cost: 1\n    price: {unit: run, usd: 1}\n",
        [":4: model 'replicate/acme/x': cost: unknown field 'cost'"],
    ),
    (
        "bad-price-unit",
        "models:\n  - id: replicate/acme/x\n    types: [generate-video]\n    price: {unit: minute, usd: 1}\n",
        [
            ":4: model 'replicate/acme/x': price.unit: Input should be 'free', 'run', 'image', 'second' or "
            "'character' (got 'minute')"
        ],
    ),
    (
        "price-without-usd",
        "models:\n  - id: replicate/acme/x\n    types: [generate-video]\n    price: {unit: second}\n",
        [":4: model 'replicate/acme/x': price: usd is required for a price per second"],
    ),
    (
        "negative-price",
        "models:\n  - id: replicate/acme/x\n    types: [generate-video]\n    price: {unit: run, usd: -1}\n",
        [":4: model 'replicate/acme/x': price.usd: Input should be greater than or equal to 0 (got -1)"],
    ),
    (
        "duplicate-id",
        "models:\n  - id: replicate/acme/x\n    types: [generate-video]\n    price: {unit: run, usd: 1}\n"
        "  - id: replicate/acme/x\n    types: [generate-image]\n    price: {unit: run, usd: 2}\n",
        [":5: model 'replicate/acme/x': id: duplicate model id: models[0] (line 2) has it already"],
    ),
    (
        "unknown-provider",
        "models:\n  - id: replicat/acme/x\n    types: [generate-video]\n    price: {unit: run, usd: 1}\n",
        [
            ":2: model 'replicat/acme/x': id: unknown provider 'replicat' (did you mean 'replicate'?); a catalog "
            "file adds models of elevenlabs, fal, openai or replicate"
        ],
    ),
    (
        "local-is-not-open",
        "models:\n  - id: local/extra\n    types: [generate-video]\n    price: {unit: free}\n",
        [":2: model 'local/extra': id: unknown provider 'local'"],
    ),
    (
        "built-in-id",
        "models:\n  - id: replicate/google/veo-3\n    types: [generate-video]\n    price: {unit: run, usd: 1}\n",
        [
            ":2: model 'replicate/google/veo-3': id: already in the catalog (built in); pick another id, or set "
            "`replace: true` to override it"
        ],
    ),
    (
        "unknown-type",
        "models:\n  - id: fal/acme/x\n    types: [generate-vidoe]\n    price: {unit: run, usd: 1}\n",
        [":3: model 'fal/acme/x': types[0]: unknown job type 'generate-vidoe' (did you mean 'generate-video'?)"],
    ),
    (
        "normalised-type",
        "models:\n  - id: fal/acme/x\n    types: [generate-video]\n    params:\n      image: {type: string}\n"
        "    price: {unit: run, usd: 1}\n",
        [":5: model 'fal/acme/x': params.image.type: 'image' is a normalised parameter of type url"],
    ),
    (
        "limit-conflict",
        "models:\n  - id: fal/acme/x\n    types: [generate-video]\n    params:\n"
        "      duration: {type: number, maximum: 20}\n    limits: {max_duration: 10}\n    price: {unit: run, usd: 1}\n",
        [":5: model 'fal/acme/x': params.duration.maximum: 20 is above limits.max_duration (10)"],
    ),
    (
        "limit-without-param",
        "models:\n  - id: fal/acme/x\n    types: [generate-video]\n    limits: {prompt_length: 10}\n"
        "    price: {unit: run, usd: 1}\n",
        [":4: model 'fal/acme/x': limits.prompt_length: the model has no 'prompt' parameter to limit"],
    ),
    (
        "input-for-openai",
        "models:\n  - id: openai/tts-2\n    types: [generate-audio]\n    params:\n"
        "      text: {type: string, input: input}\n    price: {unit: character, usd: 0.00001}\n",
        [":5: model 'openai/tts-2': params.text.input: the openai adapter builds its request itself; remove input"],
    ),
    (
        "convert-not-fal",
        "models:\n  - id: replicate/acme/x\n    types: [generate-video]\n    params:\n"
        "      duration: {type: integer, convert: string}\n    price: {unit: run, usd: 1}\n",
        [":5: model 'replicate/acme/x': params.duration.convert: convert is read by the fal adapter only"],
    ),
    (
        "bad-default",
        "models:\n  - id: replicate/acme/x\n    types: [generate-video]\n    params:\n"
        "      duration: {type: integer, choices: [5, 10], default: 7}\n    price: {unit: run, usd: 1}\n",
        [":5: model 'replicate/acme/x': params.duration.default: default must be one of 5, 10 (got 7)"],
    ),
    (
        "rule-names-nothing-declared",
        "models:\n  - id: replicate/acme/x\n    types: [generate-video]\n    params:\n      prompt: {type: string}\n"
        "    rules: [{kind: one_of, params: [prompt, image]}]\n    price: {unit: run, usd: 1}\n",
        [":6: model 'replicate/acme/x': rules[0].params: names undeclared parameters: image"],
    ),
    (
        "duplicate-key",
        "models:\n  - id: replicate/acme/x\n    types: [generate-video]\n    price: {unit: run, usd: 1}\n"
        "    price: {unit: run, usd: 2}\n",
        [":5: models[0]: duplicate key 'price'"],
    ),
    ("empty", "", ["the file is empty"]),
    ("a-list", "- id: replicate/acme/x\n", [":1: the file must be a mapping with a `models` list (got a list"]),
    (
        "models-missing",
        "modles: []\n",
        [":1: modles: unknown top-level field 'modles' (did you mean 'models'?)", "`models:` is missing"],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_a_bad_file_is_refused_with_file_line_model_and_field(tmp_path: Path, text: str, expected: list[str]) -> None:
    before = [m.id for m in list_models()]
    path = write(tmp_path, text)
    problems = problems_of(path)
    assert len(problems) == len(expected), problems
    for problem, want in zip(problems, expected, strict=True):
        assert problem.startswith(str(path)), problem
        assert want in problem, problem
    assert [m.id for m in list_models()] == before  # nothing of it was installed


def test_a_bad_file_installs_none_of_its_good_models_and_reports_all_problems(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """models:
  - id: replicate/acme/good
    types: [generate-video]
    price: {unit: run, usd: 1}
  - id: replicate/acme/bad
    types: [generate-video]
    price: {unit: hour, usd: 1}
  - id: acme/x
    types: [generate-video]
    price: {unit: run, usd: 1}
""",
    )
    with pytest.raises(CatalogFileError) as caught:
        load_catalog_file(path)
    message = str(caught.value)
    assert message.startswith(f"invalid catalog: {path} (2 problems):")
    assert f"{path}:7: model 'replicate/acme/bad': price.unit:" in message
    assert f"{path}:8: model 'acme/x': id: unknown provider 'acme'" in message
    assert get_model("replicate/acme/good") is None


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CatalogFileError) as caught:
        load_catalog_file(tmp_path / "nope.yaml")
    assert str(caught.value) == f"invalid catalog: {tmp_path / 'nope.yaml'}: no such file"


def test_a_bad_file_from_settings_keeps_failing_every_use_until_reloaded(tmp_path: Path) -> None:
    bad = write(tmp_path, "models: {}\n")
    with pytest.raises(CatalogFileError, match="`models` must be a list"):
        load_extensions(Settings(catalog_file=str(bad), _env_file=None))  # type: ignore[call-arg]
    with pytest.raises(CatalogFileError):
        get_model("local/image")  # the catalog is not used half-loaded
    with pytest.raises(CatalogFileError):
        parse_plan(job("local/image", "generate-image", prompt="x"))
    good = write(tmp_path, EXAMPLE.read_text(), "good.yaml")
    load_extensions(Settings(catalog_file=str(good), _env_file=None), reload=True)  # type: ignore[call-arg]
    assert get_model("replicate/acme/poster") is not None
