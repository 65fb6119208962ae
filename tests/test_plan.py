"""Plans: loading, validation with precise errors, dependencies and references."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reelflow.errors import ErrorItem, PlanError
from reelflow.plan import (
    JOB_ID_PATTERN,
    MAX_ERRORS,
    MAX_JOBS,
    JobSpec,
    Plan,
    find_references,
    load_plan_text,
    parse_plan,
    plan_json_schema,
    resolve_references,
)
from reelflow.providers.catalog.spec import is_reference

# --- helpers -------------------------------------------------------------------------------------


def image(job_key: str = "still", **params: Any) -> dict[str, Any]:
    return {"id": job_key, "type": "generate-image", "model": "local/image", "params": {"prompt": "sea", **params}}


def video(job_key: str = "clip", **params: Any) -> dict[str, Any]:
    return {"id": job_key, "type": "generate-video", "model": "local/video", "params": {"prompt": "waves", **params}}


def sim(job_key: str, **extra: Any) -> dict[str, Any]:
    return {"id": job_key, "type": "run", "model": "sim/video", **extra}


def problems(data: Any) -> list[ErrorItem]:
    with pytest.raises(PlanError) as info:
        parse_plan(data)
    return info.value.errors


def only_problem(data: Any) -> ErrorItem:
    errors = problems(data)
    assert len(errors) == 1, [str(e) for e in errors]
    return errors[0]


SUNSET: dict[str, Any] = {
    "jobs": [
        {
            "id": "still",
            "type": "generate-image",
            "model": "local/image",
            "params": {"prompt": "A sunset over the sea", "aspect_ratio": "16:9"},
        },
        {
            "id": "clip",
            "type": "generate-video",
            "model": "local/video",
            "params": {"image": "$still", "prompt": "slow waves", "duration": 5},
        },
        {
            "id": "voice",
            "type": "generate-audio",
            "model": "local/audio",
            "params": {"text": "Every evening the sea keeps its promise.", "voice": "en"},
        },
        {"id": "final", "type": "merge-video-audio", "params": {"video": "$clip", "audio": "$voice"}},
        {
            "id": "captioned",
            "type": "captions",
            "params": {"video": "$final", "text": "Every evening the sea keeps its promise."},
        },
    ],
    "metadata": {"order": 1234},
    "options": {"on_failure": "stop", "cache": True, "priority": 0, "timeout_s": 3600},
}


# --- valid plans ---------------------------------------------------------------------------------


def test_sunset_plan_validates_with_its_dependencies() -> None:
    plan = parse_plan(SUNSET)
    assert [j.id for j in plan.jobs] == ["still", "clip", "voice", "final", "captioned"]
    assert plan.dependencies() == {
        "still": [],
        "clip": ["still"],
        "voice": [],
        "final": ["clip", "voice"],
        "captioned": ["final"],
    }
    assert plan.dependents()["still"] == ["clip"]
    assert plan.sinks() == ["captioned"]
    assert plan.job("clip").params["duration"] == 5
    assert plan.metadata == {"order": 1234}
    assert plan.options.timeout_s == 3600
    order = plan.topological_order()
    assert order.index("still") < order.index("clip") < order.index("final") < order.index("captioned")


def test_defaults_of_jobs_and_options() -> None:
    plan = parse_plan({"jobs": [image()]})
    job = plan.jobs[0]
    assert (job.max_attempts, job.timeout_s, job.start_timeout_s, job.cache, job.depends_on) == (
        3,
        None,
        None,
        None,
        [],
    )
    assert plan.options.on_failure == "stop"
    assert plan.options.cache is True
    assert plan.options.priority == 0
    assert plan.webhook is None


def test_job_lookup_of_unknown_id_raises_key_error() -> None:
    with pytest.raises(KeyError):
        parse_plan({"jobs": [image()]}).job("nope")


def test_parse_plan_accepts_an_already_parsed_plan() -> None:
    plan = parse_plan(SUNSET)
    assert parse_plan(plan) == plan


def test_shorthand_single_job_becomes_a_one_job_plan() -> None:
    plan = parse_plan(
        {
            "type": "generate-video",
            "model": "local/video",
            "params": {"prompt": "waves", "duration": 3},
            "webhook": "https://example.com/hook",
            "metadata": {"k": 1},
        }
    )
    assert [j.id for j in plan.jobs] == ["job"]
    assert plan.jobs[0].type == "generate-video"
    assert plan.webhook == "https://example.com/hook"
    assert plan.metadata == {"k": 1}


def test_shorthand_keeps_a_given_id() -> None:
    plan = parse_plan({"id": "teaser", "type": "generate-image", "model": "local/image", "params": {"prompt": "x"}})
    assert plan.jobs[0].id == "teaser"


def test_shorthand_errors_point_into_the_job_as_written() -> None:
    err = only_problem({"type": "generate-video", "model": "local/video", "params": {"prompt": "x", "duration": 90}})
    assert err.loc == ["params", "duration"]
    assert err.msg == "job 'job': duration must be at most 60 (got 90)"


def test_sim_models_accept_knobs_and_unlisted_parameters() -> None:
    parse_plan(
        {
            "jobs": [
                {
                    "id": "a",
                    "type": "generate-video",
                    "model": "sim/video",
                    "params": {"latency_s": 0.5, "fail_times": 2, "cost_usd": 0.1, "anything": [1, 2]},
                }
            ]
        }
    )


def test_run_passes_params_through_and_accepts_any_model_of_an_open_provider() -> None:
    plan = parse_plan(
        {
            "jobs": [
                {
                    "id": "a",
                    "type": "run",
                    "model": "replicate/someone/new-model:abc123",
                    "params": {"input": {"x": 1}},
                },
                {"id": "b", "type": "run", "model": "sim/audio", "params": {"whatever": True}},
            ]
        }
    )
    assert plan.job("a").params == {"input": {"x": 1}}


# --- loading text --------------------------------------------------------------------------------

SUNSET_YAML = """\
jobs:
  - id: still
    type: generate-image
    model: local/image
    params: {prompt: "A sunset over the sea", aspect_ratio: 16:9}
  - id: clip
    type: generate-video
    model: local/video
    params: {image: "$still", prompt: "slow waves", duration: 5}
