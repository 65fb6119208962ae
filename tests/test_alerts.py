"""deploy/alerts.yml: well-formed Prometheus alerting rules that only name metrics reelflow really exposes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from apiserver import ApiServer, server_settings

ALERTS = Path(__file__).resolve().parent.parent / "deploy" / "alerts.yml"

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    "inf", "nan",
}  # fmt: skip
"""PromQL keywords that look like identifiers (functions and aggregations are told apart by their "(")."""
SUFFIXES = ("_bucket", "_sum", "_count", "_total")


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert isinstance(doc, dict) and isinstance(doc.get("groups"), list) and doc["groups"]
    found: list[dict[str, Any]] = []
    for group in doc["groups"]:
        assert isinstance(group.get("name"), str) and group["name"]
        assert isinstance(group.get("rules"), list) and group["rules"], group["name"]
        found += group["rules"]
    return found


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> tuple[set[str], set[str]]:
    """Family names and sample names of a real `GET /metrics` (an API process with its database)."""
    settings = server_settings(tmp_path_factory.mktemp("alerts"))
    with ApiServer(settings, workers=0) as api, api.client() as http:
        response = http.get("/metrics")
    assert response.status_code == 200
    families = list(text_string_to_metric_families(response.text))
    return {f.name for f in families}, {s.name for f in families for s in f.samples}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers left once strings, label matchers, range and
    grouping clauses, function calls and keywords are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = m.group()
        rest = text[m.end() :].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_WORDS:
            continue  # a function, an aggregation, a keyword
        names.add(word)
    return names


def test_metric_names_are_read_from_expressions() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le) (rate(x_seconds_bucket{job="a"}[5m]))) > 300'
        " and on (provider) sum without (instance) (y_total) unless z"
    )
    assert metric_names(expr) == {"x_seconds_bucket", "y_total", "z"}


def test_every_rule_is_complete(rules: list[dict[str, Any]]) -> None:
    names = [r.get("alert") for r in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in rules:
        name = rule.get("alert")
        assert isinstance(name, str) and re.fullmatch(r"[A-Z][A-Za-z0-9]+", name), name
        assert isinstance(rule.get("expr"), str) and rule["expr"].strip(), name
        assert isinstance(rule.get("for"), str) and re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule.get("labels", {}).get("severity") in ("warning", "critical"), name
        annotations = rule.get("annotations", {})
        for key in ("summary", "description"):
            assert isinstance(annotations.get(key), str) and annotations[key].strip(), (name, key)
        assert rule["expr"].count("(") == rule["expr"].count(")"), name
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name


def test_the_conditions_asked_for_are_covered(rules: list[dict[str, Any]]) -> None:
    def one(pattern: str) -> dict[str, Any]:
        hits = [r for r in rules if re.search(pattern, " ".join(r["expr"].split()))]
        assert len(hits) == 1, pattern
        return hits[0]

    assert one(r"reelflow_queue_depth\) > 1000")
    assert one(r'reelflow_executions_total\{status="succeeded"\}.* < 0\.9\b')
    slow = one(r"histogram_quantile\(0\.95, .*reelflow_execution_duration_seconds_bucket.*> 300")
    assert "by (le)" in slow["expr"]
    assert "by (provider)" in one(r"reelflow_provider_requests_total.* < 0\.95")["expr"]
    assert one(r'reelflow_webhook_deliveries_total\{outcome=~"failed\|gave_up"\}')
    assert one(r"reelflow_provider_circuit_state\) == 2")["for"] == "5m"


def test_every_metric_an_alert_reads_is_exposed(
    rules: list[dict[str, Any]], exposed: tuple[set[str], set[str]]
) -> None:
    families, samples = exposed
    read = {name for rule in rules for name in metric_names(rule["expr"])}
    assert {
        "reelflow_queue_depth", "reelflow_executions_total", "reelflow_execution_duration_seconds_bucket",
        "reelflow_provider_requests_total", "reelflow_webhook_deliveries_total", "reelflow_provider_circuit_state",
    } <= read  # fmt: skip
    for name in sorted(read):
        base = next((name.removesuffix(s) for s in SUFFIXES if name.endswith(s)), name)
        assert name in samples or base in families, f"{name} is not exposed by /metrics"
