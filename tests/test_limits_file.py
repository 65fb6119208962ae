"""The limits file (REELFLOW_LIMITS_FILE): built-in defaults, merging, lookups and precise errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reelflow.config import Settings
from reelflow.errors import ReelflowError
from reelflow.limits import (
    TENANT_MAX_CONCURRENT,
    Limits,
    LimitsFileError,
    ModelLimit,
    ProviderLimit,
    TenantLimit,
    get_limits,
    load_limits,
    reset_limits,
)
from reelflow.providers.elevenlabs import ElevenLabsProvider
from reelflow.providers.replicate import ReplicateProvider

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "limits.yaml"


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    reset_limits()
    yield
    reset_limits()


def write(tmp_path: Path, text: str, name: str = "limits.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str) -> tuple[str, list[str]]:
    """(the error message, each problem as text) for a bad file; the path shown is `limits.yaml`."""
    path = write(tmp_path, text)
    with pytest.raises(LimitsFileError) as info:
        load_limits(path)
    err = info.value
    assert isinstance(err, ReelflowError)
    return str(err), [str(p) for p in err.problems]


def one_problem(tmp_path: Path, text: str) -> str:
    message, problems = problems_of(tmp_path, text)
    assert len(problems) == 1, problems
    assert message == f"invalid limits file: {problems[0]}"
    src = str(tmp_path / "limits.yaml")
    assert problems[0].startswith(src)
    return "limits.yaml" + problems[0][len(src) :]


# --- defaults ----------------------------------------------------------------------------------------


def test_defaults_come_from_the_adapters() -> None:
    limits = load_limits(None)
    assert limits.source is None
    rpm = ReplicateProvider.default_limits["requests_per_minute"]
    cpm = ReplicateProvider.default_limits["creates_per_minute"]
    assert (rpm, cpm) == (3000, 600)  # as Replicate documents them
    assert limits.provider("replicate") == ProviderLimit(requests_per_minute=rpm, creates_per_minute=cpm)
    assert limits.provider("replicate").max_concurrent is None
    cap = ElevenLabsProvider.default_limits["max_concurrent"]
    assert limits.provider("elevenlabs").max_concurrent == cap == 2
    assert isinstance(limits.provider("elevenlabs").max_concurrent, int)
    # providers without documented limits, and ones without an HTTP adapter, have none
    assert limits.provider("fal") == ProviderLimit()
    assert limits.provider("local") == ProviderLimit()
    assert limits.provider("sim") == ProviderLimit()
    assert limits.concurrency_caps() == ({"elevenlabs": 2}, {})
    assert limits.rpm() == {"replicate": float(rpm)}
    assert limits.cpm() == {"replicate": float(cpm)}
    assert limits.tenant("acme") == TenantLimit()
    assert limits.model("replicate/bytedance/seedance-1-pro") == ModelLimit()


def test_creates_per_minute_is_a_field_of_its_own(tmp_path: Path) -> None:
    shown = load_limits(None).as_dict()["providers"]
    assert shown["replicate"] == {"max_concurrent": None, "requests_per_minute": 3000, "creates_per_minute": 600}
    assert shown["fal"]["creates_per_minute"] is None
    text = "providers:\n  fal: {creates_per_minute: 30}\n  replicate: {creates_per_minute: 90.5}\n"
    limits = load_limits(write(tmp_path, text))
    assert limits.cpm() == {"fal": 30.0, "replicate": 90.5}
    assert limits.rpm() == {"replicate": 3000.0}  # the requests bucket is left as it was
    assert limits.provider("fal") == ProviderLimit(creates_per_minute=30)
    lifted = load_limits(write(tmp_path, "providers:\n  replicate: {creates_per_minute: null}\n"))
    assert lifted.cpm() == {} and lifted.rpm() == {"replicate": 3000.0}  # creates count as requests again


def test_an_empty_file_is_the_defaults(tmp_path: Path) -> None:
    for text in ("", "# nothing yet\n", "providers:\nmodels:\ntenants:\n"):
        limits = load_limits(write(tmp_path, text))
        assert limits.concurrency_caps() == load_limits(None).concurrency_caps()
        assert limits.rpm() == load_limits(None).rpm()
        assert limits.tenants == {} and limits.models == {}


# --- the file over the defaults -------------------------------------------------------------------


def test_file_overrides_and_merges(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
providers:
  replicate: {max_concurrent: 5}
  fal: {max_concurrent: 10, requests_per_minute: 120.5}
  elevenlabs: {requests_per_minute: 60}
  acme: {max_concurrent: 3}
models:
  replicate/bytedance/seedance-1-pro: {max_concurrent: 2}
  fal/fal-ai/kling-video/v2.1/pro: {}
""",
    )
    limits = load_limits(path)
    rpm = float(ReplicateProvider.default_limits["requests_per_minute"])
    # a field left out keeps the default
    assert limits.provider("replicate") == ProviderLimit(
        max_concurrent=5, requests_per_minute=rpm, creates_per_minute=600
    )
    assert limits.provider("elevenlabs") == ProviderLimit(max_concurrent=2, requests_per_minute=60)
    assert limits.provider("fal") == ProviderLimit(max_concurrent=10, requests_per_minute=120.5)
    assert limits.provider("acme") == ProviderLimit(max_concurrent=3)
    assert limits.concurrency_caps() == (
        {"acme": 3, "elevenlabs": 2, "fal": 10, "replicate": 5},
        {"replicate/bytedance/seedance-1-pro": 2},
    )
    assert limits.rpm() == {"elevenlabs": 60.0, "fal": 120.5, "replicate": rpm}
    shown = limits.as_dict()
    assert shown["source"] == str(path)
    assert shown["providers"]["replicate"] == {
        "max_concurrent": 5,
        "requests_per_minute": rpm,
        "creates_per_minute": 600,
    }
    assert shown["providers"]["openai"] == {
        "max_concurrent": None,
        "requests_per_minute": None,
        "creates_per_minute": None,
    }
    assert shown["models"] == {
        "fal/fal-ai/kling-video/v2.1/pro": {"max_concurrent": None},
        "replicate/bytedance/seedance-1-pro": {"max_concurrent": 2},
    }