metadata: {order: 1234, day: 2024-01-01}
"""


def test_yaml_plan_loads_and_validates() -> None:
    data = load_plan_text(SUNSET_YAML, filename="sunset.yaml")
    plan = parse_plan(data)
    assert plan.dependencies()["clip"] == ["still"]


def test_yaml_keeps_aspect_ratios_and_dates_as_text() -> None:
    data = load_plan_text(SUNSET_YAML)
    assert data["jobs"][0]["params"]["aspect_ratio"] == "16:9"  # not base-60 969
    assert data["metadata"]["day"] == "2024-01-01"  # not a date object that JSON cannot hold
    assert data["metadata"]["order"] == 1234


def test_json_plan_loads() -> None:
    data = load_plan_text(json.dumps(SUNSET), filename="plan.json")
    assert parse_plan(data).sinks() == ["captioned"]
    assert load_plan_text(json.dumps(SUNSET)) == SUNSET  # sniffed as JSON without a filename


def test_bad_yaml_names_the_line() -> None:
    text = "jobs:\n  - id: a\n    type: run\n   model: sim/video\n"
    with pytest.raises(PlanError) as info:
        load_plan_text(text, filename="plan.yaml")
    msg = info.value.errors[0].msg
    assert msg.startswith("plan.yaml: YAML syntax error at line 4")
    assert "column" in msg


def test_bad_json_names_line_and_column() -> None:
    with pytest.raises(PlanError) as info:
        load_plan_text('{\n  "jobs": [\n    {"id": "a",}\n  ]\n}', filename="plan.json")
    assert "JSON syntax error at line 3, column" in info.value.errors[0].msg


def test_duplicate_keys_are_refused_in_yaml_and_json() -> None:
    with pytest.raises(PlanError, match=r"line 3.*duplicate key 'id'"):
        load_plan_text("jobs:\n  - id: a\n    id: b\n")
    with pytest.raises(PlanError, match="duplicate key 'id'"):
        load_plan_text('{"jobs": [{"id": "a", "id": "b"}]}')


def test_yaml_flow_style_text_that_looks_like_json_loads() -> None:
    assert load_plan_text("{jobs: [{id: a, type: run, model: sim/video}]}") == {
        "jobs": [{"id": "a", "type": "run", "model": "sim/video"}]
    }


def test_empty_document_is_not_a_plan() -> None:
    err = only_problem(load_plan_text(""))
    assert err.msg == "a plan must be a mapping with 'jobs' (got null)"


# --- plan-level problems -------------------------------------------------------------------------


@pytest.mark.parametrize("data", [[1, 2], "jobs: []", 5, None])
def test_a_plan_must_be_a_mapping(data: Any) -> None:
    err = only_problem(data)
    assert err.loc == []
    assert err.msg.startswith("a plan must be a mapping with 'jobs'")


def test_missing_jobs() -> None:
    err = only_problem({"webhook": "https://example.com/h"})
    assert (err.loc, err.msg) == (["jobs"], "a plan needs 'jobs': a list of jobs")


def test_no_jobs() -> None:
    err = only_problem({"jobs": []})
    assert (err.loc, err.msg) == (["jobs"], "a plan needs at least one job")


def test_jobs_not_a_list() -> None:
    err = only_problem({"jobs": {"a": 1}})
    assert (err.loc, err.msg) == (["jobs"], "jobs must be a list of jobs (got an object)")


def test_too_many_jobs_says_how_many() -> None:
    err = only_problem({"jobs": [sim(f"j{i}") for i in range(MAX_JOBS + 1)]})
    assert err.loc == ["jobs"]
    assert err.msg == "a plan may have at most 200 jobs (got 201)"
    parse_plan({"jobs": [sim(f"j{i}") for i in range(MAX_JOBS)]})


def test_unknown_top_level_field() -> None:
    err = only_problem({"jobs": [image()], "jobz": []})
    assert err.loc == ["jobz"]
    assert err.msg.startswith("unknown top-level field 'jobz' (did you mean 'jobs'?)")


@pytest.mark.parametrize("hook", ["ftp://example.com/h", "example.com/h", "https://", 5])
def test_webhook_must_be_an_http_url(hook: Any) -> None:
    errors = problems({"jobs": [image()], "webhook": hook})
    assert errors[0].loc == ["webhook"]
    assert errors[0].msg.startswith("webhook must be")


def test_metadata_must_be_a_mapping() -> None:
    err = only_problem({"jobs": [image()], "metadata": [1]})
    assert (err.loc, err.msg) == (["metadata"], "metadata must be a mapping (got a list of 1 items)")


@pytest.mark.parametrize(
    ("options", "loc", "msg"),
    [
        ({"on_failure": "halt"}, ["options", "on_failure"], "options.on_failure must be 'stop' or 'continue'"),
        ({"priority": 5000}, ["options", "priority"], "options.priority must be at most 1000 (got 5000)"),
        ({"priority": -1001}, ["options", "priority"], "options.priority must be at least -1000 (got -1001)"),
        ({"priority": 1.5}, ["options", "priority"], "options.priority must be an integer (got 1.5)"),
        ({"timeout_s": 0}, ["options", "timeout_s"], "options.timeout_s must be greater than 0 (got 0)"),
        ({"cache": "yes"}, ["options", "cache"], "options.cache must be true or false (got 'yes')"),
        ({"retries": 3}, ["options", "retries"], "unknown field 'options.retries'"),
        ({"webhook_events": ["job.done", "nope"]}, ["options", "webhook_events", 1], "unknown event 'nope'"),
    ],
)
def test_option_problems(options: dict[str, Any], loc: list[Any], msg: str) -> None:
    err = only_problem({"jobs": [image()], "options": options})
    assert err.loc == loc
    assert msg in err.msg


def test_options_must_be_a_mapping() -> None:
    err = only_problem({"jobs": [image()], "options": "fast"})
    assert (err.loc, err.msg) == (["options"], "options must be a mapping (got 'fast')")


# --- job structure -------------------------------------------------------------------------------


def test_a_job_must_be_a_mapping() -> None:
    err = only_problem({"jobs": [image(), "clip"]})
    assert err.loc == ["jobs", 1]
    assert err.msg == "jobs[1] must be a mapping with id and type (got 'clip')"


def test_missing_id_and_type_are_named() -> None:
    errors = problems({"jobs": [{"model": "local/image", "params": {"prompt": "x"}}]})
    assert {(tuple(e.loc), e.msg) for e in errors} == {
        (("jobs", 0, "id"), "jobs[0]: missing required field 'id'"),
        (("jobs", 0, "type"), "jobs[0]: missing required field 'type'"),
    }


def test_unknown_job_field_suggests_the_right_one() -> None:
    err = only_problem({"jobs": [image(), {**video(), "depends": ["still"]}]})
    assert err.loc == ["jobs", 1, "depends"]
    assert err.msg.startswith("job 'clip': unknown field 'depends' (did you mean 'depends_on'?)")


@pytest.mark.parametrize(
    ("field", "value", "msg"),
    [
        ("timeout_s", -1, "job 'clip': timeout_s must be greater than 0 (got -1)"),
        ("start_timeout_s", 0, "job 'clip': start_timeout_s must be greater than 0 (got 0)"),
        ("max_attempts", 0, "job 'clip': max_attempts must be at least 1 (got 0)"),
        ("max_attempts", 21, "job 'clip': max_attempts must be at most 20 (got 21)"),
        ("max_attempts", True, "job 'clip': max_attempts must be an integer (got true)"),
        ("cache", "no", "job 'clip': cache must be true or false (got 'no')"),
        ("id", 7, "jobs[0]: id must be a string (got 7)"),
        ("params", ["prompt"], "job 'clip': params must be a mapping (got a list of 1 items)"),
        ("depends_on", "still", "job 'clip': depends_on must be a list (got 'still')"),
    ],
)
def test_job_field_problems(field: str, value: Any, msg: str) -> None:
    err = only_problem({"jobs": [{**video(), field: value}]})
    assert err.loc == ["jobs", 0, field]
    assert err.msg == msg


@pytest.mark.parametrize("bad", ["Clip", "-clip", "clip 1", "", "a" * 65, "clip.v2"])
def test_invalid_job_id_names_it_and_the_pattern(bad: str) -> None:
    err = only_problem({"jobs": [video(bad)]})
    assert err.loc == ["jobs", 0, "id"]
    assert f"job id {bad!r} is invalid" in err.msg
    assert JOB_ID_PATTERN in err.msg


def test_duplicate_ids_name_the_id_and_both_positions() -> None:
    err = only_problem({"jobs": [image(), video(), image("still")]})
    assert err.loc == ["jobs", 2, "id"]
    assert err.msg == "duplicate job id 'still' (jobs[0] and jobs[2])"


# --- types and models ----------------------------------------------------------------------------


def test_unknown_type_lists_the_known_ones() -> None:
    err = only_problem({"jobs": [{**video(), "type": "generate-vid"}]})
    assert err.loc == ["jobs", 0, "type"]
    assert err.msg.startswith("job 'clip': unknown type 'generate-vid' (did you mean 'generate-video'?)")
    assert "known types: generate-image, generate-video, generate-audio, transcribe, run, merge-video-audio" in (
        err.msg
    )


def test_missing_model_for_a_type_that_needs_one() -> None:
    job = video()
    del job["model"]
    err = only_problem({"jobs": [job]})
    assert err.loc == ["jobs", 0, "model"]
    assert err.msg == (
        "job 'clip': type generate-video needs a model ('<provider>/<model name>'), e.g. local/video or sim/video"
    )


def test_model_given_to_an_operation() -> None:
    job = {"id": "final", "type": "merge-video-audio", "model": "local/video", "params": {}}
    job["params"] = {"video": "https://x.test/v.mp4", "audio": "https://x.test/a.mp3"}
    err = only_problem({"jobs": [job]})
    assert err.loc == ["jobs", 0, "model"]
    assert (
        err.msg == "job 'final': type merge-video-audio runs locally with ffmpeg and takes no model (got 'local/video')"
    )


@pytest.mark.parametrize("bad", ["flux", "local/", "/video", "local video", "Local/video", "local//video"])
def test_malformed_model_string(bad: str) -> None:
    err = only_problem({"jobs": [{**video(), "model": bad}]})
    assert err.loc == ["jobs", 0, "model"]
    assert err.msg == f"job 'clip': model '{bad}' is malformed; expected '<provider>/<model name>'"


def test_model_must_be_a_string() -> None:
    err = only_problem({"jobs": [{**video(), "model": 5}]})
    assert (err.loc, err.msg) == (["jobs", 0, "model"], "job 'clip': model must be a string (got 5)")


def test_unknown_model_is_named_with_the_providers_models() -> None:
    err = only_problem({"jobs": [{**video(), "model": "local/vid"}]})
    assert err.loc == ["jobs", 0, "model"]
    assert err.msg.startswith("job 'clip': unknown model 'local/vid'")
    assert "known local models: local/image, local/video, local/audio" in err.msg


def test_uncatalogued_model_of_an_open_provider_points_to_run() -> None:
    err = only_problem({"jobs": [{**video(), "model": "replicate/acme/new-video"}]})
    assert "unknown model 'replicate/acme/new-video'" in err.msg
    assert "use type run" in err.msg


def test_unknown_provider() -> None:
    err = only_problem({"jobs": [{**video(), "model": "replicat/acme/flux"}]})
    assert err.loc == ["jobs", 0, "model"]
    assert err.msg.startswith("job 'clip': unknown provider 'replicat' in model 'replicat/acme/flux'")
    assert "(did you mean 'replicate'?)" in err.msg


def test_model_that_does_not_support_the_type_says_what_it_supports() -> None:
    err = only_problem({"jobs": [{**video(), "model": "local/image"}]})
    assert err.loc == ["jobs", 0, "model"]
    assert err.msg == "job 'clip': model local/image does not support generate-video (it supports generate-image)"


def test_run_needs_a_known_provider() -> None:
    err = only_problem({"jobs": [{"id": "x", "type": "run", "model": "nowhere/model", "params": {}}]})
    assert err.loc == ["jobs", 0, "model"]
    assert "unknown provider 'nowhere'" in err.msg


def test_run_needs_a_model() -> None:
    err = only_problem({"jobs": [{"id": "x", "type": "run", "params": {"input": {}}}]})
    assert err.loc == ["jobs", 0, "model"]
    assert err.msg.startswith("job 'x': type run needs a model")


def test_run_refuses_a_local_model() -> None:
    err = only_problem({"jobs": [{"id": "x", "type": "run", "model": "local/video"}]})
    assert err.msg == "job 'x': model local/video does not support run (it supports generate-video)"


def test_run_input_must_be_an_object() -> None:
    err = only_problem({"jobs": [{"id": "x", "type": "run", "model": "replicate/a/b", "params": {"input": "hi"}}]})
    assert err.loc == ["jobs", 0, "params", "input"]
    assert err.msg == "job 'x': input must be an object (got 'hi')"


# --- parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "loc", "msg"),
    [
        ({"duration": 90}, "duration", "job 'clip': duration must be at most 60 (got 90)"),
        ({"duration": 0.1}, "duration", "job 'clip': duration must be at least 0.5 (got 0.1)"),
        ({"duration": "5s"}, "duration", "job 'clip': duration must be a number (got '5s')"),
        ({"duration": True}, "duration", "job 'clip': duration must be a number (got true)"),
        ({"fps": 2.5}, "fps", "job 'clip': fps must be an integer (got 2.5)"),
        ({"seed": -1}, "seed", "job 'clip': seed must be at least 0 (got -1)"),
        (
            {"durration": 3},
            "durration",
            "job 'clip': unknown parameter 'durration' for model local/video (did you mean 'duration'?)",
        ),
        (
            {"aspect_ratio": "2:1"},
            "aspect_ratio",
            "job 'clip': aspect_ratio must be one of 16:9, 9:16, 1:1, 4:3, 3:4, 21:9 (got '2:1')",
        ),
        (
            {"image": "still.png"},
            "image",
            "job 'clip': image must be an http(s) URL or a reference such as '$clip' (got 'still.png')",
        ),
    ],
)
def test_parameter_problems_name_job_parameter_and_value(params: dict[str, Any], loc: str, msg: str) -> None:
    err = only_problem({"jobs": [video(**params)]})
    assert err.loc == ["jobs", 0, "params", loc]
    assert err.msg == msg


def test_prompt_too_long_says_by_how_much() -> None:
    err = only_problem({"jobs": [image(prompt="x" * 2051)]})
    assert err.loc == ["jobs", 0, "params", "prompt"]
    assert err.msg == "job 'still': prompt is longer than 2000 characters (2051)"


def test_missing_required_parameter() -> None:
    err = only_problem({"jobs": [{"id": "clip", "type": "merge-video-audio", "params": {"audio": "$x"}}, sim("x")]})
    assert err.loc == ["jobs", 0, "params", "video"]
    assert err.msg == "job 'clip': missing required parameter 'video'"


def test_video_needs_a_prompt_or_an_image() -> None:
    err = only_problem({"jobs": [{"id": "clip", "type": "generate-video", "model": "local/video", "params": {}}]})
    assert err.loc == ["jobs", 0, "params"]
    assert err.msg == "job 'clip': one of prompt or image is required"
    parse_plan({"jobs": [image(), {**video(), "params": {"image": "$still"}}]})


def test_audio_needs_text_prompt_or_duration() -> None:
    job = {"id": "voice", "type": "generate-audio", "model": "local/audio", "params": {"voice": "en"}}
    err = only_problem({"jobs": [job]})
    assert err.msg == "job 'voice': one of text, prompt or duration is required"


def test_captions_take_exactly_one_source_of_text() -> None:
    job = {"id": "cap", "type": "captions", "params": {"video": "https://x.test/v.mp4", "text": "a", "srt": "b"}}
    err = only_problem({"jobs": [job]})
    assert err.loc == ["jobs", 0, "params", "srt"]
    assert err.msg == "job 'cap': give only one of text, segments, srt or words (got text and srt)"
    job["params"] = {"video": "https://x.test/v.mp4"}
    assert only_problem({"jobs": [job]}).msg == "job 'cap': one of text, segments, srt or words is required"


def test_list_items_are_checked_with_their_index() -> None:
    job = {"id": "joined", "type": "concat", "params": {"videos": ["$a", "https://x.test/b.mp4", "b.mp4"]}}
    err = only_problem({"jobs": [sim("a"), job]})
    assert err.loc == ["jobs", 1, "params", "videos", 2]
    assert err.msg.startswith("job 'joined': videos[2] must be an http(s) URL")


def test_list_length_limits() -> None:
    job = {"id": "joined", "type": "concat", "params": {"videos": []}}
    assert only_problem({"jobs": [job]}).msg == "job 'joined': videos needs at least 1 items (got 0)"


def test_references_pass_any_field_check() -> None:
    parse_plan(
        {
            "jobs": [
                sim("probe"),
                video(duration="$probe.duration", fps="$probe.fps", image="$probe"),
            ]
        }
    )


def test_escaped_dollar_is_checked_as_the_literal_text() -> None:
    parse_plan({"jobs": [image(prompt="$$5 sunset")]})  # "$5 sunset", no reference
    err = only_problem({"jobs": [image(prompt="$$" + "x" * 2000)]})
    assert err.msg == "job 'still': prompt is longer than 2000 characters (2001)"


# --- references and dependencies -----------------------------------------------------------------


def test_reference_to_unknown_job_is_named() -> None:
    final = {"id": "final", "type": "merge-video-audio", "params": {"video": "$clp", "audio": "$still"}}
    err = only_problem({"jobs": [image(), video(image="$still"), final]})
    assert err.loc == ["jobs", 2, "params", "video"]
    assert err.msg == "job 'final': params.video refers to unknown job 'clp' (did you mean 'clip'?)"


def test_nested_reference_to_unknown_job_has_full_location() -> None:
    job = sim("a", params={"input": {"frames": [{"image": "$ghost"}]}})
    err = only_problem({"jobs": [job]})
    assert err.loc == ["jobs", 0, "params", "input", "frames", 0, "image"]
    assert err.msg == "job 'a': params.input.frames[0].image refers to unknown job 'ghost'"


def test_a_job_referencing_itself() -> None:
    err = only_problem({"jobs": [video(image="$clip")]})
    assert err.loc == ["jobs", 0, "params", "image"]
    assert err.msg == "job 'clip': params.image refers to the job itself"


def test_depends_on_unknown_and_self() -> None:
    errors = problems({"jobs": [image(), {**video(), "depends_on": ["stil", "clip"]}]})
    assert [(e.loc, e.msg) for e in errors] == [
        (["jobs", 1, "depends_on", 0], "job 'clip': depends_on refers to unknown job 'stil' (did you mean 'still'?)"),
        (["jobs", 1, "depends_on", 1], "job 'clip': depends_on names the job itself"),
    ]


def test_dependencies_merge_depends_on_and_nested_references_without_duplicates() -> None:
    plan = parse_plan(
        {
            "jobs": [
                sim("a"),
                sim("b"),
                sim("c"),
                sim(
                    "d",
                    depends_on=["c", "a", "c"],
                    params={"input": {"clips": [{"src": "$b"}, "$a.url", "$c"], "note": "not $a"}, "x": "$b"},
                ),
            ]
        }
    )
    assert plan.dependencies() == {"a": [], "b": [], "c": [], "d": ["a", "b", "c"]}
    assert plan.dependents() == {"a": ["d"], "b": ["d"], "c": ["d"], "d": []}
    assert plan.sinks() == ["d"]


def test_sinks_in_plan_order() -> None:
    plan = parse_plan({"jobs": [sim("z"), sim("y", depends_on=["z"]), sim("x"), sim("w", depends_on=["x"])]})
    assert plan.sinks() == ["y", "w"]


def test_cycle_is_named_in_order() -> None:
    jobs = [
        sim("a", params={"from": "$c"}),
        sim("b", depends_on=["a"]),
        sim("c", params={"input": {"x": ["$b"]}}),
    ]
    err = only_problem({"jobs": jobs})
    assert err.loc == ["jobs", 0]
    assert err.msg == "cycle: a -> b -> c -> a"


def test_two_job_cycle_and_separate_cycles_are_all_reported() -> None:
    jobs = [
        sim("a", depends_on=["b"]),
        sim("b", depends_on=["a"]),
        sim("ok"),
        sim("c", depends_on=["d"]),
        sim("d", depends_on=["c", "ok"]),
    ]
    assert [e.msg for e in problems({"jobs": jobs})] == ["cycle: a -> b -> a", "cycle: c -> d -> c"]


def test_many_problems_are_reported_together() -> None:
    data = {
        "webhook": "nope",
        "jobs": [
            image(prompt="x" * 2051),
            video(duration=90),
            {"id": "final", "type": "merge-video-audio", "params": {"video": "$clp", "audio": 5}},
            {"id": "Bad", "type": "teleport"},
        ],
    }
    errors = problems(data)
    locs = [e.loc for e in errors]
    assert locs == [
        ["webhook"],
        ["jobs", 0, "params", "prompt"],
        ["jobs", 1, "params", "duration"],
        ["jobs", 2, "params", "audio"],
        ["jobs", 2, "params", "video"],
        ["jobs", 3, "id"],
        ["jobs", 3, "type"],
    ]
    text = str(PlanError(errors))
    assert text.startswith("invalid plan (7 problems):")


def test_structural_problems_do_not_hide_parameter_problems_of_the_same_job() -> None:
    errors = problems({"jobs": [{**video(duration=90), "timeout_s": -5}]})
    assert {e.msg for e in errors} == {
        "job 'clip': timeout_s must be greater than 0 (got -5)",
        "job 'clip': duration must be at most 60 (got 90)",
    }


def test_error_list_is_capped() -> None:
    errors = problems({"jobs": [video(f"j{i}", duration=90, fps=0) for i in range(80)]})
    assert len(errors) == MAX_ERRORS + 1
    assert errors[-1].msg == "... and 60 more problems"


# --- find and resolve references -----------------------------------------------------------------


def test_find_references_in_nested_lists_and_maps() -> None:
    params = {
        "video": "$clip",
        "input": {"frames": [{"image": "$still.images.0"}, "plain", "$$escaped", "see $clip"]},
        "n": 3,
    }
    assert find_references(params) == [
        ("clip", None, ["video"]),
        ("still", "images.0", ["input", "frames", 0, "image"]),
    ]


def test_resolve_references_nested_and_fields() -> None:
    results = {
        "clip": {"url": "https://cdn.test/clip.mp4", "duration": 5.0, "meta": {"size": {"w": 1280}}},
        "still": {"url": "https://cdn.test/still.png", "images": ["https://cdn.test/a.png", "https://cdn.test/b.png"]},
    }
    params = {
        "video": "$clip",
        "length": "$clip.duration",
        "nested": {"list": [{"w": "$clip.meta.size.w"}, "$still.images.1"]},
        "text": "see $clip",
        "price": "$$5",
        "n": 2,
    }
    assert resolve_references(params, results) == {
        "video": "https://cdn.test/clip.mp4",
        "length": 5.0,
        "nested": {"list": [{"w": 1280}, "https://cdn.test/b.png"]},
        "text": "see $clip",
        "price": "$5",
        "n": 2,
    }
    assert params["video"] == "$clip"  # the input is not changed


def test_resolve_missing_field_names_job_and_field() -> None:
    with pytest.raises(PlanError) as info:
        resolve_references({"length": "$clip.durration"}, {"clip": {"url": "u", "duration": 5}}, job_key="final")
    err = info.value.errors[0]
    assert err.loc == ["params", "length"]
    assert err.msg == (
        "job 'final': params.length refers to '$clip.durration', but job 'clip' has no field 'durration' "
        "(it has: url, duration)"
    )


def test_resolve_missing_result_or_url() -> None:
    with pytest.raises(PlanError) as info:
        resolve_references({"a": "$ghost", "b": ["$nourl"]}, {"nourl": {"text": "hi"}})
    assert [e.msg for e in info.value.errors] == [
        "params.a refers to job 'ghost', which has no result",
        "params.b[0] refers to job 'nourl', whose result has no url (it has: text)",
    ]


# --- schema --------------------------------------------------------------------------------------


def test_json_schema_describes_the_plan() -> None:
    schema = plan_json_schema()
    assert set(schema["properties"]) == {"jobs", "webhook", "metadata", "options"}
    job = schema["$defs"]["JobSpec"]
    assert job["properties"]["id"]["pattern"] == JOB_ID_PATTERN
    assert "generate-video" in job["properties"]["type"]["enum"]
    assert job["additionalProperties"] is False
    json.dumps(schema)


def test_jobspec_refuses_unknown_fields_directly() -> None:
    with pytest.raises(ValueError):
        JobSpec.model_validate({"id": "a", "type": "run", "nope": 1})
    assert isinstance(Plan.model_validate({"jobs": [{"id": "a", "type": "run"}]}), Plan)


# --- properties ----------------------------------------------------------------------------------


@st.composite
def dag_plans(draw: st.DrawFn, min_jobs: int = 1) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """A random acyclic plan (jobs shuffled) and each job's expected dependency set."""
    n = draw(st.integers(min_jobs, 14))
    ids = [f"j{i}" for i in range(n)]
    deps: dict[str, list[str]] = {}
    for i, job_key in enumerate(ids):
        deps[job_key] = sorted(set(draw(st.lists(st.sampled_from(ids[:i]), max_size=4)))) if i else []
    order = draw(st.permutations(ids))
    jobs = []
    for job_key in order:
        params: dict[str, Any] = {"latency_s": 0}
        depends_on: list[str] = []
        nested: list[Any] = []
        for k, dep in enumerate(deps[job_key]):
            how = draw(st.sampled_from(["depends_on", "ref", "field", "nested", "twice"]))
            if how == "depends_on":
                depends_on.append(dep)
            elif how == "ref":
                params[f"p{k}"] = f"${dep}"
            elif how == "field":
                params[f"p{k}"] = f"${dep}.duration"
            elif how == "nested":
                nested.append({"items": [f"${dep}", {"deep": f"${dep}.url"}]})
            else:
                depends_on.append(dep)
                params[f"p{k}"] = f"${dep}"
        if nested:
            params["extra"] = {"list": nested}
        jobs.append(
            {
                "id": job_key,
                "type": "generate-video",
                "model": "sim/video",
                "params": params,
                **({"depends_on": depends_on} if depends_on else {}),
            }
        )
    return {"jobs": jobs}, deps


