"""Fixtures for the control API: a FakeFarm behind the real app, reached through ASGI.

``make_client(host)`` chooses the server address the app sees: 127.0.0.1 is a loopback bind,
anything else is a bind beyond loopback (login rules apply).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
from starlette.applications import Starlette

from peerfarm.api import create_app
from peerfarm.api.access import Sessions
from tests.api.fakes import FakeFarm

TOKEN = "test-token-0123456789"
PASSWORD = "farm-password-abc"


@pytest.fixture
def fake(tmp_path: Path) -> FakeFarm:
    return FakeFarm(tmp_path / "farm")


@pytest.fixture
def shutdown() -> trio.Event:
    return trio.Event()


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    path = tmp_path / "spin.pov"
    path.write_text("camera { location <0, 0, -5> }\n")
    return path


def build_app(
    fake: FakeFarm, tmp_path: Path, shutdown: trio.Event, *, public: bool = False, **kw: object
) -> Starlette:
    return create_app(
        fake,
        token=TOKEN,
        login_password=kw.pop("login_password", PASSWORD),  # type: ignore[arg-type]
        public=public,
        upload_dir=tmp_path / "uploads",
        shutdown=shutdown,
        **kw,  # type: ignore[arg-type]
    )


ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


async def log_in(browser: httpx.AsyncClient, sessions: Sessions) -> dict[str, str]:
    """Log ``browser`` in the way the dashboard does with a one-time link; returns the headers
    its actions carry (the marker and the session's action key)."""
    mark = {"X-Peerfarm": "1"}
    response = await browser.post("/api/login", json={"code": sessions.new_link()}, headers=mark)
    assert response.status_code == 200, response.text
    return {**mark, "X-Peerfarm-Key": response.json()["key"]}


@pytest.fixture
def make_client(fake: FakeFarm, tmp_path: Path, shutdown: trio.Event) -> ClientFactory:
    @asynccontextmanager
    async def make(
        host: str = "127.0.0.1", *, public: bool = False, bearer: str | None = TOKEN, **kw: object
    ) -> AsyncIterator[httpx.AsyncClient]:
        app = build_app(fake, tmp_path, shutdown, public=public, **kw)
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url=f"http://{host}:7947", headers=headers
        ) as client:
            yield client

    return make