def test_null_lifts_a_default(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "providers:\n  elevenlabs: {max_concurrent: null}\n  replicate:\n    requests_per_minute: null\n"
        "    creates_per_minute: null\n",
    )
    limits = load_limits(path)
    assert limits.provider("elevenlabs") == ProviderLimit()
    assert limits.provider("replicate") == ProviderLimit()
    assert limits.concurrency_caps() == ({}, {})
    assert limits.rpm() == {} and limits.cpm() == {}


def test_an_empty_entry_keeps_the_defaults(tmp_path: Path) -> None:
    limits = load_limits(write(tmp_path, "providers:\n  elevenlabs:\n  replicate: {}\n"))
    assert limits.provider("elevenlabs") == load_limits(None).provider("elevenlabs")
    assert limits.provider("replicate") == load_limits(None).provider("replicate")


def test_tenant_falls_back_to_default(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "tenants:\n  default: {monthly_executions: 1000, monthly_cost_usd: 500}\n  acme: {monthly_cost_usd: 25}\n"
        "  free: {monthly_executions: 0}\n",
    )
    limits = load_limits(path)
    assert limits.tenant("acme") == TenantLimit(monthly_cost_usd=25)  # its own entry, whole
    assert limits.tenant("free") == TenantLimit(monthly_executions=0)
    assert limits.tenant("someone-else") == TenantLimit(monthly_executions=1000, monthly_cost_usd=500)
    assert limits.tenant("default") == TenantLimit(monthly_executions=1000, monthly_cost_usd=500)
    # no default entry: a tenant without its own has no limits
    only_acme = load_limits(write(tmp_path, "tenants:\n  acme: {monthly_cost_usd: 25}\n", "b.yaml"))
    assert only_acme.tenant("other") == TenantLimit()
    assert only_acme.tenant("acme").monthly_cost_usd == 25.0