@settings(max_examples=150, deadline=None)
@given(dag_plans())
def test_random_dags_validate_and_dependencies_match(case: tuple[dict[str, Any], dict[str, list[str]]]) -> None:
    data, deps = case
    plan = parse_plan(data)
    position = {job.id: pos for pos, job in enumerate(plan.jobs)}
    assert plan.dependencies() == {j: sorted(d, key=position.__getitem__) for j, d in deps.items()}
    used = {d for ds in deps.values() for d in ds}
    assert plan.sinks() == [job.id for job in plan.jobs if job.id not in used]
    order = plan.topological_order()
    assert all(order.index(d) < order.index(j) for j, ds in deps.items() for d in ds)


@settings(max_examples=150, deadline=None)
@given(dag_plans(min_jobs=2), st.data())
def test_a_back_edge_is_rejected_and_the_named_cycle_is_real(
    case: tuple[dict[str, Any], dict[str, list[str]]], data: st.DataObject
) -> None:
    plan_data, deps = case
    edges = [(dep, job) for job, ds in deps.items() for dep in ds]  # dep runs before job
    if not edges:
        first, second = sorted(deps)[:2]
        edges = [(first, second)]
        deps[second] = [first]
        job = next(j for j in plan_data["jobs"] if j["id"] == second)
        job["depends_on"] = [*job.get("depends_on", []), first]
    before, after = data.draw(st.sampled_from(edges))
    back = next(j for j in plan_data["jobs"] if j["id"] == before)
    back["depends_on"] = [*back.get("depends_on", []), after]  # now `before` also waits on `after`
    deps[before] = [*deps[before], after]

    errors = problems(plan_data)
    cycles = [e.msg for e in errors if e.msg.startswith("cycle: ")]
    assert len(errors) == len(cycles) == 1
    names = cycles[0].removeprefix("cycle: ").split(" -> ")
    assert names[0] == names[-1]
    assert len(set(names[:-1])) == len(names) - 1 >= 2
    for a, b in itertools.pairwise(names):
        assert a in deps[b], f"{a} -> {b} is not an edge"


