"""Who may call the control API: the rules as one pure function, and the state around them.

This module owns access control. :func:`access_decision` takes the facts about one request and
says yes or why not; :class:`AccessMiddleware` only gathers those facts (the bearer token, the
server address the connection arrived on, Host/Origin/Sec-Fetch-Site, forwarding headers, the
session cookie and action key). :class:`Sessions` keeps the dashboard's logins and one-time
login links in memory (they die with the daemon); :class:`LoginLimiter` rate-limits logins per
source address.

Loopback is not a trust boundary (another local user can reach any loopback port), so every
state-changing request needs proof: the bearer token from ``control.json`` (the CLI), or a
browser session's action key. A browser gets a session from a one-time link (``peerfarm up``
and ``peerfarm dashboard`` print one) or the farm's dashboard password. The session has two
parts: an HttpOnly cookie that lets the browser *view* where viewing needs a login (images,
downloads, events), and an action key the page keeps in its origin's storage and sends as the
``X-Peerfarm-Key`` header on every action. Cookies are shared by every port of a host, so a
cookie that leaks to another local user's server on another port grants no action.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

#: Seconds a dashboard login stays valid.
SESSION_MAX_AGE_S = 7 * 24 * 3600
#: Seconds a one-time login link stays usable (it is also spent by its first use).
LINK_MAX_AGE_S = 15 * 60
#: Sessions and unused links kept at once; the oldest go first.
MAX_SESSIONS = 1024
MAX_LINKS = 64
SESSION_COOKIE = "peerfarm_session"
#: The header that carries a session's action key.
KEY_HEADER = "x-peerfarm-key"
#: Headers a reverse proxy adds. A request that carries any of them is never trusted as local.
FORWARDING_HEADERS = (
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-real-ip",
    "x-client-ip",
    "via",
)

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_LOGIN_PATHS = frozenset({"/api/login", "/api/logout"})
_OPEN_PATHS = frozenset({"/", "/favicon.ico", "/api/session"}) | _LOGIN_PATHS
#: Routes only the CLI (bearer token) may call.
_TOKEN_PATHS = frozenset({"/api/login-link"})


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What :func:`access_decision` needs to know about one request."""

    method: str
    path: str
    loopback: bool  # the connection arrived on a loopback address of this host
    host: str  # the Host header as sent (may carry a port)
    origin: str | None
    sec_fetch_site: str | None
    marked: bool  # carries ``X-Peerfarm: 1`` (cross-site pages cannot send it without CORS)
    bearer: bool | None  # None: no bearer token; True: the right one; False: a wrong one
    logged_in: bool  # a live session cookie: may view where viewing needs a login
    public: bool
    acting: bool = False  # a live session's action key (``X-Peerfarm-Key``): may act
    forwarded: bool = False  # a reverse proxy's header is present: not a local request
    forwarded_host: str | None = None  # the Host the proxy was asked for (X-Forwarded-Host)


@dataclass(frozen=True, slots=True)
class Denied:
    status: int
    error: str


def _hostname(host: str) -> str:
    return urlsplit(f"//{host}").hostname or ""


