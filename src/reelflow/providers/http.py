"""Small helpers every HTTP adapter shares."""

from __future__ import annotations

import asyncio
import email.utils
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import httpx

from .. import metrics
from ..net import EgressPolicy, guarded_client, pooled_transport, quiet_cookies
from .catalog import Catalog, default_catalog
from .info import ProviderInfo

MAX_RETRY_AFTER_S = 3600.0
MAX_HELD_RETRY_S = 30.0
"""A throttled request is only sent again in place when the provider asks for at most this long a pause."""


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the provider asks us to wait (`Retry-After` as seconds or an HTTP date), capped at an hour."""
    header = response.headers.get("retry-after")
    if not header:
        return None
    try:
        seconds = float(header)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return max(0.0, min(seconds, MAX_RETRY_AFTER_S))


def not_sent(exc: BaseException) -> bool:
    """True when a transport failure proves the request never reached the provider (no connection was
    made, or none was free): a create that failed so cannot have started paid work. A read timeout, a reset
    or a write failure may have come after the provider took it."""
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.UnsupportedProtocol)


class RateGate:
    """Slows one provider down for every job after it answers 429, not just for the job that saw it.

    Each request takes a slot. Normally slots are free; after a 429 the gate (1) holds every request
    until the provider's Retry-After has passed and (2) spaces requests out at half the rate that
    drew the 429, then lets the spacing shrink a little with every success until it is gone. Several
    429s landing together (requests already in flight) count as one. Per process; the limits issue
    shares the budget across workers.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.interval = 0.0
        """Seconds between two requests' starts; 0 while unthrottled."""
        self.hold_until = 0.0
        self._next_slot = 0.0
        self._last_cut = -1e9
        self._recent: deque[float] = deque()
        self.throttled = 0
        """How many 429s this gate has seen."""
        self.shared: Any = None
        """The store-wide request bucket (an object with `async acquire()`), when the provider has a
        requests_per_minute limit; set by the worker."""
        self.shared_creates: Any = None
        """The store-wide bucket of requests that start paid work, when the provider has a creates_per_minute
        limit (set by the worker); those requests then spend it instead of `shared`."""
        self.report: Callable[[float | None], None] | None = None
        """Called with each 429's Retry-After so other workers slow down too; set by the worker."""

    def _rate(self, now: float) -> float:
        """Requests started over the last second."""
        while self._recent and self._recent[0] < now - 1.0:
            self._recent.popleft()
        return float(len(self._recent))

    async def acquire(self, *, create: bool = False) -> None:
        """Wait for this request's slot (`create`: the request starts paid work)."""
        now = self._clock()
        slot = max(now, self.hold_until, self._next_slot if self.interval else now)
        if self.interval:
            self._next_slot = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)
        bucket = self.shared_creates if create and self.shared_creates is not None else self.shared
        if bucket is not None:
            await bucket.acquire()
        now = self._clock()
        self._recent.append(now)
        self._rate(now)

    def on_throttled(self, retry_after_s: float | None) -> None:
        """A 429 came back: hold everyone for Retry-After (1 s when not given) and halve the pace."""
        now = self._clock()
        self.throttled += 1
        self.hold_until = max(self.hold_until, now + (retry_after_s if retry_after_s is not None else 1.0))
        if self.report is not None:
            self.report(retry_after_s)
        self.slow_down()

    def slow_down(self) -> None:
        """Halve the pace (at most once a second: answers to requests sent before a cut are not news)."""
        now = self._clock()
        if now - self._last_cut < 1.0:
            return
        self._last_cut = now
        rate = max(self._rate(now), 1.0 / self.interval if self.interval else 0.0, 1.0)
        self.interval = min(2.0 / rate, 10.0)
        self._next_slot = max(self._next_slot, self.hold_until)

    def on_success(self) -> None:
        """An answer that was not a 429: let the pace recover slowly (about halving the spacing per 70 calls)."""
        if self.interval:
            self.interval *= 0.99
            if self.interval < 0.002:
                self.interval = 0.0