def test_tenant_max_concurrent_has_a_built_in_default_that_the_file_overrides(tmp_path: Path) -> None:
    built_in = load_limits(None)
    assert built_in.tenant("anyone").max_concurrent == TENANT_MAX_CONCURRENT == 200
    assert built_in.tenant_caps() == ({}, 200)
    assert built_in.as_dict()["tenants"] == {
        "default": {"monthly_executions": None, "monthly_cost_usd": None, "max_concurrent": 200}
    }
    path = write(
        tmp_path,
        "tenants:\n  default: {max_concurrent: 10}\n  acme: {max_concurrent: 3}\n"
        "  big: {max_concurrent: null}\n  budget: {monthly_cost_usd: 5}\n",
    )
    limits = load_limits(path)
    assert limits.tenant("someone-else").max_concurrent == 10  # the default entry
    assert limits.tenant("acme").max_concurrent == 3  # its own entry overrides it
    assert limits.tenant("big").max_concurrent is None  # null lifts the cap
    # an entry of its own replaces `default` whole, as for the monthly limits: a field it leaves out has its
    # built-in value
    assert limits.tenant("budget") == TenantLimit(monthly_cost_usd=5, max_concurrent=TENANT_MAX_CONCURRENT)
    assert limits.tenant_caps() == ({"acme": 3, "big": None, "budget": 200}, 10)
    assert limits.as_dict()["tenants"]["default"]["max_concurrent"] == 10
    # no default entry: tenants without one have the built-in cap; a default without the field too
    assert load_limits(write(tmp_path, "tenants:\n  acme: {max_concurrent: 3}\n", "b.yaml")).tenant_caps() == (
        {"acme": 3},
        200,
    )
    no_field = load_limits(write(tmp_path, "tenants:\n  default: {monthly_executions: 5}\n", "c.yaml"))
    assert no_field.tenant("x").max_concurrent == 200 and no_field.tenant("x").monthly_executions == 5
    lifted = load_limits(write(tmp_path, "tenants:\n  default: {max_concurrent: null}\n", "d.yaml"))
    assert lifted.tenant_caps() == ({}, None)


def test_pinned_model_version_uses_the_model_entry(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "models:\n  replicate/bytedance/seedance-1-pro: {max_concurrent: 2}\n"
        "  replicate/acme/thing:abc123: {max_concurrent: 1}\n",
    )
    limits = load_limits(path)
    assert limits.model("replicate/bytedance/seedance-1-pro").max_concurrent == 2
    assert limits.model("replicate/bytedance/seedance-1-pro:5f1c0ffee").max_concurrent == 2
    assert limits.model_key("replicate/bytedance/seedance-1-pro:5f1c0ffee") == "replicate/bytedance/seedance-1-pro"
    # an entry for one version applies to that version only
    assert limits.model("replicate/acme/thing:abc123").max_concurrent == 1
    assert limits.model("replicate/acme/thing:other").max_concurrent is None
    assert limits.model("replicate/acme/thing").max_concurrent is None
    assert limits.model_key("replicate/bytedance/seedance-1-lite") is None
    assert limits.model("fal/fal-ai/flux").max_concurrent is None


def test_example_file_loads() -> None:
    limits = load_limits(EXAMPLE)
    assert limits.provider("replicate") == ProviderLimit(
        max_concurrent=5, requests_per_minute=600, creates_per_minute=120
    )
    assert limits.provider("fal").max_concurrent == 10
    assert limits.model("replicate/bytedance/seedance-1-pro").max_concurrent == 2
    assert limits.tenant("acme") == TenantLimit(monthly_cost_usd=25, max_concurrent=20)
    assert limits.tenant("zeta") == TenantLimit(monthly_executions=1000, monthly_cost_usd=500, max_concurrent=200)


# --- get_limits ----------------------------------------------------------------------------------------


def test_get_limits_is_cached_per_path(tmp_path: Path) -> None:
    a = write(tmp_path, "providers:\n  fal: {max_concurrent: 3}\n", "a.yaml")
    b = write(tmp_path, "providers:\n  fal: {max_concurrent: 4}\n", "b.yaml")
    first = get_limits(Settings(limits_file=str(a)))
    assert first.provider("fal").max_concurrent == 3
    a.write_text("providers:\n  fal: {max_concurrent: 9}\n", encoding="utf-8")
    assert get_limits(Settings(limits_file=str(a))) is first  # read once
    assert get_limits(Settings(limits_file=str(b))).provider("fal").max_concurrent == 4
    none = get_limits(Settings(limits_file=None))
    assert none.source is None and none.provider("fal") == ProviderLimit()
    assert get_limits(Settings(limits_file="")) is none
    reset_limits()
    again = get_limits(Settings(limits_file=str(a)))
    assert again is not first and again.provider("fal").max_concurrent == 9


