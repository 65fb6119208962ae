"""reelflow: run AI video pipelines on a durable queue. The public SDK names."""

from .sdk import (
    AsyncExecution,
    Composition,
    Execution,
    Model,
    Step,
    audio_model,
    captions,
    compose,
    concat,
    generate_audio,
    generate_image,
    generate_video,
    image_model,
    merge,
    overlay,
    video_model,
)

__all__ = [
    "AsyncExecution",
    "Composition",
    "Execution",
    "Model",
    "Step",
    "audio_model",
    "captions",
    "compose",
    "concat",
    "generate_audio",
    "generate_image",
    "generate_video",
    "image_model",
    "merge",
    "overlay",
    "video_model",
]
__version__ = "0.1.0"