def test_find_references_walks_maps_lists_and_tuples_in_document_order() -> None:
    from types import MappingProxyType

    params = {
        "a": "$x",
        "b": ["plain", {"c": "$y.url"}, ("$z",)],
        "m": MappingProxyType({"d": "$w.meta.0"}),  # any Mapping, not only dict
        "n": 5,
        "e": "$$x",  # escaped: the text $x
        "f": "$",
        "g": None,
    }
    assert find_references(params) == [
        ("x", None, ["a"]),
        ("y", "url", ["b", 1, "c"]),
        ("z", None, ["b", 2, 0]),
        ("w", "meta.0", ["m", "d"]),
    ]
    found = find_references({"a": ["$x"]})
    found[0][2].append("changed")  # each location is a list of its own
    assert find_references({"a": ["$x"]}) == [("x", None, ["a", 0])]
    assert find_references("$top") == [("top", None, [])]


def _references_oracle(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str, str | None, list[str | int]]]:
    """The plain recursive reading of what find_references promises, to check its faster one against."""
    if isinstance(value, str):
        if value.startswith("$") and not value.startswith("$$") and value != "$" and is_reference(value):
            key, _, field = value[1:].partition(".")
            return [(key, field or None, list(path))]
        return []
    if isinstance(value, dict):
        return [r for k, v in value.items() for r in _references_oracle(v, (*path, k))]
    if isinstance(value, list | tuple):
        return [r for i, v in enumerate(value) for r in _references_oracle(v, (*path, i))]
    return []


