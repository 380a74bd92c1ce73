"""The local control API: one Starlette app that exposes a :class:`FarmControl` as JSON.

This module owns the routes of the daemon's HTTP API (the CLI and the dashboard use the same
ones) and their status codes. Rules:

- Errors map in one place (:func:`_error_response`): ``UsageError`` -> 400, an unknown job ->
  404, a body over its cap -> 413, ``ControlError`` -> 503, any other ``PeerfarmError`` -> 500,
  always as ``{"error": message}`` and never a traceback page.
- Access control wraps every route (``peerfarm.api.access``); bodies are read with caps
  (``peerfarm.api.bodies``); streams end when ``shutdown`` is set (``peerfarm.api.streams``).
"""

from __future__ import annotations

import functools
import hmac
import logging
import re
import secrets
import shutil
from pathlib import Path

import trio
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from peerfarm.api.access import (
    KEY_HEADER,
    SESSION_COOKIE,
    AccessMiddleware,
    LoginLimiter,
    Sessions,
    is_local,
    retry_after,
    source_of,
)
from peerfarm.api.bodies import (
    UPLOAD_LIMIT,
    BodyTooLarge,
    abs_path,
    checked_fps,
    number,
    read_json,
    receive_upload,
    submit_request,
    text_field,
)
from peerfarm.api.streams import (
    done_outputs,
    event_stream,
    render_metrics,
    until_shutdown,
    zip_stream,
)
from peerfarm.control import (
    ACTIONS,
    HOST_ACTIONS,
    FarmControl,
    FrameQuery,
    LoginAnswer,
    LoginLink,
    SessionView,
    StatusView,
    frame_query,
)
from peerfarm.errors import ControlError, PeerfarmError, UsageError
from peerfarm.framepage import DEFAULT_LIMIT
from peerfarm.frames import MAX_FRAMES, parse_frames

log = logging.getLogger(__name__)

#: The frames an archive or a video is made of: every done one, however many.
DONE_FRAMES = FrameQuery(states=("done",))
#: The longest a ``GET /api/status?job=J&wait=S`` waits for the job to end.
MAX_STATUS_WAIT_S = 60.0
#: Where the dashboard's static files live (another module fills it; optional).
STATIC_DIR = Path(__file__).with_name("static")


class UnknownJob(UsageError):
    """A job reference that names no job (or more than one): HTTP 404."""


# --- errors ----------------------------------------------------------------------------------


def _error_response(exc: Exception) -> JSONResponse:
    if isinstance(exc, UnknownJob):
        status = 404
    elif isinstance(exc, BodyTooLarge):
        status = 413
    elif isinstance(exc, UsageError):
        status = 400
    elif isinstance(exc, ControlError):
        status = 503
    elif isinstance(exc, PeerfarmError):
        status = 500
    else:
        log.exception("unexpected error in the control API", exc_info=exc)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)
    return JSONResponse({"error": str(exc)}, status_code=status)


async def _handle_error(request: Request, exc: Exception) -> Response:
    return _error_response(exc)


# --- the app ---------------------------------------------------------------------------------

_PLACEHOLDER = """<!doctype html><meta charset="utf-8"><title>peerfarm</title>
<h1>peerfarm</h1><p>The dashboard is not installed. The JSON API is at
<a href="/api/status">/api/status</a>.</p>"""


