"""Start-up stays cheap: `import reelflow` and `reelflow --help` load neither the engine, the API, the media
helpers nor the metrics, and every public SDK name still imports. Each check runs in a fresh interpreter,
since this test process has long loaded all of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import reelflow
from reelflow.providers import catalog

HEAVY = ["reelflow.engine.worker", "reelflow.api.app", "fastapi", "prometheus_client", "reelflow.media"]
CATALOGS = [f"reelflow.providers.catalog{m}" for m in ["", ".spec", ".builtin", ".validation", ".pricing", ".file"]]
CATALOGS += [f"reelflow.providers.catalog.{m}" for m in ["catalog", "registry", "replicate", "fal", "elevenlabs"]]
CATALOGS += ["reelflow.providers.catalog.openai", "reelflow.providers.catalog.google"]
COMMANDS = ["run", "status", "events", "cancel", "resume", "retry", "estimate", "worker", "serve", "keys"]
COMMANDS += ["migrate", "models", "stats", "prune", "demo"]
CATALOGS.append("reelflow.providers.catalog.retired")


def fresh(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a new interpreter (nothing imported yet); fails the test if it fails."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def loaded_after(code: str) -> set[str]:
    """The modules loaded once `code` ran in a fresh interpreter."""
    done = fresh(f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))")
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_import_reelflow_loads_nothing_heavy() -> None:
    loaded = loaded_after("import reelflow")
    assert "reelflow" in loaded
    assert [m for m in HEAVY if m in loaded] == []


def test_building_steps_and_a_client_loads_no_engine() -> None:
    """The SDK's plan building and the HTTP client do not need the local engine either."""
    loaded = loaded_after(
        "from reelflow import Client, compose, generate_image, image_model\n"
        "compose(generate_image(model=image_model('image'), prompt='a sunset')).plan()"
    )
    assert {"reelflow.sdk", "reelflow.client"} <= loaded
    assert [m for m in [*HEAVY, "reelflow.engine.runtime"] if m in loaded] == []


def test_cli_help_lists_the_commands_and_loads_nothing_heavy() -> None:
    code = (
        "import sys\nsys.argv = ['reelflow', '--help']\nfrom reelflow.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
    )
    loaded = loaded_after(code)
    assert [m for m in [*HEAVY, "reelflow.config", "reelflow.engine.runtime", "httpx", "rich", "asyncio", "typer"]
            if m in loaded] == []  # fmt: skip

    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "reelflow.cli", "--help"], capture_output=True, text=True, timeout=60)
    print(f"reelflow --help: {time.perf_counter() - start:.3f} s")  # for the record; timing is not asserted
    assert done.returncode == 0, done.stderr
    listed = {line.strip("│ ").split(" ")[0] for line in done.stdout.splitlines()}
    assert [c for c in COMMANDS if c not in listed] == []
    assert "spend this month. Locally: every tenant." in " ".join(done.stdout.split())  # each help in full


RUN = (
    "import sys\nsys.argv = ['reelflow', *{args!r}]\nfrom reelflow.cli import main\n"
    "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code in {codes!r}, exc.code\n"
)
NOT_TO_SUBMIT = [
    *HEAVY, "reelflow.engine.worker", "reelflow.webhooks", "reelflow.net", "reelflow.logs", "reelflow.sdk",
    "httpx", "httpcore", "uvicorn", "prometheus_client", "av", "rich", "cryptography", "standardwebhooks",
    *(f"reelflow.providers.{p}" for p in ("replicate", "fal", "elevenlabs", "openai", "google", "sim", "http")),
]  # fmt: skip
"""What `reelflow run PLAN` (local, without --wait) does without: the worker and what it runs jobs with (the
provider adapters, the media helpers, httpx), the metrics' prometheus_client, the API, rich (it prints plain
lines)."""


