"""The egress guard: every request to a URL that someone else chose goes out through here.

Provider outputs, inputs fetched for providers that read files, webhook deliveries and fal's JWKS are
fetched with a `guarded_client`. Its connections are made by `EgressGuard`, an httpcore network backend
that resolves the host itself (once), refuses unless every address it resolves to is public, and then
connects to the address it judged, never to the name again: a DNS answer that changes between the check
and the connect (rebinding) cannot reach anything. TLS still checks the certificate against the URL's
host name (httpcore starts TLS with the request's host, not with the address we connected to). Redirects
are followed at most `MAX_REDIRECTS` hops, and each hop connects through the guard again. The client
ignores proxy variables (`trust_env=False`), so no proxy can take the connection past the guard.

Not public: loopback, private, link-local (169.254.169.254 included), shared (100.64.0.0/10), multicast,
reserved and unspecified addresses, and IPv6 addresses embedding one (IPv4-mapped, 6to4, NAT64, Teredo),
however they are spelled (`2130706433`, `0x7f.1`, `0177.1`, `127.1`, `[::ffff:127.0.0.1]`, `localhost`).
Allowed besides public addresses: the `host:port` of each provider's configured base URL, and the hosts
of `REELFLOW_ALLOWED_HOSTS` (`host` allows any port, `host:port` that port only). `REELFLOW_ALLOW_PRIVATE_URLS=1`
turns the guard off (development). A refusal is an `UnsafeDestination`.

Also here: the streamed, size- and time-limited download of a URL to a file (`fetch_output`).

This module is below the providers and the engine: it imports neither (nor the API or the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import mimetypes
import os
import re
import select
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse, urlsplit

import httpcore
import httpx

from .errors import PermanentError, ReelflowError, TransientError

if TYPE_CHECKING:
    from .config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""`(host, port) -> addresses` (as strings); OSError when the name does not resolve."""

ALLOWED_SCHEMES = ("http", "https")
DNS_TIMEOUT_S = 10.0
MAX_REDIRECTS = 3
ALLOW_PRIVATE_ENV = "REELFLOW_ALLOW_PRIVATE_URLS"
ALLOWED_HOSTS_ENV = "REELFLOW_ALLOWED_HOSTS"
SHOWN_URL_CHARS = 200


def shorten(url: str, limit: int = SHOWN_URL_CHARS) -> str:
    """A URL for an error message: as it is, or its first `limit` characters and an ellipsis."""
    return url if len(url) <= limit else url[:limit] + "…"


def refusal(url: str) -> str:
    """The whole of what a refused fetch tells: nothing about what is (or is not) behind the address."""
    return f"refused: {shorten(url)} is not a public address"


# ---------------------------------------------------------------------------------------- refusals
class UnsafeDestination(ReelflowError):
    """A URL reelflow refuses to call: not http(s), no host, or a private, loopback, link-local… address.

    `reason` says why without the URL; `url` is the URL refused, when known (the guard, deep inside a
    connection, knows only the host; the client adds the URL of the request on its way out)."""

    _template = "{url!r} is not allowed: {reason}"

    def __init__(self, reason: str, url: str | None = None) -> None:
        self.reason = reason
        self.url = url
        super().__init__(self._template.format(url=url, reason=reason) if url is not None else reason)

    def at(self, url: str) -> UnsafeDestination:
        """The same refusal, naming the URL refused."""
        return type(self)(self.reason, url)


class UnresolvableDestination(UnsafeDestination):
    """The URL's host name did not resolve. Possibly temporary: callers retry these."""

    _template = "cannot resolve the host of {url!r}: {reason}"