def test_get_limits_reads_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reelflow.config import get_settings

    path = write(tmp_path, "providers:\n  openai: {max_concurrent: 7}\n")
    monkeypatch.setenv("REELFLOW_LIMITS_FILE", str(path))
    get_settings.cache_clear()
    try:
        assert get_limits().provider("openai").max_concurrent == 7
    finally:
        get_settings.cache_clear()


def test_get_limits_raises_for_a_bad_file(tmp_path: Path) -> None:
    with pytest.raises(LimitsFileError, match="no such file"):
        get_limits(Settings(limits_file=str(tmp_path / "missing.yaml")))


def test_limits_built_in_code_are_usable() -> None:
    limits = Limits(providers={"fal": ProviderLimit(max_concurrent=1)}, models={}, tenants={}, defaults={})
    assert limits.concurrency_caps() == ({"fal": 1}, {})


# --- bad files -----------------------------------------------------------------------------------------


def test_value_below_minimum(tmp_path: Path) -> None:
    text = "providers:\n  fal: {max_concurrent: 3}\n  replicate:\n    max_concurrent: 0\n"
    assert (
        one_problem(tmp_path, text) == "limits.yaml:4: providers.replicate.max_concurrent: must be at least 1 (got 0)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "providers:\n  fal: {requests_per_minute: 0}\n",
            "limits.yaml:2: providers.fal.requests_per_minute: must be greater than 0 (got 0)",
        ),
        (
            "providers:\n  fal: {requests_per_minute: -5.5}\n",
            "limits.yaml:2: providers.fal.requests_per_minute: must be greater than 0 (got -5.5)",
        ),
        (
            "providers:\n  fal: {requests_per_minute: .inf}\n",
            "limits.yaml:2: providers.fal.requests_per_minute: must be a finite number (got inf)",
        ),
        (
            "providers:\n  replicate: {creates_per_minute: 0}\n",
            "limits.yaml:2: providers.replicate.creates_per_minute: must be greater than 0 (got 0)",
        ),
        (
            "providers:\n  replicate: {creates_per_minute: '600'}\n",
            "limits.yaml:2: providers.replicate.creates_per_minute: must be a number or null (got '600')",
        ),
        (
            "providers:\n  replicate: {creates_per_minute: .nan}\n",
            "limits.yaml:2: providers.replicate.creates_per_minute: must be a finite number (got nan)",
        ),
        (
            "providers:\n  replicate:\n    max_concurrent: 5\n    creates_per_minute: -1\n",
            "limits.yaml:4: providers.replicate.creates_per_minute: must be greater than 0 (got -1)",
        ),
        (
            "models:\n  fal/fal-ai/flux:\n    max_concurrent: 0\n",
            "limits.yaml:3: models.fal/fal-ai/flux.max_concurrent: must be at least 1 (got 0)",
        ),
        (
            "tenants:\n  acme: {monthly_cost_usd: -1}\n",
            "limits.yaml:2: tenants.acme.monthly_cost_usd: must be at least 0 (got -1)",
        ),
        (
            "tenants:\n  acme: {monthly_executions: -3}\n",
            "limits.yaml:2: tenants.acme.monthly_executions: must be at least 0 (got -3)",
        ),
        (
            "providers:\n  fal: {max_concurrent: '5'}\n",
            "limits.yaml:2: providers.fal.max_concurrent: must be a whole number or null (got '5')",
        ),
        (
            "providers:\n  fal: {max_concurrent: 2.5}\n",
            "limits.yaml:2: providers.fal.max_concurrent: must be a whole number or null (got 2.5)",
        ),
        (
            "providers:\n  fal: {max_concurrent: true}\n",
            "limits.yaml:2: providers.fal.max_concurrent: must be a whole number or null (got true)",
        ),
        (
            "tenants:\n  default: {max_concurrent: 0}\n",
            "limits.yaml:2: tenants.default.max_concurrent: must be at least 1 (got 0)",
        ),
        (
            "tenants:\n  acme:\n    monthly_cost_usd: 5\n    max_concurrent: -2\n",
            "limits.yaml:4: tenants.acme.max_concurrent: must be at least 1 (got -2)",
        ),
        (
            "tenants:\n  acme: {max_concurrent: 2.5}\n",
            "limits.yaml:2: tenants.acme.max_concurrent: must be a whole number or null (got 2.5)",
        ),
        (
            "tenants:\n  acme: {max_concurrent: '10'}\n",
            "limits.yaml:2: tenants.acme.max_concurrent: must be a whole number or null (got '10')",
        ),
        (
            "tenants:\n  default: {max_concurrency: 10}\n",
            "limits.yaml:2: tenants.default.max_concurrency: unknown field 'max_concurrency' (did you mean "
            "'max_concurrent'?); the fields are monthly_executions, monthly_cost_usd or max_concurrent",
        ),
        (
            "providers:\n  fal: {circuit: {min_success_rate: 1.5}}\n",
            "limits.yaml:2: providers.fal.circuit.min_success_rate: must be at most 1 (got 1.5)",
        ),
        (
            "providers:\n  fal: {circuit: {min_calls: 0}}\n",
            "limits.yaml:2: providers.fal.circuit.min_calls: must be at least 1 (got 0)",
        ),
        (
            "tenants:\n  acme: {monthly_cost_usd: lots}\n",
            "limits.yaml:2: tenants.acme.monthly_cost_usd: must be a number or null (got 'lots')",
        ),
        (
            "providers:\n  fal: 5\n",
            "limits.yaml:2: providers.fal: must be a mapping of max_concurrent, requests_per_minute, "
            "creates_per_minute or circuit (got 5)",
        ),
        (
            "providers:\n  fal: [1, 2]\n",
            "limits.yaml:2: providers.fal: must be a mapping of max_concurrent, requests_per_minute, "
            "creates_per_minute or circuit (got a list of 2 items)",
        ),
        (
            "providers:\n  - fal\n",
            "limits.yaml:1: providers: must be a mapping of names to limits (got a list of 1 items)",
        ),
        (
            "models:\n  seedance-1-pro: {max_concurrent: 2}\n",
            "limits.yaml:2: models.seedance-1-pro: 'seedance-1-pro' is not a valid name: a model id is "
            "'<provider>/<model name>' (like 'replicate/bytedance/seedance-1-pro')",
        ),
        (
            "models:\n  Replicate /x: {max_concurrent: 2}\n",
            "limits.yaml:2: models.Replicate /x: 'Replicate /x' is not a valid name: a model id is "
            "'<provider>/<model name>' (like 'replicate/bytedance/seedance-1-pro')",
        ),
        (
            "providers:\n  Replicate: {max_concurrent: 2}\n",
            "limits.yaml:2: providers.Replicate: 'Replicate' is not a valid name: a provider name is lower-case "
            "letters, digits, '_' and '-' (like 'replicate')",
        ),
        (
            "tenants:\n  'ac me': {monthly_cost_usd: 2}\n",
            "limits.yaml:2: tenants.ac me: 'ac me' is not a valid name: a tenant name is letters, digits, '_', "
            "'.' and '-' (at most 64)",
        ),
        (
            "tenants:\n  42: {monthly_cost_usd: 2}\n",
            "limits.yaml:1: tenants: an entry's name must be text (got 42); quote it",
        ),
        (
            "provider:\n  fal: {max_concurrent: 2}\n",
            "limits.yaml:1: provider: unknown section 'provider' (did you mean 'providers'?); the sections are "
            "providers, models or tenants",
        ),
        (
            "- providers\n",
            "limits.yaml:1: the file must be a mapping with sections providers, models or tenants "
            "(got a list of 1 items)",
        ),
        (
            "providers:\n  fal: {max_concurrent: 2}\n  fal: {max_concurrent: 3}\n",
            "limits.yaml:3: providers: duplicate key 'fal'",
        ),
        (
            "tenants:\n  acme: {monthly_cost_usd: 1, monthly_cost_usd: 2}\n",
            "limits.yaml:2: tenants.acme: duplicate key 'monthly_cost_usd'",
        ),
    ],
)
def test_bad_values(tmp_path: Path, text: str, expected: str) -> None:
    assert one_problem(tmp_path, text) == expected


