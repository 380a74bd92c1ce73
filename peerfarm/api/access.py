"""Who may call the control API: the rules as one pure function, and the middleware around it.

This module owns access control. :func:`access_decision` takes the facts about one request and
says yes or why not; :class:`AccessMiddleware` only gathers those facts (the bearer token, the
server address the connection arrived on, Host/Origin/Sec-Fetch-Site, the login cookie).
Login cookies are signed and expiring (itsdangerous); their secret dies with the daemon.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

#: Seconds a dashboard login stays valid.
SESSION_MAX_AGE_S = 7 * 24 * 3600
SESSION_COOKIE = "peerfarm_session"

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_OPEN_PATHS = frozenset({"/", "/favicon.ico", "/api/session", "/api/login", "/api/logout"})


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
    logged_in: bool
    public: bool


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

    1. A bearer token (the CLI) may do everything; a wrong one is refused (401).
    2. A browser on a loopback bind must use a loopback Host name (no DNS rebinding).
    3. A browser action (not GET/HEAD) must not come from another origin, and must prove it is
       same-site: the ``X-Peerfarm: 1`` header, or an Origin equal to the Host, or
       ``Sec-Fetch-Site: same-origin``.
    4. Bound beyond loopback, actions need a login, and viewing needs a login unless public.
       The page itself, its static files and the login routes are always reachable.
    """
    if facts.bearer is True:
        return None
    if facts.bearer is False:
        return Denied(401, "wrong control token")
    if facts.loopback and not is_loopback_host(_hostname(facts.host)):
        return Denied(403, f"Host {facts.host!r} is not a loopback name on a loopback bind")
    action = facts.method not in _SAFE_METHODS
    if action:
        same_origin = facts.origin is not None and urlsplit(facts.origin).netloc == facts.host
        if facts.origin is not None and not same_origin:
            return Denied(403, f"cross-site request from {facts.origin} refused")
        if facts.sec_fetch_site not in (None, "same-origin", "none"):
            return Denied(403, f"cross-site request ({facts.sec_fetch_site}) refused")
        if not (facts.marked or same_origin or facts.sec_fetch_site == "same-origin"):
            return Denied(403, "cross-site request refused: send the header X-Peerfarm: 1")
    if facts.loopback or facts.path in _OPEN_PATHS or facts.path.startswith("/static/"):
        return None
    if facts.logged_in:
        return None
    if action:
        return Denied(401, "log in first: actions on this dashboard need the farm's password")
    if not facts.public:
        return Denied(401, "log in first: this dashboard is not public")
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
        server = connection.scope.get("server")
        loopback = server is None or is_loopback_host(str(server[0]))
        return RequestFacts(
            method=connection.scope.get("method", "GET"),
            path=connection.url.path,
            loopback=loopback,
            host=headers.get("host", ""),
            origin=headers.get("origin"),
            sec_fetch_site=headers.get("sec-fetch-site"),
            marked=headers.get("x-peerfarm") == "1",
            bearer=self._bearer(headers),
            logged_in=self.sessions.valid(connection.cookies.get(SESSION_COOKIE)),
            public=self.public,
        )

    def _bearer(self, headers: Headers) -> bool | None:
        value = headers.get("authorization")
        if value is None or not value.lower().startswith("bearer "):
            return None
        return hmac.compare_digest(value[7:].strip().encode(), self.token.encode())


class Sessions:
    """Signed, expiring login cookies (itsdangerous); the secret dies with the daemon."""

    def __init__(self, secret: str) -> None:
        self._signer = URLSafeTimedSerializer(secret, salt="peerfarm-login")

    def issue(self) -> str:
        return self._signer.dumps({"login": True, "nonce": secrets.token_hex(8)})

    def valid(self, cookie: str | None) -> bool:
        if not cookie:
            return False
        try:
            data = self._signer.loads(cookie, max_age=SESSION_MAX_AGE_S)
        except BadSignature:
            return False
        return isinstance(data, dict) and data.get("login") is True