_ALLOW_HINT = "set REELFLOW_ALLOW_PRIVATE_URLS=1 to allow private destinations"
_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
"""RFC 8215 local-use translation: where the IPv4 address sits depends on the site's prefix length."""


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, 6to4, NAT64, Teredo's client), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def address_problem(ip: IPAddress) -> str | None:
    """Why an address must not be called ("a loopback address", …), or None for a public one."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None and (problem := address_problem(embedded)) is not None:
            return f"{problem} ({embedded} embedded in IPv6)"
        if ip in _LOCAL_NAT64:
            return "a local-use NAT64 address"
    kinds = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("non-public", not ip.is_global),
    )
    for kind, matches in kinds:
        if matches:
            return f"{_article(kind)} {kind} address"
    return None


def _literal_ip(host: str) -> IPAddress | None:
    """The address a host names literally, including the legacy IPv4 forms resolvers accept (`127.1`,
    `2130706433`, `0x7f.1`, `0177.1`) and a trailing dot (`127.0.0.1.`)."""
    host = unquote(host)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    name = host.lower()
    name = name[:-1] if name.endswith(".") else name
    if name and _NUMERIC_HOST.fullmatch(name):
        with contextlib.suppress(OSError):
            return ipaddress.IPv4Address(socket.inet_aton(name))
    return None


def _is_localhost(host: str) -> bool:
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def _split_url(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL, or UnsafeDestination saying what is wrong with it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeDestination(f"{url!r} is not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        shown = repr(scheme) if scheme else "(none)"
        raise UnsafeDestination(f"scheme {shown} is not http or https", url)
    host = parts.hostname
    if not host:
        raise UnsafeDestination("the URL has no host", url)
    return host, port or (443 if scheme == "https" else 80)


def _literal_problem(host: str) -> str | None:
    """Why a host is refused without any DNS (a literal address that is not public, a localhost name)."""
    ip = _literal_ip(host)
    if ip is not None:
        problem = address_problem(ip)
        return f"{ip} is {problem} ({_ALLOW_HINT})" if problem is not None else None
    if _is_localhost(host):
        return f"{host} is a loopback host name ({_ALLOW_HINT})"
    return None


# ---------------------------------------------------------------------------------------- the policy
def _host_key(host: str) -> str:
    host = host.lower()
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


_ALLOWED_ENTRY = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[^\s:/\[\]@?#]+)(?::(?P<port>\d{1,5}))?")


def parse_allowed_hosts(text: str | None) -> frozenset[tuple[str, int | None]]:
    """`REELFLOW_ALLOWED_HOSTS`: a comma list of `host` (any port) or `host:port` (that port only); IPv6
    addresses in brackets. ValueError names the entry it cannot read."""
    allowed: set[tuple[str, int | None]] = set()
    for raw in (text or "").split(","):
        entry = raw.strip()
        if not entry:
            continue
        found = _ALLOWED_ENTRY.fullmatch(entry)
        if found is None:
            hint = " (write IPv6 addresses in brackets: [::1]:8080)" if entry.count(":") > 1 else ""
            raise ValueError(f"{entry!r} is not a host or host:port{hint}")
        port = int(found["port"]) if found["port"] is not None else None
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"{entry!r}: the port must be between 1 and 65535")
        host = _host_key(found["host"])
        if found["host"].startswith("[") and not isinstance(_literal_ip(host), ipaddress.IPv6Address):
            raise ValueError(f"{entry!r}: {found['host']} is not an IPv6 address")
        allowed.add((host, port))
    return frozenset(allowed)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class EgressPolicy:
    """Which destinations pass besides public addresses: `allowed` (host, port) pairs, a port of None
    allowing every port of the host; `allow_private` turns the guard off."""

    allow_private: bool = False
    allowed: frozenset[tuple[str, int | None]] = frozenset()

    def allows(self, host: str, port: int) -> bool:
        """True when `host:port` is allowed as named (matched exactly, case aside)."""
        if not self.allowed:
            return False
        key = _host_key(host)
        return (key, None) in self.allowed or (key, port) in self.allowed

    def trusting(self, *urls: str | None) -> EgressPolicy:
        """This policy, also allowing the `host:port` of each URL (a provider's configured base URL, a
        configured JWKS URL): an operator who points one at a private host trusts it."""
        extra: set[tuple[str, int | None]] = set()
        for url in urls:
            if not url:
                continue
            with contextlib.suppress(UnsafeDestination):
                host, port = _split_url(url)
                extra.add((_host_key(host), port))
        return self if extra <= self.allowed else replace(self, allowed=self.allowed | extra)

    @classmethod
    def from_settings(cls, settings: Settings, *, trusted: Iterable[str | None] = ()) -> EgressPolicy:
        """The settings' policy (REELFLOW_ALLOW_PRIVATE_URLS, REELFLOW_ALLOWED_HOSTS), trusting `trusted` too."""
        policy = cls(bool(settings.allow_private_urls), parse_allowed_hosts(getattr(settings, "allowed_hosts", "")))
        return policy.trusting(*trusted)

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, *, trusted: Iterable[str | None] = ()
    ) -> EgressPolicy:
        """The policy the environment sets, for code running without the settings (a provider used on
        its own); an unreadable REELFLOW_ALLOWED_HOSTS allows nothing extra (the settings refuse it at start)."""
        env = os.environ if environ is None else environ
        try:
            allowed = parse_allowed_hosts(env.get(ALLOWED_HOSTS_ENV))
        except ValueError:
            allowed = frozenset()
        return cls(_truthy(env.get(ALLOW_PRIVATE_ENV)), allowed).trusting(*trusted)