def test_unknown_fields_suggest_close_names(tmp_path: Path) -> None:
    text = """providers:
  replicate:
    max_concurrency: 5
models:
  fal/fal-ai/flux: {requests_per_minute: 5}
tenants:
  acme:
    monthly_cost: 10
"""
    message, problems = problems_of(tmp_path, text)
    src = str(tmp_path / "limits.yaml")
    assert message.startswith(f"invalid limits file {src} (3 problems):\n  - ")
    assert problems == [
        f"{src}:3: providers.replicate.max_concurrency: unknown field 'max_concurrency' "
        "(did you mean 'max_concurrent'?); the fields are max_concurrent, requests_per_minute, "
        "creates_per_minute or circuit",
        f"{src}:5: models.fal/fal-ai/flux.requests_per_minute: unknown field 'requests_per_minute'; "
        "the fields are max_concurrent or circuit",
        f"{src}:8: tenants.acme.monthly_cost: unknown field 'monthly_cost' (did you mean 'monthly_cost_usd'?); "
        "the fields are monthly_executions, monthly_cost_usd or max_concurrent",
    ]
    for p in problems:
        assert f"  - {p}" in message


def test_every_problem_is_listed_in_line_order(tmp_path: Path) -> None:
    text = """tenant:
  acme: {monthly_cost_usd: 25}
providers:
  replicate: {max_concurrent: 0, requests_per_minute: 0}
  fal: {max_concurrent: 4}
models:
  bad-id: {max_concurrent: 1}
tenants:
  acme: {monthly_cost_usd: -2, monthly_executions: 1.5}
"""
    message, problems = problems_of(tmp_path, text)
    assert "(6 problems)" in message
    lines = [int(p.split(":")[1]) for p in problems]
    assert lines == sorted(lines) == [1, 4, 4, 7, 9, 9]
    joined = "\n".join(problems)
    assert "tenant: unknown section 'tenant' (did you mean 'tenants'?)" in joined
    assert "providers.replicate.max_concurrent: must be at least 1 (got 0)" in joined
    assert "providers.replicate.requests_per_minute: must be greater than 0 (got 0)" in joined
    assert "models.bad-id: 'bad-id' is not a valid name" in joined
    assert "tenants.acme.monthly_cost_usd: must be at least 0 (got -2)" in joined
    assert "tenants.acme.monthly_executions: must be a whole number or null (got 1.5)" in joined