def run_loads(
    tmp_path: Path, *args: str, codes: tuple[int | None, ...] = (0, None), env: dict[str, str] | None = None
) -> set[str]:
    """The modules `reelflow ARGS` loaded, run in a fresh interpreter on a SQLite database in `tmp_path`."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("REELFLOW_")}, **(env or {})}
    env.update(REELFLOW_DATABASE_URL=f"sqlite:///{tmp_path}/startup.db", REELFLOW_STORAGE_URL=f"file://{tmp_path}/a")
    code = RUN.format(args=list(args), codes=codes) + "import json\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_a_local_run_submits_without_the_worker_httpx_or_the_metrics(tmp_path: Path) -> None:
    plan = Path(__file__).parent.parent / "examples" / "sunset.yaml"
    loaded = run_loads(tmp_path, "run", str(plan))
    assert {"reelflow.engine.scheduler", "reelflow.store.sqlite", "reelflow.plan", "typer"} <= loaded  # it ran
    assert [m for m in NOT_TO_SUBMIT if m in loaded] == []
    assert "reelflow.models" not in loaded  # what was accepted is said without building the state's model
    # a plan whose job runs at a paid provider is checked for its credential without loading the adapter
    paid = tmp_path / "paid.json"
    paid.write_text(json.dumps({"jobs": [{"id": "a", "type": "generate-image", "params": {"prompt": "x"},
                                          "model": "replicate/black-forest-labs/flux-schnell"}]}))  # fmt: skip
    token = {"REPLICATE_API_TOKEN": "r8_test"}
    assert [m for m in NOT_TO_SUBMIT if m in run_loads(tmp_path, "run", str(paid), env=token)] == []
    refused = run_loads(tmp_path, "run", str(paid), env={"REPLICATE_API_TOKEN": ""}, codes=(1,))  # no token
    assert [m for m in NOT_TO_SUBMIT if m in refused and m != "rich"] == []  # rich prints the refusal
    env = {**os.environ, **token, "REELFLOW_DATABASE_URL": f"sqlite:///{tmp_path}/s.db"}
    done = subprocess.run([sys.executable, "-m", "reelflow", "run", str(paid)], capture_output=True, text=True,
                          timeout=60, env=env)  # fmt: skip
    assert done.returncode == 0 and done.stdout.startswith("ex_"), done.stderr
    assert done.stderr == f"accepted: execution {done.stdout.strip()} (1 job queued)\n"
    done = subprocess.run([sys.executable, "-m", "reelflow", "run", str(paid)], capture_output=True, text=True,
                          timeout=60, env={**env, "REPLICATE_API_TOKEN": ""})  # fmt: skip
    assert done.returncode == 1 and "needs REPLICATE_API_TOKEN, which is not set" in done.stderr


def test_status_json_and_a_remote_run_load_no_engine_worker_or_metrics(tmp_path: Path) -> None:
    loaded = run_loads(tmp_path, "status", "ex_unknown", "--json", codes=(1,))  # not found: exit 1
    assert "reelflow.store.sqlite" in loaded
    assert [m for m in NOT_TO_SUBMIT if m in loaded and m != "rich"] == []  # rich says it was not found
    plan = Path(__file__).parent.parent / "examples" / "sunset.yaml"
    remote = ["run", str(plan), "--server", "http://127.0.0.1:9", "--api-key", "k"]  # nothing listens: exit 1
    loaded = run_loads(tmp_path, *remote, codes=(1,))
    assert {"reelflow.client", "httpx"} <= loaded
    assert [m for m in ["reelflow.engine.scheduler", "reelflow.store", "reelflow.engine.worker", "uvicorn",
                        "prometheus_client", "reelflow.api.app", "av"] if m in loaded] == []  # fmt: skip


def test_each_built_in_adapter_carries_the_info_read_without_it() -> None:
    """`BUILTIN_INFO` (what a submission reads of a provider) is each built-in adapter's own `info`."""
    import importlib

    from reelflow.providers.info import BUILTIN_INFO
    from reelflow.providers.plugins import BUILTIN_ENTRY_POINTS, load_builtins, provider_info

    assert list(BUILTIN_INFO) == list(BUILTIN_ENTRY_POINTS)
    for name, value in BUILTIN_ENTRY_POINTS.items():
        module, _, cls = value.partition(":")
        adapter = getattr(importlib.import_module(module), cls)
        assert adapter.info is BUILTIN_INFO[name] and adapter.info.name == name == adapter.name
        assert provider_info(name) is load_builtins()[name].info is BUILTIN_INFO[name]
    for name, constant in (("replicate", "TOKEN_ENV"), ("elevenlabs", "KEY_ENV"), ("openai", "KEY_ENV"),
                           ("google", "KEY_ENV")):  # fmt: skip  # the adapters' own names for their variable
        assert getattr(importlib.import_module(f"reelflow.providers.{name}"), constant) == BUILTIN_INFO[name].key_env
    assert provider_info("replicate").key_env == "REPLICATE_API_TOKEN"  # type: ignore[union-attr]
    assert provider_info("nonesuch") is None


