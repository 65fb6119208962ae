"""reelflow: run AI video pipelines on a durable queue. The public SDK names.

The names are loaded on first use (PEP 562 `__getattr__`): `import reelflow`, and so the `reelflow` command's
start-up, stays cheap and loads neither httpx, the engine, the API nor the media helpers until they are needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import (
        APIConnectionError,
        APIError,
        AsyncClient,
        BadRequest,
        Client,
        ConflictError,
        NotFoundError,
        PayloadTooLarge,
        PlanRejected,
        RateLimited,
        ServerError,
        Unauthorized,
        UsageLimitExceeded,
    )
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
        run_model,
        thumbnail,
        transcode,
        transcribe,
        video_model,
    )
    from .webhooks import verify_webhook

__all__ = [
    "APIConnectionError",
    "APIError",
    "AsyncClient",
    "AsyncExecution",
    "BadRequest",
    "Client",
    "Composition",
    "ConflictError",
    "Execution",
    "Model",
    "NotFoundError",
    "PayloadTooLarge",
    "PlanRejected",
    "RateLimited",
    "ServerError",
    "Step",
    "Unauthorized",
    "UsageLimitExceeded",
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
    "run_model",
    "thumbnail",
    "transcode",
    "transcribe",
    "verify_webhook",
    "video_model",
]
__version__ = "0.1.0"

_CLIENT_NAMES = (
    "APIConnectionError",
    "APIError",
    "AsyncClient",
    "BadRequest",
    "Client",
    "ConflictError",
    "NotFoundError",
    "PayloadTooLarge",
    "PlanRejected",
    "RateLimited",
    "ServerError",
    "Unauthorized",
    "UsageLimitExceeded",
)
_HOME: dict[str, str] = {name: ".client_errors" for name in _CLIENT_NAMES}
_HOME.update(Client=".client", AsyncClient=".client")
_HOME["verify_webhook"] = ".webhooks"
_HOME.update({name: ".sdk" for name in __all__ if name not in _HOME})


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first use, then keep it here so the next lookup is plain."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
