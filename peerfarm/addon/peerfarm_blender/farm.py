"""The add-on's side of the control API: find the local daemon, submit, read the farm's state.

Standard library only (Blender's Python has nothing else), and no ``bpy``: the panel and
operators in ``__init__`` call these functions, tests call them directly. The rules are the
CLI's (``peerfarm.client``): the daemon of a data dir writes ``control.json`` =
``{"url", "token", "pid", "web"}`` there; every request carries the token as a bearer token and
``X-Peerfarm: 1``, and never goes through a proxy. The data dir is the add-on's preference,
else ``$PEERFARM_DATA_DIR``, else the platform's user data dir (platformdirs' choice for
"peerfarm", which is where ``peerfarm up`` keeps it by default).

Every failure is a :class:`FarmError` whose message is one line a user can act on.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CONTROL_FILE = "control.json"
ENV_DATA_DIR = "PEERFARM_DATA_DIR"
#: Seconds to wait for an answer: short for the panel's polling, long for a submit (it packs).
POLL_TIMEOUT_S = 3.0
SUBMIT_TIMEOUT_S = 600.0


class FarmError(Exception):
    """Something the user can fix, in one line."""


def default_data_dir(environ: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """Where ``peerfarm up`` keeps its data by default (platformdirs' ``user_data_dir``)."""
    env = os.environ if environ is None else environ
    if env.get(ENV_DATA_DIR):
        return Path(env[ENV_DATA_DIR]).expanduser()
    platform = platform or sys.platform
    home = Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())
    if platform == "darwin":
        return home / "Library" / "Application Support" / "peerfarm"
    if platform.startswith("win"):
        local = env.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(local) / "peerfarm" / "peerfarm"
    xdg = env.get("XDG_DATA_HOME", "").strip()
    return (Path(xdg) if xdg else home / ".local" / "share") / "peerfarm"


def data_dir(preference: str = "", environ: Mapping[str, str] | None = None) -> Path:
    """The add-on preference when set, else the default data dir."""
    if preference.strip():
        return Path(preference.strip()).expanduser()
    return default_data_dir(environ)


class Farm:
    """The control API of the daemon whose ``control.json`` is in ``folder``."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @classmethod
    def connect(cls, folder: Path) -> Farm:
        path = folder / CONTROL_FILE
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            return cls(str(info["url"]), str(info["token"]))
        except FileNotFoundError:
            raise FarmError(
                f"no peerfarm daemon running for {folder}: start one with `peerfarm up`"
            ) from None
        except PermissionError:
            raise FarmError(f"cannot read {path}: it belongs to another user") from None
        except (OSError, ValueError, KeyError, TypeError):
            raise FarmError(f"{path} is unreadable: restart the daemon") from None

    def request(
        self, method: str, path: str, body: Any = None, *, timeout: float = POLL_TIMEOUT_S
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("X-Peerfarm", "1")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, timeout=timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise FarmError(_error_line(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            message = f"the peerfarm daemon at {self.url} does not answer ({reason})"
            raise FarmError(message) from None
        except ValueError:
            raise FarmError(f"the daemon at {self.url} sent something that is not JSON") from None

    def status(self, job: str | None = None) -> dict[str, Any]:
        query = "?" + urllib.parse.urlencode({"job": job}) if job else ""
        answer = self.request("GET", "/api/status" + query)
        if not isinstance(answer, dict):
            raise FarmError("the daemon's status is not a JSON object")
        return answer

    def submit(self, body: Mapping[str, Any]) -> dict[str, Any]:
        answer = self.request("POST", "/api/jobs", dict(body), timeout=SUBMIT_TIMEOUT_S)
        if not isinstance(answer, dict) or "job" not in answer:
            raise FarmError("the daemon's answer to the submit has no job")
        return answer


def _error_line(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        body = {}
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"]).splitlines()[0]
    if exc.code in (401, 403):
        return "the daemon refused the token of its control.json: restart it"
    return f"the daemon answered HTTP {exc.code}"


# --- pure helpers for the panel --------------------------------------------------------------


def frames_text(start: int, end: int, step: int = 1) -> str:
    """A scene's frame range as peerfarm writes it: ``7``, ``1-48``, ``1-48x2``."""
    if end <= start:
        return str(start)
    text = f"{start}-{end}"
    return text if step <= 1 else f"{text}x{step}"


def tags(text: str) -> list[str]:
    """``"gpu, big"`` -> ``["gpu", "big"]``."""
    return [tag.strip() for tag in text.split(",") if tag.strip()]


def submit_body(
    blend: Path,
    frames: str,
    *,
    priority: int = 0,
    require: str = "",
    chunk: int = 1,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``POST /api/jobs`` for the open file; outputs go to ``peerfarm-out/<name>/`` beside it."""
    body: dict[str, Any] = {
        "scene": str(blend),
        "frames": frames,
        "priority": priority,
        "chunk": max(1, chunk),
        "cwd": str(blend.parent),
        "options": dict(options or {}),
    }
    if wanted := tags(require):
        body["require"] = wanted
    return body


def farm_line(status: Mapping[str, Any]) -> str:
    """``3 peers alive, 2 of 4 slots free``."""
    alive = [p for p in status.get("peers", []) if p.get("state") == "alive"]
    slots = sum(int(p.get("slots", 0)) for p in alive)
    free = sum(max(0, int(p.get("slots", 0)) - int(p.get("busy", 0))) for p in alive)
    peers = "1 peer" if len(alive) == 1 else f"{len(alive)} peers"
    return f"{peers} alive, {free} of {slots} slots free"


def job_of(status: Mapping[str, Any], job: str) -> dict[str, Any] | None:
    for view in status.get("jobs", []):
        if view.get("id") == job:
            return dict(view)
    return None


def job_line(view: Mapping[str, Any]) -> str:
    """``shot: active, 12/48 done, 2 rendering, 1 failed``."""
    parts = [f"{view.get('name', '?')}: {view.get('state', '?')}"]
    parts.append(f"{view.get('frames_done', 0)}/{view.get('frames_total', 0)} done")
    if view.get("frames_rendering"):
        parts.append(f"{view['frames_rendering']} rendering")
    if view.get("frames_failed"):
        parts.append(f"{view['frames_failed']} failed")
    return ", ".join(parts)


def waiting_line(view: Mapping[str, Any]) -> str | None:
    """Why the job waits: the farm-wide block, else each peer's reason (``a: paused``)."""
    if view.get("blocked"):
        return str(view["blocked"])
    waiting = view.get("waiting") or {}
    if not waiting or not view.get("frames_pending"):
        return None
    return "waiting: " + "; ".join(f"{peer}: {why}" for peer, why in sorted(waiting.items()))


def finished(view: Mapping[str, Any]) -> bool:
    return view.get("state") in ("done", "failed", "cancelled")
