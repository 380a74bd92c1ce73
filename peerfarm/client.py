"""How every CLI verb finds the local daemon and talks to its control API.

This module owns the data dir's small files and the HTTP client of the control API:

- The data dir is ``--data-dir``, else ``$PEERFARM_DATA_DIR``, else the platform's user data dir.
- The daemon writes ``<data dir>/control.json`` = ``{"url", "token", "pid", "web"}`` (mode 0600,
  written atomically; ``web`` is the dashboard's address, or null with ``--no-web``) with
  :func:`write_control_file`; clients read it with :func:`read_control_file`.
  A missing file, a dead pid or a refused connection all mean "no daemon running", and that
  message always carries the command that starts one.
- The farm key comes from ``--key-file``, else ``$PEERFARM_KEY`` (base64), else the data dir's
  key file (:func:`load_farm_key`; ``peerfarm up`` creates it on first start).
- :class:`FarmClient` maps every HTTP or transport failure onto ``peerfarm.errors``: 400/404 ->
  ``UsageError``, 401 and unreachable -> ``ControlError``, any other failure -> ``DaemonError``.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, cast
from urllib.parse import quote, urlencode, urlsplit

from peerfarm.control import (
    Action,
    ActionAnswer,
    CheckAnswer,
    DashboardLink,
    EncodeAnswer,
    FetchAnswer,
    FrameQuery,
    FrameStatesView,
    HostAction,
    HostAnswer,
    LoginLink,
    LogsView,
    PeersView,
    StatusView,
    SubmitAnswer,
    SubmitBody,
)
from peerfarm.errors import ControlError, PeerfarmError, UsageError
from peerfarm.local_http import Answer, Connections, HttpFailure, NoAnswer, Refused

CONTROL_FILE = "control.json"
KEY_FILE = "farm.key"
ENV_DATA_DIR = "PEERFARM_DATA_DIR"
ENV_KEY = "PEERFARM_KEY"

#: Seconds to wait for the daemon to answer an ordinary request.
DEFAULT_TIMEOUT_S = 30.0
#: Seconds to wait for a long operation (submit packs a scene; fetch and encode copy files).
LONG_TIMEOUT_S = 3600.0


class DaemonError(PeerfarmError):
    """The daemon answered, but the operation failed on its side (an HTTP 5xx)."""


def resolve_data_dir(option: Path | None, environ: Mapping[str, str] | None = None) -> Path:
    """``--data-dir``, else ``$PEERFARM_DATA_DIR``, else the user data dir; made absolute."""
    env = os.environ if environ is None else environ
    if option is not None:
        chosen = option
    elif env.get(ENV_DATA_DIR):
        chosen = Path(env[ENV_DATA_DIR])
    else:
        import platformdirs  # here: a command given its data dir does not load it

        chosen = Path(platformdirs.user_data_dir("peerfarm"))
    return chosen.expanduser().absolute()


def up_command(data_dir: Path) -> str:
    """The command that starts a daemon for ``data_dir`` (quoted for a POSIX shell)."""
    return f"peerfarm up --data-dir {shlex.quote(str(data_dir))}"


@dataclass(frozen=True, slots=True)
class ControlInfo:
    """The contents of ``control.json``: where the daemon listens and how to prove who we are."""

    url: str
    token: str
    pid: int
    web: str | None = None  # the dashboard's address (None: --no-web)


def write_control_file(
    data_dir: Path, url: str, token: str, *, pid: int | None = None, web: str | None = None
) -> Path:
    """Write ``control.json`` (mode 0600, atomically) for the daemon of ``data_dir``."""
    import secrets

    from peerfarm import platform  # the daemon's side: a command need not import psutil

    info = {"url": url, "token": token, "pid": os.getpid() if pid is None else pid, "web": web}
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / CONTROL_FILE
    tmp = data_dir / f".{CONTROL_FILE}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(info, f)
            f.write("\n")
        platform.replace(tmp, path)
    finally:
        platform.remove(tmp)
    return path


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists (one of another user counts as alive)."""
    from peerfarm import platform  # only when the daemon does not answer: psutil is slow to load

    return platform.pid_alive(pid)


def no_daemon(data_dir: Path, why: str = "") -> ControlError:
    """The error for "nobody is listening", with the command that starts a daemon."""
    detail = f" ({why})" if why else ""
    return ControlError(
        f"no peerfarm daemon running for {data_dir}{detail}: start one with "
        f"`{up_command(data_dir)}`"
    )