def test_yaml_syntax_error(tmp_path: Path) -> None:
    problem = one_problem(tmp_path, "providers:\n  fal: {max_concurrent: 2\n  replicate: {}\n")
    assert problem.startswith("limits.yaml:3: YAML syntax error: ")
    assert "(column " in problem
    problem = one_problem(tmp_path, "providers:\n\tfal: {}\n")
    assert problem.startswith("limits.yaml:2: YAML syntax error: ")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(LimitsFileError) as info:
        load_limits(path)
    assert str(info.value) == f"invalid limits file: {path}: no such file"


def test_directory_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(LimitsFileError) as info:
        load_limits(tmp_path)
    assert str(info.value) == f"invalid limits file: {tmp_path}: is a directory, not a file"
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"providers:\n  fal: \xff\xfe\n")
    with pytest.raises(LimitsFileError) as info:
        load_limits(binary)
    assert str(info.value).startswith(f"invalid limits file: {binary}: cannot be read: ")


def test_a_lower_requests_per_minute_without_creates_per_minute_caps_creates_too(tmp_path: Path) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text("providers:\n  replicate: {requests_per_minute: 120}\n")
    limits = load_limits(path)
    assert limits.provider("replicate").requests_per_minute == 120
    assert limits.provider("replicate").creates_per_minute == 120  # not the built-in 600
    path.write_text("providers:\n  replicate: {requests_per_minute: 120, creates_per_minute: 30}\n")
    assert load_limits(path).provider("replicate").creates_per_minute == 30
    path.write_text("providers:\n  replicate: {requests_per_minute: 5000}\n")
    assert load_limits(path).provider("replicate").creates_per_minute == 600  # the documented create limit stays


def test_a_circuit_takes_its_success_rate_rule_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text(
        "providers:\n  fal: {circuit: {failures: 3, min_success_rate: 0.8, min_calls: 40}}\n"
        "models:\n  fal/fal-ai/flux/schnell: {circuit: {min_success_rate: 0}}\n"
    )
    limits = load_limits(str(path))
    own = limits.circuit("fal", "fal/fal-ai/flux/schnell")
    assert (own.failures, own.min_success_rate, own.min_calls) == (5, 0.0, 20)  # its own entry, else defaults
    inherited = limits.circuit("fal", "fal/fal-ai/kling-video")
    assert (inherited.failures, inherited.min_success_rate, inherited.min_calls) == (3, 0.8, 40)
    assert limits.circuit("replicate").min_success_rate == 0.5  # the built-in rule