def is_loopback_host(host: str) -> bool:
    """Whether a host name or address (no port) means this machine's loopback."""
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def access_decision(facts: RequestFacts) -> Denied | None:
    """``None`` to let the request through, else why not. The rules:

    1. A bearer token (the CLI) may do everything; a wrong one is refused (401). A few routes
       (asking for a login link) take nothing else.
    2. A browser on a loopback bind must use a loopback Host name (no DNS rebinding).
    3. A browser action (not GET/HEAD) must not come from another origin, and must prove it is
       same-site: the ``X-Peerfarm: 1`` header, or an Origin equal to the Host (the proxy's
       X-Forwarded-Host when forwarded), or ``Sec-Fetch-Site: same-origin``.
    4. Every action needs a session's action key, loopback or not; only logging in and out
       do not.
    5. Viewing is open to local requests: arrived on loopback *and* not forwarded by a proxy
       (forwarding headers never grant loopback trust). Otherwise it needs a login unless
       public. The page itself, its static files and the login routes are always reachable.
    """
    if facts.bearer is True:
        return None
    if facts.bearer is False:
        return Denied(401, "wrong control token")
    if facts.path in _TOKEN_PATHS:
        return Denied(401, "only the CLI may ask for this (it holds the token in control.json)")
    if facts.loopback and not is_loopback_host(_hostname(facts.host)):
        return Denied(403, f"Host {facts.host!r} is not a loopback name on a loopback bind")
    local = facts.loopback and not facts.forwarded
    if facts.method not in _SAFE_METHODS:
        seen_host = facts.host
        if facts.forwarded and facts.forwarded_host:
            seen_host = facts.forwarded_host
        same_origin = facts.origin is not None and urlsplit(facts.origin).netloc == seen_host
        if facts.origin is not None and not same_origin:
            return Denied(403, f"cross-site request from {facts.origin} refused")
        if facts.sec_fetch_site not in (None, "same-origin", "none"):
            return Denied(403, f"cross-site request ({facts.sec_fetch_site}) refused")
        if not (facts.marked or same_origin or facts.sec_fetch_site == "same-origin"):
            return Denied(403, "cross-site request refused: send the header X-Peerfarm: 1")
        if facts.path in _LOGIN_PATHS or facts.acting:
            return None
        if local:
            return Denied(
                401,
                "log in first: open the one-time link that `peerfarm dashboard` prints "
                "(or use the farm's dashboard password)",
            )
        return Denied(401, "log in first: actions on this dashboard need the farm's password")
    if local or facts.path in _OPEN_PATHS or facts.path.startswith("/static/"):
        return None
    if facts.logged_in or facts.acting or facts.public:
        return None
    return Denied(401, "log in first: this dashboard is not public")


def _first_value(value: str | None) -> str | None:
    """The first (client-most) element of a comma-separated forwarding header."""
    if not value:
        return None
    first = value.split(",", 1)[0].strip()
    return first or None


