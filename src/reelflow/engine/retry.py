"""Backoff with full jitter for transient failures."""

from __future__ import annotations

import random

BASE_DELAY_S = 1.0
MAX_DELAY_S = 300.0


def backoff_delay(attempt: int, *, base: float = BASE_DELAY_S, cap: float = MAX_DELAY_S,
                  retry_after: float | None = None, rng: random.Random | None = None) -> float:
    """Seconds to wait before the next attempt after `attempt` failed (1-based).

    Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]. A provider's Retry-After is a floor:
    we never come back sooner than it asked.
    """
    r = rng or random
    ceiling = min(cap, base * (2 ** max(attempt - 1, 0)))
    delay = r.uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
