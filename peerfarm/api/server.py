"""Serving the control API over HTTP inside a trio nursery (hypercorn's trio worker).

This module owns the HTTP server: binding, reporting the real bound addresses (port 0 works),
and a prompt, graceful stop when ``shutdown`` is set. Bind failures become ``BindError``.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from hypercorn.typing import Framework
from starlette.types import ASGIApp

from peerfarm.api.framing import finish_request_body
from peerfarm.errors import UsageError

log = logging.getLogger(__name__)

#: Seconds open connections get to finish once shutdown is requested.
GRACEFUL_TIMEOUT_S = 3.0


class BindError(UsageError):
    """The HTTP server could not listen on an address (in use, not ours, malformed)."""


def http_config(binds: list[str], *, graceful_timeout: float = GRACEFUL_TIMEOUT_S) -> Config:
    """A hypercorn config for ``binds`` ("HOST:PORT"; port 0 picks a free one)."""
    config = Config()
    config.bind = list(binds)
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = log
    config.include_server_header = False
    return config


async def serve_http(
    app: ASGIApp,
    binds: list[str],
    *,
    shutdown: trio.Event,
    graceful_timeout: float = GRACEFUL_TIMEOUT_S,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``binds`` until ``shutdown`` is set.

    Reports the bound base URLs (e.g. ``["http://127.0.0.1:41234"]``) through ``task_status``.
    An answer given before the request's body arrived keeps the connection usable
    (:func:`~peerfarm.api.framing.finish_request_body`).
    """
    if not binds:
        raise BindError("no address to serve HTTP on")
    config = http_config(binds, graceful_timeout=graceful_timeout)
    try:
        await serve(
            cast(Framework, finish_request_body(cast(Any, app))),
            config,
            shutdown_trigger=shutdown.wait,
            task_status=task_status,
        )
    except (OSError, BaseExceptionGroup) as exc:
        error = _first_os_error(exc)
        if error is None:
            raise
        reason = error.strerror or str(error)
        raise BindError(f"cannot serve HTTP on {', '.join(binds)}: {reason}") from None


def _first_os_error(exc: BaseException) -> OSError | None:
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_os_error(inner)
            if found is not None:
                return found
    return None