def forwarded_host(headers: Headers) -> str | None:
    """The public Host a reverse proxy was asked for: X-Forwarded-Host, or Forwarded host=."""
    host = _first_value(headers.get("x-forwarded-host"))
    if host:
        return host
    for part in (_first_value(headers.get("forwarded")) or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name.lower() == "host" and value:
            return value.strip('"')
    return None


class AccessMiddleware:
    """Gathers :class:`RequestFacts` for each request and enforces :func:`access_decision`."""

    def __init__(self, app: ASGIApp, *, token: str, sessions: Sessions, public: bool) -> None:
        self.app = app
        self.token = token
        self.sessions = sessions
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        denied = access_decision(self.facts(connection))
        if denied is not None:
            response = JSONResponse({"error": denied.error}, status_code=denied.status)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def facts(self, connection: HTTPConnection) -> RequestFacts:
        headers = connection.headers
        return RequestFacts(
            method=connection.scope.get("method", "GET"),
            path=connection.url.path,
            loopback=arrived_on_loopback(connection),
            host=headers.get("host", ""),
            origin=headers.get("origin"),
            sec_fetch_site=headers.get("sec-fetch-site"),
            marked=headers.get("x-peerfarm") == "1",
            bearer=self._bearer(headers),
            logged_in=self.sessions.valid(connection.cookies.get(SESSION_COOKIE)),
            public=self.public,
            acting=self.sessions.acting(headers.get(KEY_HEADER)),
            forwarded=is_forwarded(headers),
            forwarded_host=forwarded_host(headers),
        )

    def _bearer(self, headers: Headers) -> bool | None:
        value = headers.get("authorization")
        if value is None or not value.lower().startswith("bearer "):
            return None
        return hmac.compare_digest(value[7:].strip().encode(), self.token.encode())


def arrived_on_loopback(connection: HTTPConnection) -> bool:
    """Whether the connection arrived on a loopback address of this host."""
    server = connection.scope.get("server")
    return server is None or is_loopback_host(str(server[0]))


def is_forwarded(headers: Headers) -> bool:
    """Whether a reverse proxy's forwarding header is present (any of them, any value)."""
    return any(name in headers for name in FORWARDING_HEADERS)


def is_local(connection: HTTPConnection) -> bool:
    """Arrived on loopback and not forwarded by a proxy: viewing needs no login."""
    return arrived_on_loopback(connection) and not is_forwarded(connection.headers)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


@dataclass(slots=True)
class _Session:
    cookie: str  # digests, never the secrets themselves
    key: str
    expires: float


class Sessions:
    """Dashboard logins and one-time login links, in memory (they die with the daemon).

    A login is a pair of random secrets: the view cookie and the action key. Only their
    SHA-256 digests are kept. :meth:`revoke` ends a session at once (logout); a link code is
    spent by :meth:`redeem` whether or not a session follows.
    """

    def __init__(
        self,
        *,
        max_age: float = SESSION_MAX_AGE_S,
        link_max_age: float = LINK_MAX_AGE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_age = max_age
        self.link_max_age = link_max_age
        self._clock = clock
        self._by_cookie: OrderedDict[str, _Session] = OrderedDict()
        self._by_key: dict[str, _Session] = {}
        self._links: OrderedDict[str, float] = OrderedDict()

    def issue(self) -> tuple[str, str]:
        """A new session: (cookie value, action key)."""
        cookie, key = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        session = _Session(_digest(cookie), _digest(key), self._clock() + self.max_age)
        self._by_cookie[session.cookie] = session
        self._by_key[session.key] = session
        while len(self._by_cookie) > MAX_SESSIONS:
            _, oldest = self._by_cookie.popitem(last=False)
            self._by_key.pop(oldest.key, None)
        return cookie, key

    def _live(self, session: _Session | None) -> bool:
        if session is None:
            return False
        if session.expires > self._clock():
            return True
        self._drop(session)
        return False

    def _drop(self, session: _Session) -> None:
        self._by_cookie.pop(session.cookie, None)
        self._by_key.pop(session.key, None)

    def valid(self, cookie: str | None) -> bool:
        """Whether ``cookie`` belongs to a live session (may view)."""
        return bool(cookie) and self._live(self._by_cookie.get(_digest(cookie or "")))

    def acting(self, key: str | None) -> bool:
        """Whether ``key`` is a live session's action key (may act)."""
        return bool(key) and self._live(self._by_key.get(_digest(key or "")))

    def revoke(self, *, cookie: str | None = None, key: str | None = None) -> bool:
        """End the session that ``cookie`` or ``key`` belongs to; whether there was one."""
        found = None
        if cookie:
            found = self._by_cookie.get(_digest(cookie))
        if found is None and key:
            found = self._by_key.get(_digest(key))
        if found is None:
            return False
        self._drop(found)
        return True

    def new_link(self) -> str:
        """A fresh one-time login code (for ``/?login=CODE``)."""
        code = secrets.token_urlsafe(32)
        self._links[_digest(code)] = self._clock() + self.link_max_age
        while len(self._links) > MAX_LINKS:
            self._links.popitem(last=False)
        return code

    def redeem(self, code: str) -> bool:
        """Spend a login code: True once if it is known and not expired, False ever after."""
        expires = self._links.pop(_digest(code), None)
        return expires is not None and expires > self._clock()


def source_of(connection: HTTPConnection) -> str:
    """Who is asking, for rate limits: the peer address (an IPv6 /64 as one source)."""
    client = connection.scope.get("client")
    host = str(client[0]) if client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class LoginLimiter:
    """At most ``burst`` failed logins per source, one more every ``interval`` seconds.

    A token bucket per source: :meth:`wait` says whether a login may be tried now, and
    :meth:`failed` spends a token; a successful login spends nothing. The table keeps the
    ``capacity`` most recent sources. Every local user shares the loopback address, and every
    client of a reverse proxy the proxy's: each of those is one bucket.
    """

    def __init__(
        self,
        burst: int = 5,
        interval: float = 10.0,
        *,
        capacity: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst = burst
        self.interval = interval
        self.capacity = capacity
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, time

    def _tokens(self, source: str, now: float) -> float:
        tokens, last = self._buckets.get(source, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - last) / self.interval)

    def wait(self, source: str) -> float:
        """0.0 if ``source`` may try to log in now, else the seconds until it may."""
        tokens = self._tokens(source, self._clock())
        return 0.0 if tokens >= 1.0 else max(0.001, (1.0 - tokens) * self.interval)

    def failed(self, source: str) -> None:
        """Count a failed login of ``source``."""
        now = self._clock()
        tokens = self._tokens(source, now)
        self._buckets.pop(source, None)
        self._buckets[source] = (max(0.0, tokens - 1.0), now)
        while len(self._buckets) > self.capacity:
            self._buckets.popitem(last=False)


def retry_after(wait: float) -> str:
    """A Retry-After header value (whole seconds, at least 1)."""
    return str(max(1, math.ceil(wait)))