# ---------------------------------------------------------------------------------------- judging
async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for `host`, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def vet(
    host: str, port: int, policy: EgressPolicy, resolver: Resolver | None = None, *, timeout_s: float = DNS_TIMEOUT_S
) -> list[IPAddress] | None:
    """Judge one destination: None when it is allowed as named (the guard is off, or the host is
    allowed), else the addresses to connect to, every one of them public. Raises UnsafeDestination
    (without a URL), or UnresolvableDestination when the name did not resolve. One lookup at most."""
    if policy.allow_private or policy.allows(host, port):
        return None
    ip = _literal_ip(host)
    if ip is not None:
        if (problem := _literal_problem(host)) is not None:
            raise UnsafeDestination(problem)
        return [ip]
    try:
        async with asyncio.timeout(timeout_s):
            answers = await (resolver or system_resolver)(host, port)
    except UnicodeError:
        raise UnsafeDestination(f"{host!r} is not a valid host name") from None
    except (OSError, TimeoutError) as exc:
        if _is_localhost(host):
            raise UnsafeDestination(f"{host} is a loopback host name ({_ALLOW_HINT})") from None
        raise UnresolvableDestination(str(exc) or f"timed out after {timeout_s:g} s") from None
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            address = ipaddress.ip_address(answer)
        except ValueError:
            raise UnsafeDestination(f"{host} resolves to {answer!r}, not an address") from None
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnresolvableDestination("no address")
    for address in addresses:
        if (problem := address_problem(address)) is not None:
            raise UnsafeDestination(f"{host} resolves to {address}, {problem} ({_ALLOW_HINT})")
    return addresses


def check_url_syntax(url: str, *, allow_private: bool = False, policy: EgressPolicy | None = None) -> str | None:
    """Check without DNS (at submission, before a send): an error message, or None when the URL may be
    tried. Refuses what is not http(s) and, unless allowed, literal addresses that are not public and
    localhost names."""
    policy = policy or EgressPolicy()
    try:
        host, port = _split_url(url)
    except UnsafeDestination as exc:
        return str(exc)
    if allow_private or policy.allow_private or policy.allows(host, port):
        return None
    problem = _literal_problem(host)
    return str(UnsafeDestination(problem, url)) if problem is not None else None


