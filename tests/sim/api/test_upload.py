"""Uploads: a scene streamed to disk under the upload dir, then submitted; caps and mistakes."""

from __future__ import annotations

from pathlib import Path

import trio

from peerfarm.api.access import Sessions
from tests.api.conftest import ClientFactory, log_in
from tests.api.fakes import FakeFarm

SCENE_BYTES = b"#version 3.7;\n" + bytes(range(256)) * 400  # binary-safe, > one chunk


async def test_upload_saves_the_scene_and_submits(
    make_client: ClientFactory, fake: FakeFarm, tmp_path: Path
) -> None:
    sessions = Sessions()
    with trio.fail_after(10):
        async with make_client(bearer=None, sessions=sessions) as browser:
            response = await browser.post(
                "/api/upload",
                headers=await log_in(browser, sessions),
                files={"scene": ("../../spin.pov", SCENE_BYTES, "application/octet-stream")},
                data={
                    "frames": "1-8",
                    "chunk": "2",
                    "option": ["width=64", "quality=high"],
                    "name": "",
                    "allow_scripts": "on",
                },
            )
    assert response.status_code == 201, response.text
    _, request = fake.calls[-1]
    assert request.scene.name == "spin.pov"
    assert request.scene.parent.parent == tmp_path / "uploads"  # no escape via the file name
    assert request.scene.read_bytes() == SCENE_BYTES
    assert (request.frames, request.chunk, request.name) == ("1-8", 2, None)
    assert request.options == {"width": 64, "quality": "high"}
    assert request.allow_scripts is True


async def test_upload_mistakes_leave_nothing_behind(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    scene = {"scene": ("spin.pov", SCENE_BYTES, "application/octet-stream")}
    with trio.fail_after(10):
        async with make_client(upload_limit=50_000) as client:
            big = await client.post("/api/upload", files=scene, data={"frames": "1"})
            assert big.status_code == 413
            async with make_client() as roomy:
                no_frames = await roomy.post("/api/upload", files=scene)
                assert no_frames.status_code == 400 and "'frames'" in no_frames.json()["error"]
                bad = await roomy.post("/api/upload", files=scene, data={"frames": "1-2y"})
                assert bad.status_code == 400 and "'1-2y'" in bad.json()["error"]
                no_file = await roomy.post("/api/upload", data={"frames": "1"})
                assert no_file.status_code == 400
                option = await roomy.post(
                    "/api/upload", files=scene, data={"frames": "1", "option": "width"}
                )
                assert "KEY=VALUE" in option.json()["error"]
                not_multipart = await roomy.post("/api/upload", json={"frames": "1"})
                assert not_multipart.status_code == 400
    assert list((tmp_path / "uploads").iterdir()) == []
