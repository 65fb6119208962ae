"""`reelflow serve`: the API under uvicorn, with what uvicorn's HTTP/1.1 protocol leaves out.

uvicorn 0.54 (h11) has no deadline for receiving a request: a client that sends its headers or its body
one byte at a time holds a connection for as long as it likes (its keep-alive timer restarts on every
byte), and connections beyond `limit_concurrency` are accepted and kept until they send a request.
`GuardedH11Protocol` adds both:

- a read deadline: from the moment a connection opens (or its previous response ends), the client has
  REELFLOW_HTTP_READ_TIMEOUT_S to send a whole request, headers and body; a slower one is answered 408
  when no answer has started yet, and disconnected;
- a bound on open connections per process (REELFLOW_HTTP_MAX_CONNECTIONS): one more is answered 503
  and closed at once;
- a request it cannot read (malformed, or a head growing past MAX_HEAD_BYTES) is answered with
  problem+json, 400, 414 or 431, instead of uvicorn's plain-text 400. The connection is then closed
  gracefully: what the client still sends is read and dropped until it closes (at most LINGER_S), so
  the client reads the answer instead of a reset.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from http import HTTPStatus
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..config import Settings
from .problems import MAX_HEAD_BYTES, PROBLEM, Problem, head_too_big, problem_body

log = logging.getLogger("reelflow.api")

_REQUEST_READ = frozenset({h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.SWITCHED_PROTOCOL})
"""The client's h11 states once a whole request (headers and body) has arrived."""
TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_BUSY_TEXT = b"too many open connections\n"
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\nretry-after: 5\r\nconnection: close\r\n\r\n%s" % (len(_BUSY_TEXT), _BUSY_TEXT)
)
LINGER_S = 2.0
"""How long a connection refused for a bad request is still read (and dropped) before it is closed."""


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for reading each request and a bound on open connections.

    Make a configured subclass with `guarded_protocol`."""

    read_timeout_s: ClassVar[float] = 30.0
    max_connections: ClassVar[int | None] = None
    _last_refusal_log: ClassVar[float] = 0.0

    _deadline: asyncio.TimerHandle | None = None
    _lingering: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            self._refuse(transport)
            return
        self._arm()

    def _refuse(self, transport: asyncio.Transport) -> None:
        now = time.monotonic()
        cls = type(self)
        if now - cls._last_refusal_log >= 60:  # a flood is one warning a minute, not one per connection
            cls._last_refusal_log = now
            log.warning(
                "refusing connections: %d open, the most this process accepts (REELFLOW_HTTP_MAX_CONNECTIONS)",
                self.max_connections,
            )
        transport.write(BUSY)
        transport.close()

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:
            return  # the rest of a refused request: dropped
        super().data_received(data)
        if self.conn.their_state in _REQUEST_READ:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state not in _REQUEST_READ:
            self._arm()  # the next request (or the rest of this one's body) must come within the deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """Answer a request h11 could not read (uvicorn calls this) with problem+json, then close gracefully."""
        pending, _ = self.conn.trailing_data
        refusal = None
        if len(pending) > MAX_HEAD_BYTES:  # h11 gave up waiting for the end of the head
            line_end = pending.find(b"\n")
            refusal = head_too_big(len(pending) if line_end < 0 else line_end, len(pending))
        if refusal is None:
            refusal = Problem(400, "malformed HTTP request")
        body = json.dumps(problem_body(refusal), separators=(",", ":")).encode()
        headers = [
            (b"content-type", PROBLEM.encode()),
            (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"),
        ]
        head = h11.Response(status_code=refusal.status, headers=headers, reason=HTTPStatus(refusal.status).phrase)
        self._disarm()
        try:
            for event in (head, h11.Data(data=body)):
                self.transport.write(self.conn.send(event) or b"")
        except h11.LocalProtocolError:  # an answer had already started on this connection: nothing more can be said
            self.transport.close()
            return
        # Closing now, with the client's bytes still arriving, would reset the connection, and the client could
        # lose the answer; so say we are done writing and drop what comes until the client closes.
        self._lingering = self.loop.call_later(LINGER_S, self.transport.close)
        if self.transport.can_write_eof():
            self.transport.write_eof()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.read_timeout_s, self._read_timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _read_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.conn.their_state in _REQUEST_READ:
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.info("closed the connection of %s: no whole request within %g s", client, self.read_timeout_s)
        if self.conn.their_state is h11.IDLE or (self.cycle is not None and not self.cycle.response_started):
            self.transport.write(TIMED_OUT)  # no answer under way: say why before closing
        self.transport.close()


def guarded_protocol(settings: Settings) -> type[GuardedH11Protocol]:
    """A GuardedH11Protocol class with the settings' read deadline and connection bound."""
    attrs: dict[str, Any] = {
        "read_timeout_s": settings.http_read_timeout_s,
        "max_connections": settings.http_max_connections,
    }
    return type("ReelflowH11Protocol", (GuardedH11Protocol,), attrs)


def server_config(app: Any, settings: Settings, *, host: str, port: int, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration `reelflow serve` runs the API with."""
    options.setdefault("h11_max_incomplete_event_size", MAX_HEAD_BYTES)
    return uvicorn.Config(app, host=host, port=port, http=guarded_protocol(settings), **options)
