"""Uploads: a scene streamed to disk under the upload dir, then submitted to the real facade of
a simulated peer; caps and mistakes."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from peerfarm.api.access import Sessions
from tests.sim.api.conftest import ClientFactory, Peer, log_in

SCENE_BYTES = b"#version 3.7;\n" + bytes(range(256)) * 400  # binary-safe, > one chunk


async def test_upload_saves_the_scene_and_submits(
    make_client: ClientFactory, peer: Peer, tmp_path: Path, autojump_clock: trio.testing.MockClock
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
                    "option": ["width=64", "height=48"],
                    "name": "",
                    "allow_scripts": "on",
                },
            )
    assert response.status_code == 201, response.text
    job = response.json()["job"]
    assert not list((tmp_path / "uploads").glob("upload-*/*"))  # in the store now: it goes
    spec = peer.node.node.ledger.job(job)
    assert spec is not None
    assert (spec.name, spec.scene.name, spec.renderer) == ("spin", "spin.pov", "povray")
    assert (spec.frames, spec.chunk) == (tuple(range(1, 9)), 2)
    assert spec.options == {"width": 64, "height": 48, "allow_scripts": True}
    assert peer.node.node.store.path(spec.scene.digest.hex()).read_bytes() == SCENE_BYTES


async def test_an_upload_carries_the_tags_the_job_requires(
    make_client: ClientFactory, peer: Peer, autojump_clock: trio.testing.MockClock
) -> None:
    """The dashboard's form sends ``require`` as one text field, tags separated by commas."""
    sessions = Sessions()
    with trio.fail_after(10):
        async with make_client(bearer=None, sessions=sessions) as browser:
            response = await browser.post(
                "/api/upload",
                headers=await log_in(browser, sessions),
                files={"scene": ("spin.pov", SCENE_BYTES, "application/octet-stream")},
                data={"frames": "1-2", "require": "gpu, big"},
            )
    assert response.status_code == 201, response.text
    spec = peer.node.node.ledger.job(response.json()["job"])
    assert spec is not None and spec.options["require"] == ["big", "gpu"]


async def test_upload_mistakes_leave_nothing_behind(
    make_client: ClientFactory, tmp_path: Path, autojump_clock: trio.testing.MockClock
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
                unknown = await roomy.post(
                    "/api/upload", files=scene, data={"frames": "1", "option": "quality=high"}
                )
                assert unknown.status_code == 400 and "quality" in unknown.json()["error"]
                not_multipart = await roomy.post("/api/upload", json={"frames": "1"})
                assert not_multipart.status_code == 400
    assert list((tmp_path / "uploads").iterdir()) == []