async def check_destination(
    url: str, *, allow_private: bool = False, policy: EgressPolicy | None = None, resolver: Resolver | None = None
) -> None:
    """Raise UnsafeDestination unless `url` is http(s) with a host whose every address is public (or an
    allowed one). UnresolvableDestination (a subclass) means the name did not resolve, which may be
    temporary. A check ahead of time only: the connection itself is judged again by the guard."""
    host, port = _split_url(url)
    policy = policy or EgressPolicy()
    if allow_private:
        policy = replace(policy, allow_private=True)
    try:
        await vet(host, port, policy, resolver)
    except UnsafeDestination as exc:
        raise exc.at(url) from None


# ---------------------------------------------------------------------------------------- the guard
def _readable(sock: Any) -> bool:
    """Whether a pooled connection's socket has something to read (for an idle one: the server closed it)."""
    if sock is None:
        return True
    fd = sock.fileno()
    if fd == -1:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])


class _SocketStream(httpcore.AsyncNetworkStream):
    """A connection's stream that looks its socket up once. Each time httpcore's pool hands out a connection
    it asks every pooled connection whether its socket is readable; anyio answers by building the stream's
    whole attribute table, a getpeername() call included, every time. With 16 pooled connections that was
    about half the CPU of a request to a provider."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._socket: Any = stream.get_extra_info("socket")  # a socket.socket, or asyncio's TransportSocket

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _SocketStream(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "socket":
            return self._socket
        if info == "is_readable":
            return _readable(self._socket)
        return self._stream.get_extra_info(info)


class QuickNetwork(httpcore.AsyncNetworkBackend):
    """httpcore's default network (anyio) with each connection's socket looked up once (see _SocketStream)."""

    def __init__(self, network: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.network = network or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self.network.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return _SocketStream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _SocketStream(await self.network.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self.network.sleep(seconds)


POOL_SWEEP_S = 1.0
"""How often a LeanPool looks at every connection for an expired keep-alive or a close by the server (the one it
hands out is always looked at first)."""


class LeanPool(httpcore.AsyncConnectionPool):
    """httpcore's connection pool, with the bookkeeping it does on every request that starts or ends made cheap.

    httpcore walks all its connections then: it drops closed ones, closes expired ones (asking each idle one's
    socket whether the server closed it: a poll() call) and, while it holds more than `max_keepalive_connections`,
    closes idle ones, counting its connections once per idle connection (a list built each time: 16 idle
    connections cost 256 calls). It also hands a connection that is free but promised to a request that has not
    started on it yet to the next request too, which then fails to get it and asks again: a burst of requests
    went round that loop several times each. This pool counts once; looks at every connection's expiry only
    every POOL_SWEEP_S, and always at the connection it is about to hand out (so none that expired or that the
    server closed is ever used); and gives a request only a connection no other request was promised (HTTP/1.1:
    one request at a time on a connection). Otherwise requests get connections as in httpcore: a free one for
    their origin, else a new one while under `max_connections`, else a new one in place of an idle one. Closing
    nothing costs nothing (httpcore shields even an empty list from cancellation)."""

    _swept_at = 0.0

    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        closing: list[httpcore.AsyncConnectionInterface] = []
        kept: list[httpcore.AsyncConnectionInterface] = []
        now = time.monotonic()
        sweep = now - self._swept_at >= POOL_SWEEP_S
        if sweep:
            self._swept_at = now
        # Connections handed to a request that has not started on them yet look idle: they are neither closed as
        # surplus here nor handed to another request (httpcore 1.0.9 does both: encode/httpcore#1110, the churn
        # that encode/httpcore#1035 describes).
        assigned = {id(r.connection) for r in self._requests if r.connection is not None}
        promised = set() if self._http2 else assigned
        count = len(self._connections)  # connections still in the pool as the walk goes
        for connection in self._connections:
            if connection.is_closed():
                count -= 1
            elif (sweep and connection.has_expired()) or (
                connection.is_idle() and count > self._max_keepalive_connections and id(connection) not in assigned
            ):
                count -= 1
                closing.append(connection)
            else:
                kept.append(connection)
        self._connections = kept
        for pool_request in self._requests:
            if pool_request.connection is not None:
                continue
            origin = pool_request.request.url.origin
            chosen: httpcore.AsyncConnectionInterface | None = None
            idle: httpcore.AsyncConnectionInterface | None = None
            i = 0
            while i < len(kept):
                connection = kept[i]
                if (
                    id(connection) not in promised
                    and connection.can_handle_request(origin)
                    and connection.is_available()
                ):
                    if sweep or not connection.has_expired():
                        chosen = connection
                        break
                    del kept[i]  # expired, or closed by the server while idle
                    closing.append(connection)
                    continue
                if idle is None and id(connection) not in promised and connection.is_idle():
                    idle = connection
                i += 1
            if chosen is None:
                if len(kept) >= self._max_connections:  # `idle`: the first idle one (the walk went through)
                    if idle is None:
                        continue  # every connection is busy or promised: the request stays queued
                    kept.remove(idle)
                    closing.append(idle)
                chosen = self.create_connection(origin)
                kept.append(chosen)
            promised.add(id(chosen))
            pool_request.assign_to_connection(chosen)
        return closing

    async def _close_connections(self, closing: list[httpcore.AsyncConnectionInterface]) -> None:
        if closing:
            await super()._close_connections(closing)


def _set_network(transport: httpx.AsyncHTTPTransport, network: httpcore.AsyncNetworkBackend) -> None:
    """Make `transport`'s pool connect through `network` (before it has any connection), as a LeanPool."""
    pool = transport._pool
    if (
        type(pool) not in (httpcore.AsyncConnectionPool, LeanPool)
        or not hasattr(pool, "_network_backend")
        or not isinstance(getattr(pool, "_connections", None), list)
        or not isinstance(getattr(pool, "_requests", None), list)
    ):
        raise RuntimeError("this httpx/httpcore version does not take a network backend as reelflow expects")
    pool.__class__ = LeanPool
    pool._network_backend = network


