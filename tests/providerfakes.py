"""Fixtures that start a fake Replicate or fal server for a test, with the environment pointing the providers
at it, and a quickly polling adapter to a fake Replicate.

    fake = replicate_fixture(latency_s=0.1, queue_s=0.02)  # in a test module: a fixture named `fake`
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fakes.fal import FakeFal
from fakes.replicate import FakeReplicate
from reelflow.providers.replicate import ReplicateProvider


def replicate_fixture(**knobs: Any) -> Any:
    """A fixture: a `FakeReplicate(**knobs)` running for the test, `REPLICATE_API_TOKEN` and
    `REELFLOW_REPLICATE_BASE_URL` set to it."""

    @pytest.fixture
    def fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeReplicate]:
        with FakeReplicate(**knobs) as fake:
            monkeypatch.setenv("REPLICATE_API_TOKEN", fake.token)
            monkeypatch.setenv("REELFLOW_REPLICATE_BASE_URL", fake.base_url)
            yield fake

    return fixture


def fal_fixture(**knobs: Any) -> Any:
    """A fixture: a `FakeFal(**knobs)` running for the test, `FAL_KEY` and `REELFLOW_FAL_BASE_URL` set to it."""

    @pytest.fixture
    def fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeFal]:
        with FakeFal(**knobs) as fal:
            monkeypatch.setenv("FAL_KEY", fal.key)
            monkeypatch.setenv("REELFLOW_FAL_BASE_URL", fal.base_url)
            yield fal

    return fixture


def replicate_adapter(fake: FakeReplicate, poll_initial_s: float = 0.05, poll_max_s: float = 0.1) -> ReplicateProvider:
    return ReplicateProvider(fake.token, fake.base_url, poll_initial_s=poll_initial_s, poll_max_s=poll_max_s)