_REF_TEXT = st.sampled_from(["$a", "$b.url", "$c.meta.0", "$$a", "$", "a$", "plain", "$9x", "$a b"])
_PARAM_VALUES = st.recursive(
    st.one_of(_REF_TEXT, st.integers(), st.floats(allow_nan=False), st.booleans(), st.none()),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["x", "y", "z"]), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["image", "prompt", "videos", "k"]), _PARAM_VALUES, max_size=4) | _PARAM_VALUES)
def test_find_references_agrees_with_the_plain_recursive_reading(params: Any) -> None:
    assert find_references(params) == _references_oracle(params)


def test_dependents_from_given_dependencies_match_computed_ones() -> None:
    plan = parse_plan(
        {"jobs": [
            {"id": "a", "type": "generate-image", "model": "sim/image", "params": {}},
            {"id": "b", "type": "generate-video", "model": "sim/video", "params": {"image": "$a"}},
            {"id": "c", "type": "generate-video", "model": "sim/video", "params": {"image": "$a"}, "depends_on": ["b"]},
        ]}
    )  # fmt: skip
    deps = plan.dependencies()
    assert deps == {"a": [], "b": ["a"], "c": ["a", "b"]}
    assert plan.dependents(deps) == plan.dependents() == {"a": ["b", "c"], "b": ["c"], "c": []}