class HttpAdapter:
    """The plumbing every HTTP provider shares: key and base URL from the environment, one pooled
    client, the provider-wide rate gate, and transport failures classified as transient.

    Requests only ever go to `base_url + path`: URLs a provider names in its answers are never
    followed, so the key cannot leak to another host.
    """

    info: ClassVar[ProviderInfo | None] = None
    """The adapter's description; a subclass that sets it gets `name`, `key_env`, `default_limits` and `paid`
    from it."""
    name: str = ""
    paid: bool = True
    """Work here costs money: an attempt whose answer was lost is reconciled before it is paid again."""
    default_base_url: str = ""
    key_env: str = ""
    timeout = httpx.Timeout(connect=10.0, read=60.0, write=30.0, pool=30.0)
    max_in_flight: int = 16
    """Requests to this provider under way at once in this process. More wait here, in a FIFO semaphore:
    httpcore's pool re-scans every queued request on each change, so hundreds queued there cost
    quadratic CPU (it was most of a worker's time with 1,000 jobs in flight)."""
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    default_limits: ClassVar[dict[str, float]] = {}
    """The provider's documented limits (`max_concurrent`, `requests_per_minute`, ...), the defaults that the
    limits file (REELFLOW_LIMITS_FILE) overrides."""
    catalog: Catalog | None = None
    """The catalog whose models this adapter runs (set by the worker's provider table); None: the default."""

    def model_catalog(self) -> Catalog:
        """The catalog to read model specs and input maps from."""
        return self.catalog if self.catalog is not None else default_catalog()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        info = cls.__dict__.get("info")
        if isinstance(info, ProviderInfo):
            cls.name = info.name
            cls.key_env = info.key_env or ""
            cls.default_limits = dict(info.default_limits or {})
            cls.paid = info.paid

    def __init__(
        self,
        key: str | None = None,
        base_url: str | None = None,
        *,
        client: httpx.AsyncClient | None = None,
        poll_initial_s: float = 1.0,
        poll_max_s: float = 15.0,
        callback_poll_s: float = 60.0,
    ) -> None:
        self._key = key
        self._base_url = base_url
        self._client = client
        self._owns_client = client is None
        self.poll_initial_s = poll_initial_s
        self.poll_max_s = poll_max_s
        self.callback_poll_s = callback_poll_s
        """Polling interval while a callback is expected (polling only covers a lost callback then)."""
        self.gate = RateGate()
        self._slots: asyncio.Semaphore | None = None
        self.egress: EgressPolicy | None = None
        """How URLs other than the provider's API are judged (inputs it downloads, a JWKS): set by the worker
        to its own policy; unset, the environment's (REELFLOW_ALLOWED_HOSTS, REELFLOW_ALLOW_PRIVATE_URLS)."""
        self._guarded: dict[EgressPolicy, httpx.AsyncClient] = {}

    @property
    def slots(self) -> asyncio.Semaphore:
        """The in-flight limit, made on first use (inside the event loop that uses it)."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_in_flight)
        return self._slots

    @property
    def base_url_env(self) -> str:
        return f"REELFLOW_{self.name.upper()}_BASE_URL"

    @property
    def base_url(self) -> str:
        return (self._base_url or os.environ.get(self.base_url_env) or self.default_base_url).rstrip("/")

    @property
    def key(self) -> str:
        key = self._key if self._key is not None else os.environ.get(self.key_env)
        if not key:
            from .base import PermanentError

            raise PermanentError(f"{self.key_env} is not set")
        return key

    def poll_schedule(self, task: Any) -> PollSchedule:
        """The polling plan for one wait: fast and growing, or slow when a callback will come."""
        return PollSchedule(
            self.poll_initial_s,
            self.poll_max_s,
            callback_s=self.callback_poll_s if getattr(task, "callback_url", None) else None,
        )

    def http(self) -> httpx.AsyncClient:
        """The pooled client, made on first use (and reused by every job of this provider)."""
        if self._client is None:
            transport = pooled_transport(limits=self.limits)  # its sockets looked up once per connection
            self._client = quiet_cookies(
                httpx.AsyncClient(timeout=self.timeout, transport=transport, follow_redirects=False)
            )
        return self._client

    def egress_policy(self, *trusted: str | None) -> EgressPolicy:
        """The egress policy for this provider's own fetches; its base URL's host:port (and `trusted`'s,
        URLs the operator configured) are allowed too."""
        policy = self.egress if self.egress is not None else EgressPolicy.from_environment()
        return policy.trusting(self.base_url, *trusted)

    def guarded_http(self, policy: EgressPolicy, **kwargs: Any) -> httpx.AsyncClient:
        """A pooled client for URLs that are not the provider's API, connecting through the egress guard
        (redirects followed at most 3 hops, each judged again); no credential is ever sent on it."""
        client = self._guarded.get(policy)
        if client is None:
            client = self._guarded[policy] = guarded_client(policy, **kwargs)
        return client

    async def aclose(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.aclose()
            self._client = None
        guarded, self._guarded = list(self._guarded.values()), {}
        for client in guarded:
            await client.aclose()

    async def send(
        self,
        method: str,
        path: str,
        *,
        doing: str,
        headers: Mapping[str, str] | None = None,
        retry_throttled: int = 0,
        create: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request to `{base}{path}` through the rate gate. Transport failures raise TransientError;
        HTTP errors come back as the response for the adapter to classify (a 429 also slows the gate).

        `retry_throttled`: how many times a 429 is sent again here, after the gate's hold, before it is
        returned. Only for requests a 429 proves were not acted on (a refused create started nothing),
        so a brief throttle does not cost the job one of its attempts.

        `create`: the request starts paid work (a prediction's create); it spends the provider's
        creates_per_minute bucket when there is one, else its requests_per_minute bucket like any other."""
        from .base import TransientError

        send_headers = {**self.auth_headers(), **(headers or {})}
        for tries_left in range(retry_throttled, -1, -1):
            await self.gate.acquire(create=create)
            try:
                async with self.slots:
                    with metrics.provider_call(self.name) as call:  # counted by outcome, timed
                        response = await self.http().request(
                            method, self.base_url + path, headers=send_headers, follow_redirects=False, **kwargs
                        )
                        call.status = response.status_code
            except httpx.TimeoutException as exc:
                raise TransientError(
                    f"{self.name}: {doing} timed out ({type(exc).__name__})", not_sent=not_sent(exc)
                ) from None
            except httpx.HTTPError as exc:
                raise TransientError(
                    f"{self.name}: {doing} failed: {type(exc).__name__}: {exc}", not_sent=not_sent(exc)
                ) from None
            if response.status_code != 429:
                self.gate.on_success()
                return response
            wait = retry_after(response)
            self.gate.on_throttled(wait)
            if tries_left == 0 or (wait is not None and wait > MAX_HELD_RETRY_S):
                return response
            await response.aclose()
        raise AssertionError("unreachable")

    def auth_headers(self) -> dict[str, str]:
        """The provider's authentication header(s); adapters override."""
        return {"Authorization": f"Bearer {self.key}"}