def read_control_file(data_dir: Path) -> ControlInfo:
    """The daemon's address and token; ``ControlError`` when there is no live daemon."""
    path = data_dir / CONTROL_FILE
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise no_daemon(data_dir) from None
    except OSError as exc:
        raise ControlError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw)
        web = data.get("web")
        info = ControlInfo(
            url=str(data["url"]),
            token=str(data["token"]),
            pid=int(data["pid"]),
            web=str(web) if web else None,
        )
    except (ValueError, KeyError, TypeError):
        raise ControlError(f"{path} is malformed: remove it and restart the daemon") from None
    if not pid_alive(info.pid):
        raise no_daemon(data_dir, f"stale {CONTROL_FILE}: process {info.pid} is gone")
    return info


def dashboard_url(url: str) -> str:
    """A dashboard base URL a browser on this machine can open (a wildcard bind -> loopback)."""
    split = urlsplit(url.rstrip("/"))
    if split.hostname in ("0.0.0.0", "::"):
        loopback = "127.0.0.1" if split.hostname == "0.0.0.0" else "[::1]"
        return split._replace(netloc=f"{loopback}:{split.port}").geturl()
    return split.geturl()


def key_file_path(data_dir: Path) -> Path:
    """Where a data dir keeps its farm key."""
    return data_dir / KEY_FILE


def load_farm_key(
    data_dir: Path,
    key_file: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    create: bool = False,
) -> bytes:
    """The primary farm key: ``key_file``, else ``$PEERFARM_KEY``, else the data dir's key file.

    With ``create`` (``peerfarm up``) a missing data-dir key file is created; otherwise a
    missing one is a ``UsageError`` that says how to get one.
    """
    # The key's crypto is imported only here: most commands never read the key.
    from peerfarm.gossip.crypto import decode_key, load_key_file, load_or_create_key_file

    env = os.environ if environ is None else environ
    if key_file is not None:
        return load_key_file(key_file)
    if env.get(ENV_KEY):  # several keys separated by commas (rotation): the first seals
        try:
            keys = [decode_key(part) for part in env[ENV_KEY].split(",") if part.strip()]
            return keys[0]
        except UsageError as exc:
            raise UsageError(f"${ENV_KEY}: {exc}") from None
    path = key_file_path(data_dir)
    if create:
        return load_or_create_key_file(path)
    if not path.exists():
        raise UsageError(
            f"no farm key yet in {data_dir}: `{up_command(data_dir)}` creates one, or copy "
            "another peer's key there (or pass --key-file)"
        )
    return load_key_file(path)


class Transport(Protocol):
    """How a :class:`FarmClient` sends its requests (:class:`peerfarm.local_http.Connections`
    by default; the CLI tests hand them to the app in-process). Raises ``HttpFailure``."""

    def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> Answer: ...

    def close(self) -> None: ...


#: Seconds to wait for a connection to the daemon.
CONNECT_TIMEOUT_S = 5.0


def _error_message(answer: Answer) -> str:
    try:
        body = json.loads(answer.body)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    text = answer.body.decode("utf-8", "replace").strip().splitlines()
    return text[0] if text else f"HTTP {answer.status}"