class _Api:
    """The route handlers, closed over one control and its settings."""

    def __init__(
        self,
        control: FarmControl,
        *,
        login_password: str | None,
        sessions: Sessions,
        limiter: LoginLimiter,
        upload_dir: Path,
        upload_limit: int,
        shutdown: trio.Event,
        static_dir: Path | None,
    ) -> None:
        self.control = control
        self.login_password = login_password
        self.sessions = sessions
        self.limiter = limiter
        self.upload_dir = upload_dir
        self.upload_limit = upload_limit
        self.shutdown = shutdown
        self.static_dir = static_dir
        self._encoded: dict[str, int] = {}

    def job(self, request: Request) -> str:
        try:
            return self.control.resolve_job(request.path_params["ref"])
        except UsageError as exc:
            raise UnknownJob(str(exc)) from None

    async def index(self, request: Request) -> Response:
        # ?login=CODE (a one-time link) is swapped for a session by the page's script; the
        # code must not leak through a Referer or a cache.
        headers = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
        if self.static_dir is not None and (self.static_dir / "index.html").is_file():
            return FileResponse(self.static_dir / "index.html", headers=headers)
        return HTMLResponse(_PLACEHOLDER, headers=headers)

    async def session(self, request: Request) -> Response:
        view = SessionView(
            loopback=is_local(request),
            logged_in=self.sessions.valid(request.cookies.get(SESSION_COOKIE)),
            login=self.login_password is not None,
            actions=self.sessions.acting(request.headers.get(KEY_HEADER)),
        )
        return JSONResponse(view)

    async def login(self, request: Request) -> Response:
        """A session for a one-time link's ``{"code"}`` or the farm's ``{"password"}``.

        Password attempts are rate limited per source; codes are not (256 random bits cannot
        be guessed, and a limit would let another local user lock this one out of its link).
        """
        source = source_of(request)
        body = await read_json(request)
        code, given = body.get("code"), body.get("password")
        if isinstance(code, str) and code:
            if not self.sessions.redeem(code):
                log.warning("refused a used or expired login link from %s", source)
                return JSONResponse(
                    {"error": "this login link was already used or has expired: "
                              "run `peerfarm dashboard` for a new one"},
                    status_code=401,
                )  # fmt: skip
        elif self.login_password is None:
            return JSONResponse({"error": "login is disabled on this peer"}, status_code=403)
        elif (wait := self.limiter.wait(source)) > 0:
            return JSONResponse(
                {"error": f"too many login attempts from {source}: try again in "
                          f"{retry_after(wait)} s"},
                status_code=429,
                headers={"Retry-After": retry_after(wait)},
            )  # fmt: skip
        elif not isinstance(given, str) or not hmac.compare_digest(
            given.encode("utf-8", "replace"), self.login_password.encode()
        ):
            self.limiter.failed(source)
            log.warning("refused a dashboard login from %s: wrong password", source)
            return JSONResponse({"error": "wrong password"}, status_code=401)
        cookie, key = self.sessions.issue()
        response = JSONResponse(LoginAnswer(logged_in=True, key=key))
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            max_age=int(self.sessions.max_age),
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(self, request: Request) -> Response:
        """End this browser's session on the server (its cookie and action key die)."""
        self.sessions.revoke(
            cookie=request.cookies.get(SESSION_COOKIE), key=request.headers.get(KEY_HEADER)
        )
        response = JSONResponse(LoginAnswer(logged_in=False))
        response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict")
        return response

    async def login_link(self, request: Request) -> Response:
        """A one-time login code for the dashboard (the CLI's ``peerfarm dashboard``)."""
        code = self.sessions.new_link()
        link = LoginLink(code=code, path=f"/?login={code}", expires_in=self.sessions.link_max_age)
        return JSONResponse(link, status_code=201)

    async def status(self, request: Request) -> Response:
        params = request.query_params
        ref = params.get("job")
        if ref is None:
            if any(key in params for key in ("frames", "state", "limit", "wait")):
                raise UsageError("'frames', 'state', 'limit' and 'wait' need a 'job'")
            return JSONResponse(self.control.status())
        limit = number(params, "limit", int, (0, MAX_FRAMES))
        wait = number(params, "wait", float, (0, MAX_STATUS_WAIT_S))
        query = frame_query(
            params.get("frames"), params.get("state"), DEFAULT_LIMIT if limit is None else limit
        )
        try:
            job = self.control.resolve_job(ref)
        except UsageError as exc:
            raise UnknownJob(str(exc)) from None
        if wait is None:
            return JSONResponse(self.control.status(job, query))
        # A long poll (``submit --wait``): answered as soon as the job ends, or after ``wait``.
        ended = await until_shutdown(
            self.shutdown, functools.partial(self.control.wait_for_end, job, wait)
        )
        try:
            view = self.control.status(job, query)
        except UsageError as exc:  # archived while we waited
            raise UnknownJob(str(exc)) from None
        view["ended"] = bool(ended)
        return JSONResponse(view)

    async def frame_states(self, request: Request) -> Response:
        """Every frame's state in one string (the dashboard's frame map)."""
        since = number(request.query_params, "since", int, (0, 2**63 - 1))
        return JSONResponse(self.control.frame_states(self.job(request), since))

    async def peers(self, request: Request) -> Response:
        return JSONResponse(self.control.peers())

    async def submit(self, request: Request) -> Response:
        body = await read_json(request)
        result = await self.control.submit(submit_request(body))
        return JSONResponse(result, status_code=201)

    async def upload(self, request: Request) -> Response:
        self.upload_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder = self.upload_dir / f"upload-{secrets.token_hex(8)}"
        folder.mkdir(mode=0o700)
        try:
            scene, fields = await receive_upload(request, folder, self.upload_limit)
            result = await self.control.submit(submit_request(fields, scene=scene))
        finally:
            # The scene is in the content store now (or the submit failed): the upload goes.
            shutil.rmtree(folder, ignore_errors=True)
        return JSONResponse(result, status_code=201)

    async def act(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ACTIONS:
            return JSONResponse({"error": f"unknown action {action!r}"}, status_code=404)
        job = self.job(request)
        body = await read_json(request)
        frames = text_field(body, "frames") if action == "retry" else None
        if frames is not None:
            parse_frames(frames)
        return JSONResponse(await self.control.act(job, action, frames))

    async def host(self, request: Request) -> Response:
        action = request.path_params["action"]
        if action not in HOST_ACTIONS:
            return JSONResponse({"error": f"unknown host action {action!r}"}, status_code=404)
        body = await read_json(request)
        now = body.get("now", False)
        if type(now) is not bool:
            return JSONResponse({"error": "now must be true or false"}, status_code=400)
        answer = await self.control.host(request.path_params["ref"], action, now=now)
        return JSONResponse(answer)

    async def log(self, request: Request) -> Response:
        return JSONResponse(self.control.logs(self.job(request), request.path_params["n"]))

    async def thumbnail(self, request: Request) -> Response:
        job = self.job(request)
        frame = request.path_params["n"]
        png = await self.control.thumbnail(job, frame)
        if png is None:
            return JSONResponse({"error": f"no thumbnail for frame {frame}"}, status_code=404)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})

    async def output(self, request: Request) -> Response:
        job = self.job(request)
        frame = request.path_params["n"]
        index = number(request.query_params, "index", int, (0, 1_000_000)) or 0
        path = await self.control.output_file(job, frame, index)
        if path is None or not path.is_file():
            return JSONResponse({"error": f"frame {frame} has no output yet"}, status_code=404)
        return FileResponse(path, filename=path.name)

    async def archive(self, request: Request) -> Response:
        job = self.job(request)
        status = self.control.status(job, DONE_FRAMES)
        outputs = list(done_outputs(status))
        if not outputs:
            raise UsageError("this job has no finished frames yet")
        name = _job_name(status, job)
        return StreamingResponse(
            zip_stream(self.control, job, outputs),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{name}.zip"'},
        )

    async def fetch(self, request: Request) -> Response:
        job = self.job(request)
        dest = abs_path(await read_json(request), "dest")
        if dest is None:
            raise UsageError("'dest' is required: the folder to copy the frames into")
        try:
            return JSONResponse(await self.control.fetch(job, dest))
        except OSError as exc:
            raise UsageError(f"cannot write the frames into {dest}: {_os_reason(exc)}") from None

    async def check(self, request: Request) -> Response:
        return JSONResponse(await self.control.check(self.job(request)))

    async def encode(self, request: Request) -> Response:
        job = self.job(request)
        body = await read_json(request)
        out = abs_path(body, "out")
        if out is None:
            raise UsageError("'out' is required: the .mp4 file to write")
        if out.is_dir():
            raise UsageError(f"{out} is a folder: give the video's file name (e.g. {out}/shot.mp4)")
        try:
            return JSONResponse(await self.control.encode(job, out, checked_fps(body)))
        except OSError as exc:
            raise UsageError(f"cannot write the video {out}: {_os_reason(exc)}") from None

    async def video(self, request: Request) -> Response:
        job = self.job(request)
        status = self.control.status(job, DONE_FRAMES)
        done = sum(1 for _ in done_outputs(status))
        if done == 0:
            raise UsageError("this job has no finished frames yet")
        out = self.upload_dir / "videos" / f"{job}.mp4"
        if self._encoded.get(job) != done or not out.is_file():
            out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fps = checked_fps(request.query_params)
            await self.control.encode(job, out, fps)
            self._encoded[job] = done
        name = _job_name(status, job)
        return FileResponse(out, media_type="video/mp4", filename=f"{name}.mp4")

    async def events(self, request: Request) -> Response:
        return StreamingResponse(
            event_stream(self.control, self.shutdown),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def metrics(self, request: Request) -> Response:
        return Response(render_metrics(self.control), media_type=CONTENT_TYPE_LATEST)


def _os_reason(exc: OSError) -> str:
    """An OS error in words: ``Permission denied (/x/y)``."""
    reason = exc.strerror or type(exc).__name__
    return f"{reason} ({exc.filename})" if exc.filename else reason


def _job_name(status: StatusView, job: str) -> str:
    name = status["jobs"][0]["name"] if status["jobs"] else job
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or job


def create_app(
    control: FarmControl,
    *,
    token: str,
    login_password: str | None,
    public: bool,
    upload_dir: Path,
    shutdown: trio.Event,
    upload_limit: int = UPLOAD_LIMIT,
    static_dir: Path | None = STATIC_DIR,
    sessions: Sessions | None = None,
    limiter: LoginLimiter | None = None,
) -> Starlette:
    """The control API and dashboard backend for ``control``.

    ``token`` authorizes the CLI (bearer); browsers act through sessions (``sessions``: the
    daemon keeps a handle to print one-time login links) made from a one-time link or
    ``login_password`` (derived from the farm key; ``None`` disables password logins);
    ``public`` lets anyone view beyond loopback. ``shutdown`` ends open event streams so the
    server can stop promptly.
    """
    if static_dir is not None and not static_dir.is_dir():
        static_dir = None
    sessions = sessions or Sessions()
    api = _Api(
        control,
        login_password=login_password,
        sessions=sessions,
        limiter=limiter or LoginLimiter(),
        upload_dir=upload_dir,
        upload_limit=upload_limit,
        shutdown=shutdown,
        static_dir=static_dir,
    )
    routes: list[BaseRoute] = [
        Route("/", api.index),
        Route("/metrics", api.metrics),
        Route("/api/session", api.session),
        Route("/api/login", api.login, methods=["POST"]),
        Route("/api/logout", api.logout, methods=["POST"]),
        Route("/api/login-link", api.login_link, methods=["POST"]),
        Route("/api/status", api.status),
        Route("/api/peers", api.peers),
        Route("/api/peers/{ref}/{action}", api.host, methods=["POST"]),
        Route("/api/events", api.events),
        Route("/api/jobs", api.submit, methods=["POST"]),
        Route("/api/upload", api.upload, methods=["POST"]),
        Route("/api/jobs/{ref}/archive", api.archive),
        Route("/api/jobs/{ref}/video", api.video),
        Route("/api/jobs/{ref}/fetch", api.fetch, methods=["POST"]),
        Route("/api/jobs/{ref}/encode", api.encode, methods=["POST"]),
        Route("/api/jobs/{ref}/check", api.check, methods=["GET"]),
        Route("/api/jobs/{ref}/frame-states", api.frame_states),
        Route("/api/jobs/{ref}/frames/{n:int}/log", api.log),
        Route("/api/jobs/{ref}/frames/{n:int}/thumbnail", api.thumbnail),
        Route("/api/jobs/{ref}/frames/{n:int}/output", api.output),
        Route("/api/jobs/{ref}/{action}", api.act, methods=["POST"]),
    ]
    if static_dir is not None:
        routes.append(Mount("/static", StaticFiles(directory=static_dir), name="static"))
    return Starlette(
        routes=routes,
        middleware=[Middleware(AccessMiddleware, token=token, sessions=sessions, public=public)],
        exception_handlers={PeerfarmError: _handle_error, Exception: _handle_error},
    )