def test_the_help_printed_without_typer_is_the_help_typer_prints() -> None:
    from reelflow.cli import helptext

    assert helptext.TEXT == helptext.render("{prog}"), "commands changed: `python -m reelflow.cli.helptext` prints TEXT"
    script = "import sys\nsys.argv = ['reelflow', '--help']\nfrom reelflow.cli import main\nmain()"

    def run(*args: str, columns: int) -> str:
        env = {**os.environ, "COLUMNS": str(columns)}
        done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert run("-c", script, columns=80) == helptext.TEXT.replace("{prog}", "reelflow")  # the console script's name
    assert run("-m", "reelflow.cli", "--help", columns=200) == helptext.TEXT.replace("{prog}", "python -m reelflow.cli")
    assert run("-m", "reelflow", "--help", columns=100) == helptext.TEXT.replace("{prog}", "python -m reelflow")
    narrow = run("-c", script, columns=60)  # narrower than the text: typer prints it
    assert narrow != helptext.TEXT.replace("{prog}", "reelflow") and max(map(len, narrow.splitlines())) <= 58
    assert " ".join(narrow.split()) == " ".join(helptext.TEXT.replace("{prog}", "reelflow").split())


def test_run_help_printed_without_typer_is_the_help_typer_prints() -> None:
    from reelflow.cli import helptext

    assert helptext.RUN_TEXT == helptext.render("{prog}", "run"), "run's options changed: see helptext"
    code = "import sys\nsys.argv = ['reelflow', 'run', '--help']\nfrom reelflow.cli import main\nmain()"
    env = {**os.environ, "COLUMNS": "80"}
    done = subprocess.run([sys.executable, "-c", code + "\nprint(sorted(sys.modules))"], capture_output=True,
                          text=True, timeout=60, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    text, _, modules = done.stdout.rpartition("\n[")
    assert text + "\n" == helptext.RUN_TEXT.replace("{prog}", "reelflow")
    assert "'typer'" not in modules and "'rich'" not in modules and "'reelflow.config'" not in modules
    narrow = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "COLUMNS": "60"})  # fmt: skip
    assert max(map(len, narrow.stdout.splitlines())) <= 58  # typer wraps it at the terminal's width
    assert " ".join(narrow.stdout.split()) == " ".join(helptext.RUN_TEXT.replace("{prog}", "reelflow").split())


def test_every_public_name_still_imports() -> None:
    names = ", ".join(reelflow.__all__)
    done = fresh(f"from reelflow import {names}\nimport reelflow\nprint(len(reelflow.__all__))")
    assert int(done.stdout) == len(reelflow.__all__) == 34  # 30, then transcribe, transcode, thumbnail, run_model
    assert fresh("from reelflow import *\nprint(callable(compose), Client.__name__)").stdout.split() == [
        "True",
        "Client",
    ]
    assert "compose" in dir(reelflow)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        reelflow.nothing  # noqa: B018


@pytest.mark.parametrize("name", CATALOGS)
def test_each_catalog_module_imports_first_with_the_same_catalog(name: str) -> None:
    """Each module of the catalog imports on its own in a fresh interpreter (no import cycle), and the catalog
    then holds every model, in the order of this (already loaded) process's catalog: built-in, then each
    provider's."""
    from reelflow.providers.catalog.catalog import REMOTE_CATALOGS

    code = f"import {name}\nfrom reelflow.providers.catalog import registry\n"
    code += "print(' '.join(m.id for m in registry.list_models()))"
    expected = [m.id for m in catalog.BUILTIN_MODELS]
    for module in REMOTE_CATALOGS:
        expected += [m.id for m in module.MODELS]
    assert fresh(code).stdout.split() == expected