class FarmClient:
    """A synchronous client of one daemon's control API (what the CLI uses)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        data_dir: Path | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: Transport | None = None,
        web: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.web = web.rstrip("/") if web else None
        self.data_dir = data_dir
        self.timeout = timeout
        self._headers = {
            "Authorization": f"Bearer {token}",
            "X-Peerfarm": "1",
            "Accept": "*/*",
        }
        self._transport: Transport = transport if transport is not None else Connections()

    @classmethod
    def connect(cls, data_dir: Path, *, timeout: float = DEFAULT_TIMEOUT_S) -> FarmClient:
        """A client of the daemon whose ``control.json`` is in ``data_dir``."""
        info = read_control_file(data_dir)
        return cls(info.url, info.token, data_dir=data_dir, timeout=timeout, web=info.web)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> FarmClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Answer:
        """Send one request; every failure becomes a ``PeerfarmError`` (see the module doc)."""
        url = self.url + path + (f"?{urlencode(dict(params))}" if params else "")
        headers = dict(self._headers)
        body = None
        if json_body is not None:
            body = json.dumps(json_body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        try:
            answer = self._transport.send(
                method,
                url,
                headers=headers,
                body=body,
                connect_timeout=CONNECT_TIMEOUT_S,
                read_timeout=self.timeout if timeout is None else timeout,
            )
        except Refused as exc:
            if exc.timed_out:
                raise ControlError(f"the daemon at {self.url} is not answering") from exc
            if self.data_dir is not None:
                raise no_daemon(self.data_dir, f"{self.url} refused the connection") from exc
            raise ControlError(f"no peerfarm daemon answering at {self.url}") from exc
        except NoAnswer as exc:
            raise ControlError(f"the daemon at {self.url} is not answering") from exc
        except HttpFailure as exc:
            raise ControlError(f"cannot talk to the daemon at {self.url}: {exc}") from exc
        self._check(answer)
        return answer

    def _check(self, answer: Answer) -> None:
        status = answer.status
        if status < 400:
            return
        message = _error_message(answer)
        if status in (400, 404, 409, 413, 422):
            raise UsageError(message)
        if status in (401, 403):
            where = self.data_dir / CONTROL_FILE if self.data_dir else "the control file"
            raise ControlError(
                f"the daemon at {self.url} refused us ({message}): is {where} from this daemon?"
            )
        if status == 503:
            raise ControlError(message)
        raise DaemonError(message)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self.request(method, path, **kwargs)
        try:
            return json.loads(answer.body)
        except ValueError:
            raise DaemonError(f"the daemon at {self.url} sent something that is not JSON") from None

    # --- the verbs: the daemon's answers, typed as peerfarm.control says they are ----------

    def status(
        self, job: str | None = None, frames: FrameQuery | None = None, *, wait: float = 0.0
    ) -> StatusView:
        """The farm, or one job with the page of frames ``frames`` asks for (no ``limit``:
        the daemon's default page). With ``wait`` (and ``job``), the daemon answers as soon as
        the job ends, or after ``wait`` seconds (``ended`` says which; a daemon older than this
        answers at once, without ``ended``)."""
        params: dict[str, str] = {}
        timeout = None
        if job is not None:
            params["job"] = job
            if wait > 0:
                params["wait"] = f"{wait:g}"
                timeout = self.timeout + wait
        if frames is not None:
            if frames.frames is not None:
                params["frames"] = frames.frames
            if frames.states:
                params["state"] = ",".join(frames.states)
            if frames.limit is not None:
                params["limit"] = str(frames.limit)
        answer = self.json("GET", "/api/status", params=params or None, timeout=timeout)
        return cast(StatusView, answer)

    def frame_states(self, job: str, since: int | None = None) -> FrameStatesView:
        params = {"since": str(since)} if since is not None else None
        answer = self.json("GET", f"/api/jobs/{_q(job)}/frame-states", params=params)
        return cast(FrameStatesView, answer)

    def peers(self) -> PeersView:
        return cast(PeersView, self.json("GET", "/api/peers"))

    def submit(self, fields: SubmitBody) -> SubmitAnswer:
        answer = self.json("POST", "/api/jobs", json_body=fields, timeout=LONG_TIMEOUT_S)
        return cast(SubmitAnswer, answer)

    def act(self, job: str, action: Action, frames: str | None = None) -> ActionAnswer:
        body = {"frames": frames} if frames is not None else {}
        answer = self.json("POST", f"/api/jobs/{_q(job)}/{action}", json_body=body)
        return cast(ActionAnswer, answer)

    def host(self, host: str, action: HostAction, *, now: bool = False) -> HostAnswer:
        body = {"now": now} if now else {}
        answer = self.json("POST", f"/api/peers/{_q(host)}/{action}", json_body=body)
        return cast(HostAnswer, answer)

    def logs(self, job: str, frame: int) -> LogsView:
        return cast(LogsView, self.json("GET", f"/api/jobs/{_q(job)}/frames/{frame}/log"))

    def fetch(self, job: str, dest: Path) -> FetchAnswer:
        path = f"/api/jobs/{_q(job)}/fetch"
        answer = self.json("POST", path, json_body={"dest": str(dest)}, timeout=LONG_TIMEOUT_S)
        return cast(FetchAnswer, answer)

    def check(self, job: str) -> CheckAnswer:
        path = f"/api/jobs/{_q(job)}/check"
        return cast(CheckAnswer, self.json("GET", path, timeout=LONG_TIMEOUT_S))

    def login_link(self) -> DashboardLink:
        """A one-time dashboard login link a browser on this machine can open."""
        link = cast(LoginLink, self.json("POST", "/api/login-link"))
        base = dashboard_url(self.web or self.url)
        return {"url": f"{base}{link['path']}", "expires_in": link["expires_in"]}

    def encode(self, job: str, out: Path, fps: float | None = None) -> EncodeAnswer:
        body: dict[str, Any] = {"out": str(out)}
        if fps is not None:
            body["fps"] = fps
        path = f"/api/jobs/{_q(job)}/encode"
        return cast(EncodeAnswer, self.json("POST", path, json_body=body, timeout=LONG_TIMEOUT_S))


def _q(ref: str) -> str:
    """A job reference made safe for one path segment."""
    return quote(ref, safe="")
