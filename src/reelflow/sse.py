"""Server-sent events (`text/event-stream`) decoded incrementally, as the HTTP client reads them."""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Mapping
from typing import Any

from .states import TERMINAL_EXECUTION

_NEWLINE = re.compile(r"\r\n|\r|\n")


class SSEDecoder:
    """Bytes of a `text/event-stream` in, events out (the data of each, parsed as JSON)."""

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self.last_id: str | None = None
        self.retry_s: float | None = None

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        self._buf += self._text.decode(chunk)
        out: list[dict[str, Any]] = []
        while (m := _NEWLINE.search(self._buf)) is not None:
            if m.group() == "\r" and m.end() == len(self._buf):
                break  # maybe the first half of a \r\n
            line, self._buf = self._buf[: m.start()], self._buf[m.end() :]
            event = self._line(line)
            if event is not None:
                out.append(event)
        return out

    def _line(self, line: str) -> dict[str, Any] | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry_s = int(value) / 1000
        return None

    def _dispatch(self) -> dict[str, Any] | None:
        if self._id is not None:
            self.last_id = self._id
        data, event = "\n".join(self._data), self._event
        self._data, self._event = [], ""
        if not data:
            return None
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = data
        if isinstance(parsed, dict) and "type" in parsed:
            return parsed
        seq = int(self.last_id) if self.last_id and self.last_id.isdigit() else self.last_id
        return {"seq": seq, "type": event or "message", "job": None, "data": parsed, "created_at": None}


def is_terminal_event(event: Mapping[str, Any]) -> bool:
    """`execution.succeeded`, `execution.failed` or `execution.canceled`: the stream ends after it."""
    kind = str(event.get("type") or "")
    return kind.startswith("execution.") and kind.removeprefix("execution.") in TERMINAL_EXECUTION
