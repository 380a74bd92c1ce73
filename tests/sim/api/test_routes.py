"""The control API's routes against a FakeFarm: JSON shapes, status codes, files and streams."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import httpx
import pytest
import trio

from peerfarm.api.bodies import JSON_LIMIT
from tests.api.conftest import ClientFactory, build_app
from tests.api.fakes import FakeFarm

PEER_KEYS = {"id", "name", "address", "state", "slots", "busy", "renderers"}
JOB_KEYS = {
    "id",
    "name",
    "state",
    "priority",
    "frames_total",
    "frames_done",
    "frames_failed",
    "frames_rendering",
    "submitted_by",
    "output",
}
FRAME_KEYS = {"frame", "state", "peer", "attempts", "seconds", "delivered"}


async def submit(
    client: httpx.AsyncClient, scene: Path, frames: str = "1-4", **extra: object
) -> str:
    response = await client.post("/api/jobs", json={"scene": str(scene), "frames": frames, **extra})
    assert response.status_code == 201, response.text
    job: str = response.json()["job"]
    return job


async def test_status_and_peers_shapes(make_client: ClientFactory, scene: Path) -> None:
    with trio.fail_after(10):
        async with make_client() as client:
            job = await submit(client, scene, name="spin")
            whole = (await client.get("/api/status")).json()
            assert set(whole["peers"][0]) >= PEER_KEYS
            assert set(whole["jobs"][0]) >= JOB_KEYS
            assert "frames" not in whole
            one = (await client.get("/api/status", params={"job": job[:6]})).json()
            assert [j["id"] for j in one["jobs"]] == [job]
            assert [f["frame"] for f in one["frames"]] == [1, 2, 3, 4]
            assert set(one["frames"][0]) >= FRAME_KEYS
            by_name = (await client.get("/api/status", params={"job": "spin"})).json()
            assert by_name["jobs"][0]["id"] == job
            peers = (await client.get("/api/peers")).json()
            assert peers["peers"][0]["host"] == "fakehost"


async def test_submit_sends_a_validated_request(
    make_client: ClientFactory, scene: Path, fake: FakeFarm, tmp_path: Path
) -> None:
    with trio.fail_after(10):
        async with make_client() as client:
            await submit(
                client,
                scene,
                "1-10x3",
                chunk=2,
                priority=5,
                options={"width": 64},
                cwd=str(tmp_path),
                retries=1,
                fps=12,
                encode=str(tmp_path / "o.mp4"),
            )
    kind, request = fake.calls[-1]
    assert kind == "submit"
    assert (request.frames, request.chunk, request.priority) == ("1-10x3", 2, 5)
    assert request.options == {"width": 64}
    assert (request.cwd, request.retries, request.fps) == (tmp_path, 1, 12.0)
    assert request.encode == tmp_path / "o.mp4"


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"frames": "1-4"}, 400, "'scene' is required"),
        ({"scene": "relative.pov", "frames": "1"}, 400, "absolute path"),
        ({"scene": "SCENE", "frames": "1-3,9-x"}, 400, "'9-x'"),
        ({"scene": "SCENE", "frames": "1", "bogus": 1}, 400, "bogus"),
        ({"scene": "SCENE", "frames": "1", "chunk": "many"}, 400, "'chunk' must be a number"),
        ({"scene": "SCENE", "frames": "1", "chunk": 0}, 400, "'chunk' must be from 1 to 10,000"),
        ({"scene": "SCENE", "frames": "1", "renderer": "maya"}, 400, "unknown renderer"),
        ({"scene": "/no/such/scene.pov", "frames": "1"}, 400, "scene not found"),
    ],
)
async def test_submit_mistakes_are_400_with_a_message(
    make_client: ClientFactory, scene: Path, body: dict[str, object], status: int, needle: str
) -> None:
    body = {k: (str(scene) if v == "SCENE" else v) for k, v in body.items()}
    with trio.fail_after(10):
        async with make_client() as client:
            response = await client.post("/api/jobs", json=body)
    assert response.status_code == status
    assert needle in response.json()["error"]


async def test_body_caps_and_bad_json(make_client: ClientFactory) -> None:
    with trio.fail_after(10):
        async with make_client() as client:
            big = await client.post(
                "/api/jobs",
                content=b"{" + b" " * JSON_LIMIT + b"}",
                headers={"Content-Type": "application/json"},
            )
            assert big.status_code == 413
            bad = await client.post("/api/jobs", content=b"{not json")
            assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]
            array = await client.post("/api/jobs", json=[1, 2])
            assert array.status_code == 400


async def test_unknown_job_is_404_everywhere(make_client: ClientFactory) -> None:
    with trio.fail_after(10):
        async with make_client() as client:
            for method, path in [
                ("GET", "/api/status?job=nope"),
                ("POST", "/api/jobs/nope/cancel"),
                ("GET", "/api/jobs/nope/frames/1/log"),
                ("GET", "/api/jobs/nope/archive"),
                ("POST", "/api/jobs/nope/fetch"),
                ("GET", "/api/jobs/nope/video"),
            ]:
                response = await client.request(method, path)
                assert response.status_code == 404, path
                assert "no job 'nope'" in response.json()["error"]


async def test_actions_reach_the_farm(
    make_client: ClientFactory, scene: Path, fake: FakeFarm
) -> None:
    with trio.fail_after(10):
        async with make_client() as client:
            job = await submit(client, scene, "1-4")
            fake.finish(job, [1, 2], fail=True)
            for action in ("pause", "resume", "cancel"):
                response = await client.post(f"/api/jobs/{job[:8]}/{action}")
                assert response.status_code == 200
                assert response.json()["action"] == action
            assert fake.jobs[job].state == "cancelled"
            retried = await client.post(f"/api/jobs/{job}/retry")
            assert retried.json()["frames"] == 2
            some = await client.post(f"/api/jobs/{job}/retry", json={"frames": "3"})
            assert some.json()["frames"] == 1 and fake.calls[-1] == ("retry", (job, "3"))
            bad = await client.post(f"/api/jobs/{job}/retry", json={"frames": "3-1"})
            assert bad.status_code == 400 and "'3-1'" in bad.json()["error"]
            unknown = await client.post(f"/api/jobs/{job}/explode")
            assert unknown.status_code == 404


async def test_frame_log_thumbnail_and_output(
    make_client: ClientFactory, scene: Path, fake: FakeFarm
) -> None:
    with trio.fail_after(10):
        async with make_client() as client:
            job = await submit(client, scene, "1-2")
            assert (await client.get(f"/api/jobs/{job}/frames/1/thumbnail")).status_code == 404
            assert (await client.get(f"/api/jobs/{job}/frames/1/output")).status_code == 404
            fake.finish(job, [1])
            log = (await client.get(f"/api/jobs/{job}/frames/1/log")).json()
            assert log["state"] == "done" and "PROGRESS" in log["attempts"][0]["log_tail"]
            missing = await client.get(f"/api/jobs/{job}/frames/99/log")
            assert missing.status_code == 400 and "no frame 99" in missing.json()["error"]
            thumb = await client.get(f"/api/jobs/{job}/frames/1/thumbnail")
            assert thumb.headers["content-type"] == "image/png"
            assert thumb.content.startswith(b"\x89PNG")
            output = await client.get(f"/api/jobs/{job}/frames/1/output")
            assert output.status_code == 200 and output.content.startswith(b"\x89PNG")
            not_int = await client.get(f"/api/jobs/{job}/frames/x/log")
            assert not_int.status_code == 404


async def test_archive_streams_a_zip_of_done_frames(
    make_client: ClientFactory, scene: Path, fake: FakeFarm
) -> None:
    with trio.fail_after(10):
        async with make_client() as client:
            job = await submit(client, scene, "1-3", name="spin")
            early = await client.get(f"/api/jobs/{job}/archive")
            assert early.status_code == 400 and "no finished frames" in early.json()["error"]
            fake.finish(job, [1, 3])
            response = await client.get(f"/api/jobs/{job}/archive")
    assert response.status_code == 200
    assert 'filename="spin.zip"' in response.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == ["spin_0001.png", "spin_0003.png"]
        expected = fake.root / "outputs" / job / "spin_0003.png"
        assert archive.read("spin_0003.png") == expected.read_bytes()


async def test_fetch_encode_and_video(
    make_client: ClientFactory, scene: Path, fake: FakeFarm, tmp_path: Path
) -> None:
    with trio.fail_after(10):
        async with make_client() as client:
            job = await submit(client, scene, "1-2")
            fake.finish(job)
            fetched = await client.post(
                f"/api/jobs/{job}/fetch", json={"dest": str(tmp_path / "d")}
            )
            assert fetched.json()["files"] == 2 and len(list((tmp_path / "d").iterdir())) == 2
            relative = await client.post(f"/api/jobs/{job}/fetch", json={"dest": "d"})
            assert relative.status_code == 400
            no_dest = await client.post(f"/api/jobs/{job}/fetch", json={})
            assert no_dest.status_code == 400 and "'dest' is required" in no_dest.text
            out = tmp_path / "v.mp4"
            encoded = await client.post(
                f"/api/jobs/{job}/encode", json={"out": str(out), "fps": 30}
            )
            assert encoded.json()["fps"] == 30 and out.is_file()
            video = await client.get(f"/api/jobs/{job}/video")
            again = await client.get(f"/api/jobs/{job}/video")
    assert video.headers["content-type"] == "video/mp4" and b"ftyp" in video.content
    assert again.content == video.content
    encodes = [c for c in fake.calls if c[0] == "encode"]
    assert len(encodes) == 2  # the explicit one, then the video once (cached the second time)


async def test_control_errors_are_503_and_surprises_500_without_traceback(
    fake: FakeFarm, tmp_path: Path, shutdown: trio.Event, make_client: ClientFactory
) -> None:
    with trio.fail_after(10):
        fake.broken = True
        async with make_client() as client:
            response = await client.get("/api/status")
        assert response.status_code == 503 and "unreachable" in response.json()["error"]
        fake.broken = False

        def explode() -> dict[str, object]:
            raise RuntimeError("secret internals")

        fake.peers = explode  # type: ignore[method-assign]
        app = build_app(fake, tmp_path, shutdown)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            response = await c.get("/api/peers")
    assert response.status_code == 500
    assert response.json() == {"error": "internal error: RuntimeError"}


async def test_metrics_in_prometheus_text(
    make_client: ClientFactory, scene: Path, fake: FakeFarm
) -> None:
    with trio.fail_after(10):
        async with make_client() as client:
            job = await submit(client, scene, "1-2")
            fake.finish(job)
            response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert "peerfarm_frames_rendered 2.0" in lines
    assert "peerfarm_gossip_sent 12.0" in lines
    assert not any(line.startswith("peerfarm_flag") for line in lines)


async def test_events_stream_a_change_and_stop_on_shutdown(
    make_client: ClientFactory, fake: FakeFarm, shutdown: trio.Event
) -> None:
    seen: list[int] = []

    def hook(since: int) -> None:
        seen.append(since)
        if len(seen) == 1:
            fake.changed()  # something happens while the first client waits
        if len(seen) == 2:
            shutdown.set()  # the server stops: the waiting stream must end by itself

    fake.wait_hook = hook
    with trio.fail_after(10):
        async with make_client() as client:
            response = await client.get("/api/events")
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block for block in response.text.split("\n\n") if block.startswith("event:")]
    assert events == ['event: change\ndata: {"generation": 2}']
    assert seen == [0, 2]


async def test_index_placeholder_and_static_dashboard(
    fake: FakeFarm, tmp_path: Path, shutdown: trio.Event
) -> None:
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<h1>dashboard</h1>")
    (static / "app.js").write_text("console.log(1)")
    with trio.fail_after(10):
        for static_dir, expected in [(None, "not installed"), (static, "<h1>dashboard</h1>")]:
            app = build_app(fake, tmp_path, shutdown, static_dir=static_dir)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                assert expected in (await c.get("/")).text
                js = await c.get("/static/app.js")
                assert js.status_code == (200 if static_dir else 404)
