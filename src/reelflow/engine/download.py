"""Copying a provider's output into our hands: moved to `reelflow.net` (with the egress guard its client
connects through); these names stay importable from here."""

from __future__ import annotations

from ..net import DOWNLOAD_TIMEOUT_S, MAX_OUTPUT_BYTES, MEDIA_TYPES, SUFFIX_FOR, fetch_output, stream_to_file

__all__ = ["DOWNLOAD_TIMEOUT_S", "MAX_OUTPUT_BYTES", "MEDIA_TYPES", "SUFFIX_FOR", "fetch_output", "stream_to_file"]