class QuietCookies(httpx.Cookies):
    """httpx's cookie store, without its per-response work when the response sets no cookie: httpx wraps every
    response and its request for http.cookiejar (a urllib Request, an email Message of all headers) to find
    no Set-Cookie there, ~2% of the serve process's CPU in bench/providers.py. Cookies that are set are kept
    as before."""

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


def quiet_cookies(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """`client` with QuietCookies (its cookies copied over); returns it."""
    if not isinstance(getattr(client, "_cookies", None), httpx.Cookies):
        raise RuntimeError("this httpx version does not keep a client's cookies as reelflow expects")
    client._cookies = QuietCookies(client.cookies)
    return client


_CONTEXTS: dict[tuple[bool, str | None, str | None], ssl.SSLContext] = {}


def verifying_context(*, trust_env: bool = True) -> ssl.SSLContext:
    """httpx's default TLS context (`verify=True`), made once per process and shared by its clients. Each
    client made its own and loaded the CA bundle again: 60-130 ms of CPU, in the first job that used it.
    With `trust_env`, SSL_CERT_FILE / SSL_CERT_DIR are honoured as httpx does (a change makes a new one)."""
    key = (
        trust_env,
        os.environ.get("SSL_CERT_FILE") if trust_env else None,
        os.environ.get("SSL_CERT_DIR") if trust_env else None,
    )
    if (context := _CONTEXTS.get(key)) is None:
        context = _CONTEXTS[key] = httpx.create_ssl_context(verify=True, trust_env=trust_env)
    return context


def pooled_transport(*, limits: httpx.Limits, **kwargs: Any) -> httpx.AsyncHTTPTransport:
    """httpx's transport (keyword arguments as for `httpx.AsyncHTTPTransport`) on QuickNetwork: for clients
    that talk only to configured hosts (a provider's API); anything else uses `guarded_client`."""
    if kwargs.get("verify", True) is True and kwargs.get("cert") is None:
        kwargs["verify"] = verifying_context(trust_env=kwargs.get("trust_env", True))
    transport = httpx.AsyncHTTPTransport(limits=limits, **kwargs)
    _set_network(transport, QuickNetwork())
    return transport


class EgressGuard(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only where the policy allows: it judges the host's
    addresses (`vet`, one lookup) and connects to a judged address itself. `network` makes the real
    connections (tests record them); `resolver` answers the lookups (tests make DNS lie)."""

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        resolver: Resolver | None = None,
        network: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.network = network or QuickNetwork()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        dns_timeout = DNS_TIMEOUT_S if timeout is None else min(timeout, DNS_TIMEOUT_S)
        addresses = await vet(host, port, self.policy, self.resolver, timeout_s=dns_timeout)
        targets = [host] if addresses is None else [str(a) for a in addresses]
        failure: Exception | None = None
        for target in targets:
            try:
                return await self.network.connect_tcp(
                    target, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise UnsafeDestination("a unix socket is not a public address")

    async def sleep(self, seconds: float) -> None:
        await self.network.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with the guard as its network, naming the refused URL on the way out."""

    def __init__(self, guard: EgressGuard, **kwargs: Any) -> None:
        super().__init__(trust_env=False, **kwargs)
        _set_network(self, guard)  # before any connection exists: every one is made by the guard

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except UnsafeDestination as exc:
            raise exc.at(str(request.url)) from None


def guarded_client(
    egress: Settings | EgressPolicy | EgressGuard,
    *,
    follow_redirects: bool = True,
    max_redirects: int = MAX_REDIRECTS,
    limits: httpx.Limits | None = None,
    verify: ssl.SSLContext | bool = True,
    **kwargs: Any,
) -> httpx.AsyncClient:
    """An httpx client whose every connection goes through the egress guard (see the module docstring).
    Redirects are followed (at most MAX_REDIRECTS hops, each judged again) unless `follow_redirects` is
    False; other keyword arguments go to `httpx.AsyncClient` (timeout, headers...)."""
    if isinstance(egress, EgressGuard):
        guard = egress
    elif isinstance(egress, EgressPolicy):
        guard = EgressGuard(egress)
    else:
        guard = EgressGuard(EgressPolicy.from_settings(egress))
    limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's defaults
    if verify is True:
        verify = verifying_context(trust_env=False)  # as the transport's trust_env=False would make it
    transport = _GuardedTransport(guard, limits=limits, verify=verify)
    client = httpx.AsyncClient(
        transport=transport,
        trust_env=False,
        follow_redirects=follow_redirects,
        max_redirects=min(max_redirects, MAX_REDIRECTS),
        **kwargs,
    )
    return quiet_cookies(client)


# ---------------------------------------------------------------------------------------- downloads
MAX_OUTPUT_BYTES = 2 * 1024**3
DOWNLOAD_TIMEOUT_S = 600.0
MEDIA_TYPES = re.compile(r"^(video|audio|image)/|^application/(octet-stream|mp4|ogg)$")
SUFFIX_FOR = {
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "audio/mpeg": ".mp3",
    "audio/mp4": ".m4a",
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/ogg": ".ogg",
}


def _suffix(url: str, content_type: str) -> str:
    path_suffix = Path(urlparse(url).path).suffix.lower()
    if re.fullmatch(r"\.[a-z0-9]{1,5}", path_suffix):
        return path_suffix
    return SUFFIX_FOR.get(content_type) or mimetypes.guess_extension(content_type) or ".bin"


async def fetch_output(
    client: httpx.AsyncClient,
    url: str,
    dest_stem: Path,
    *,
    limit_bytes: int = MAX_OUTPUT_BYTES,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
) -> tuple[Path, str]:
    """Download `url` to `dest_stem` + a suffix; return (path, content type). Use a `guarded_client`.

    Network trouble and 5xx are transient (the retry waits on the same remote work, then fetches again);
    a 4xx, a non-media content type, an oversize body, too many redirects and a destination the guard
    refuses are permanent. A refusal says only "refused: <url> is not a public address".
    """
    if urlparse(url).scheme not in ("http", "https"):
        raise PermanentError(f"output URL {shorten(url)!r} is not http(s)")
    dest_stem.parent.mkdir(parents=True, exist_ok=True)
    shown = shorten(url)
    try:
        async with asyncio.timeout(timeout_s), client.stream("GET", url) as response:
            if response.status_code >= 500 or response.status_code == 429:
                raise TransientError(f"downloading the output failed: HTTP {response.status_code} from {shown}")
            if response.status_code >= 400:
                raise PermanentError(f"downloading the output failed: HTTP {response.status_code} from {shown}")
            content_type = response.headers.get("content-type", "application/octet-stream").split(";")[0].strip()
            if not MEDIA_TYPES.match(content_type):
                raise PermanentError(f"the output at {shown} is {content_type}, not media")
            path = dest_stem.with_suffix(_suffix(url, content_type))
            await stream_to_file(response, path, limit_bytes, "the output")
    except TimeoutError:
        raise TransientError(f"downloading the output took over {timeout_s:g} s") from None
    except UnresolvableDestination as exc:
        raise TransientError(f"downloading the output failed: {exc}") from None
    except UnsafeDestination as exc:  # the URL as given, or the redirect target that was refused
        hop = exc.url if exc.url is not None and not _same_url(exc.url, url) else url
        raise PermanentError(refusal(hop)) from None
    except httpx.TooManyRedirects:
        raise PermanentError(
            f"downloading the output failed: more than {MAX_REDIRECTS} redirects from {shown}"
        ) from None
    except httpx.UnsupportedProtocol:
        raise PermanentError(f"downloading the output failed: {shown} redirects to a URL that is not http(s)") from None
    except httpx.HTTPError as exc:
        raise TransientError(f"downloading the output failed: {type(exc).__name__}: {exc}") from None
    except httpx.InvalidURL as exc:
        raise PermanentError(f"output URL {shown!r} is not a valid URL: {exc}") from None
    return path, content_type


def _same_url(a: str, b: str) -> bool:
    try:
        return httpx.URL(a) == httpx.URL(b)
    except httpx.InvalidURL:
        return a == b


INLINE_WRITE_BYTES = 64 * 1024
"""Chunks up to this size are written from the event loop; larger ones in a thread."""


async def stream_to_file(response: httpx.Response, path: Path, limit_bytes: int, what: str) -> int:
    """Write a streamed response body to `path`, refusing (PermanentError) a declared or actual size over
    `limit_bytes`; returns the bytes written. Chunks over INLINE_WRITE_BYTES are written off the event loop."""
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit_bytes:
        raise PermanentError(f"{what} is {int(declared)} bytes, over the limit of {limit_bytes}")
    size = 0
    with path.open("wb") as f:
        async for chunk in response.aiter_bytes(1 << 20):
            size += len(chunk)
            if size > limit_bytes:
                raise PermanentError(f"{what} is over the limit of {limit_bytes} bytes")
            if len(chunk) <= INLINE_WRITE_BYTES:
                f.write(chunk)  # into the page cache: quicker than a trip to a thread
            else:
                await asyncio.to_thread(f.write, chunk)
    return size


__all__ = [
    "ALLOWED_SCHEMES",
    "DOWNLOAD_TIMEOUT_S",
    "MAX_OUTPUT_BYTES",
    "MAX_REDIRECTS",
    "EgressGuard",
    "EgressPolicy",
    "QuietCookies",
    "Resolver",
    "UnresolvableDestination",
    "UnsafeDestination",
    "address_problem",
    "check_destination",
    "check_url_syntax",
    "fetch_output",
    "guarded_client",
    "parse_allowed_hosts",
    "quiet_cookies",
    "refusal",
    "shorten",
    "stream_to_file",
    "system_resolver",
    "verifying_context",
    "vet",
]