class PollSchedule:
    """When to look at remote work next.

    Without percentages the interval starts at `initial` and doubles to `maximum`. When the provider
    reports percentages, the finish is estimated from the rate of progress and the next look is put
    just after it (never sooner than `initial`, never later than `maximum`), so a 20 s job is seen
    done about a second after it ends with a handful of requests. While a callback is expected,
    polling only guards against a lost callback and looks every `callback_s`. A provider's own hint
    (Retry-After, `openai-poll-after-ms`) is a floor.
    """

    def __init__(
        self,
        initial: float = 1.0,
        maximum: float = 15.0,
        *,
        callback_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.initial = initial
        self.maximum = max(initial, maximum)
        self.callback_s = callback_s
        self._clock = clock
        self._start = clock()
        self._delay = initial
        self._samples: list[tuple[float, float]] = []

    def eta(self) -> float | None:
        """Seconds until the work should end, judged from its percentages; None without them."""
        if not self._samples:
            return None
        t2, p2 = self._samples[-1]
        if p2 >= 100.0:
            return 0.0
        earlier = [s for s in self._samples if s[1] < p2]
        if not earlier:  # one reading says nothing of the pace (the work may have queued before it)
            return None
        t1, p1 = earlier[-1]
        rate = (p2 - p1) / max(t2 - t1, 1e-3)
        return (100.0 - p2) / rate if rate > 0 else None

    def next_delay(self, *, percent: float | None = None, hint: float | None = None) -> float:
        """Seconds to wait before the next look, after a look that found the work unfinished."""
        now = self._clock() - self._start
        if percent is not None:
            self._samples.append((now, max(0.0, min(100.0, percent))))
            del self._samples[:-8]
        if self.callback_s is not None:
            delay = self.callback_s
        else:
            eta = self.eta()
            if eta is not None:
                delay = min(self.maximum, max(self.initial, eta + 0.05))
            else:
                delay = self._delay
                self._delay = min(self._delay * 2, self.maximum)
        return max(delay, hint or 0.0)
