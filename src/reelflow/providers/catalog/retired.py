"""Models a provider has shut down: refused at plan validation, in the worker and in the adapter, with a
message that says when and names what the catalog offers instead."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Retirement:
    """Every model id starting with `prefix` is gone since `since`; `alternatives` are catalogued model ids."""

    prefix: str
    what: str
    since: str
    alternatives: tuple[str, ...]

    def message(self, model_id: str) -> str:
        return (
            f"model '{model_id}' is retired: {self.what} on {self.since}; "
            f"use another video model, e.g. {', '.join(self.alternatives)}"
        )


RETIRED: tuple[Retirement, ...] = (
    Retirement(
        prefix="openai/sora",
        what="OpenAI shut the Videos API and the Sora 2 models down",
        since="2026-09-24",
        alternatives=(
            "google/veo-3.1-fast-generate-preview",
            "replicate/google/veo-3.1",
            "fal/fal-ai/kling-video/v2.5-turbo/pro/image-to-video",
            "fal/bytedance/seedance-2.0/image-to-video",
        ),
    ),
)
"""What is retired, by model-id prefix (a pinned version or snapshot of the model is retired too)."""


def retirement(model_id: str | None) -> Retirement | None:
    """The retirement that covers this model id, or None for a model still offered."""
    if not model_id:
        return None
    for r in RETIRED:  # a plain loop: the worker asks for every job it runs (a generator cost more than the test)
        if model_id.startswith(r.prefix):
            return r
    return None


def retired_message(model_id: str | None) -> str | None:
    """Why this model id is refused (None when it is not retired)."""
    found = retirement(model_id)
    return found.message(model_id) if found is not None and model_id else None
