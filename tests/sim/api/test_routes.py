"""The control API's routes over the real facade of a simulated peer: JSON shapes (every key
the typed contract names), status codes, files and streams."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from peerfarm import farm as farm_module
from peerfarm.api.bodies import JSON_LIMIT
from peerfarm.control import (
    ActionAnswer,
    EncodeAnswer,
    FetchAnswer,
    FramePage,
    FrameStatesView,
    FrameView,
    JobView,
    LogsView,
    NodeInfo,
    PeerView,
    SubmitAnswer,
)
from peerfarm.errors import ControlError
from peerfarm.ledger.model import JobState
from tests.sim.api.conftest import RENDER_S, ClientFactory, Peer, build_app


def keys(view: type) -> set[str]:
    """Every key a typed answer always carries."""
    return set(view.__required_keys__)  # type: ignore[attr-defined]


async def submit(
    client: httpx.AsyncClient, scene: Path, frames: str = "1-4", **extra: object
) -> str:
    response = await client.post("/api/jobs", json={"scene": str(scene), "frames": frames, **extra})
    assert response.status_code == 201, response.text
    answer = response.json()
    assert set(answer) >= keys(SubmitAnswer)
    job: str = answer["job"]
    return job


async def test_status_and_peers_shapes(
    make_client: ClientFactory, peer: Peer, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        async with make_client() as client:
            job = await submit(client, peer.script(), name="spin")
            whole = (await client.get("/api/status")).json()
            assert set(whole["node"]) == keys(NodeInfo)
            assert set(whole["peers"][0]) == keys(PeerView)
            assert set(whole["jobs"][0]) == keys(JobView)
            assert "frames" not in whole and whole["archived"] == []
            one = (await client.get("/api/status", params={"job": job[:6]})).json()
            assert [j["id"] for j in one["jobs"]] == [job]
            assert [f["frame"] for f in one["frames"]] == [1, 2, 3, 4]
            assert all(set(f) == keys(FrameView) for f in one["frames"])
            by_name = (await client.get("/api/status", params={"job": "spin"})).json()
            assert by_name["jobs"][0]["id"] == job
            peers = (await client.get("/api/peers")).json()
            (me,) = peers["peers"]
            assert set(me) == keys(PeerView)
            assert me["name"] == peer.node.name and me["renderers"] == {"command": "fake-1"}


async def test_a_job_no_peer_can_render_is_accepted_with_a_warning(
    make_client: ClientFactory, scene: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        async with make_client() as client:
            response = await client.post("/api/jobs", json={"scene": str(scene), "frames": "1-2"})
            assert response.status_code == 201
            answer = response.json()
            assert answer["renderer"] == "povray" and answer["capable_peers"] == 0
            assert answer["warning"].startswith("spin waits: no peer can render it")
            job = (await client.get("/api/status", params={"job": "spin"})).json()["jobs"][0]
    assert job["blocked"] and job["frames_pending"] == 2


async def test_submit_sends_a_validated_request(
    make_client: ClientFactory, peer: Peer, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        async with make_client() as client:
            job = await submit(
                client,
                peer.script(),
                "1-10x3",
                name="spin",
                chunk=2,
                priority=5,
                options={"args": ["-q"]},
                cwd=str(tmp_path),
                retries=1,
                fps=12,
                encode=str(tmp_path / "o.mp4"),
                require=["gpu", "linux", "gpu"],
            )
    ledger = peer.node.node.ledger
    spec = ledger.job(job)
    assert spec is not None and spec.renderer == "command"
    assert (spec.frames, spec.chunk, ledger.priority(job), spec.retries) == ((1, 4, 7, 10), 2, 5, 1)
    assert spec.options == {"args": ["-q"], "fps": 12.0, "require": ["gpu", "linux"]}
    assert spec.output == str(tmp_path / "peerfarm-out" / "spin")


async def test_a_tiled_submit_is_a_job_of_tiles(
    make_client: ClientFactory, autojump_clock: trio.testing.MockClock
) -> None:
    scene = Path(__file__).resolve().parents[3] / "examples" / "blender" / "turntable.blend"
    with trio.fail_after(30):
        async with make_client() as client:
            refused = await client.post(
                "/api/jobs", json={"scene": str(scene), "frames": "1-2", "tiles": 4}
            )
            assert refused.status_code == 400
            assert "give one frame number, not 2" in refused.json()["error"]
            job = await submit(client, scene, "7", tiles=4)
            view = (await client.get("/api/status", params={"job": job})).json()
    assert view["jobs"][0]["tiles"] == 4 and view["jobs"][0]["tile_frame"] == 7
    assert [f["frame"] for f in view["frames"]] == [1, 2, 3, 4]


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
        ({"scene": "SCENE", "frames": "1", "options": {"width": "x"}}, 400, "option width"),
        ({"scene": "/no/such/scene.pov", "frames": "1"}, 400, "scene not found"),
        ({"scene": "SCENE", "frames": "1", "tiles": "x"}, 400, "'tiles' must be a number"),
        ({"scene": "SCENE", "frames": "1", "tiles": 1}, 400, "tiles must be a whole number from 2"),
        ({"scene": "SCENE", "frames": "1", "tiles": 4}, 400, "a povray job cannot be split"),
        ({"scene": "SCENE", "frames": "1", "require": 5}, 400, "'require' must be a list"),
        (
            {"scene": "SCENE", "frames": "1", "require": [f"t{n}" for n in range(9)]},
            400,
            "require: at most 8",
        ),
        ({"scene": "SCENE", "frames": "1", "options": {"require": ["a"]}}, 400, "set by peerfarm"),
    ],
)
async def test_submit_mistakes_are_400_with_a_message(
    make_client: ClientFactory,
    scene: Path,
    body: dict[str, object],
    status: int,
    needle: str,
    autojump_clock: trio.testing.MockClock,
) -> None:
    body = {k: (str(scene) if v == "SCENE" else v) for k, v in body.items()}
    with trio.fail_after(10):
        async with make_client() as client:
            response = await client.post("/api/jobs", json=body)
    assert response.status_code == status
    assert needle in response.json()["error"]


async def test_body_caps_and_bad_json(
    make_client: ClientFactory, autojump_clock: trio.testing.MockClock
) -> None:
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


async def test_unknown_job_is_404_everywhere(
    make_client: ClientFactory, autojump_clock: trio.testing.MockClock
) -> None:
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
    make_client: ClientFactory, peer: Peer, autojump_clock: trio.testing.MockClock
) -> None:
    peer.failing.update({1, 2})
    with trio.fail_after(10):
        async with make_client() as client:
            job = await submit(client, peer.script(), "1-4", retries=0)
            for action, state in [("pause", "paused"), ("resume", "active")]:
                response = await client.post(f"/api/jobs/{job[:8]}/{action}")
                assert response.status_code == 200
                answer = response.json()
                assert set(answer) == keys(ActionAnswer) and answer["action"] == action
                assert answer["state"] == state and "frames" not in answer
            await peer.settle(job)
            assert peer.state(job) == JobState.FAILED
            peer.failing.clear()
            retried = (await client.post(f"/api/jobs/{job}/retry")).json()
            assert set(retried) == keys(ActionAnswer) | {"frames"}
            assert retried["frames"] == 2 and retried["state"] == "active"
            some = (await client.post(f"/api/jobs/{job}/retry", json={"frames": "3"})).json()
            assert some["frames"] == 1
            bad = await client.post(f"/api/jobs/{job}/retry", json={"frames": "3-1"})
            assert bad.status_code == 400 and "'3-1'" in bad.json()["error"]
            cancelled = (await client.post(f"/api/jobs/{job}/cancel")).json()
            assert cancelled["state"] == "cancelled" and peer.state(job) == JobState.CANCELLED
            unknown = await client.post(f"/api/jobs/{job}/explode")
            assert unknown.status_code == 404


async def test_frame_log_thumbnail_and_output(
    make_client: ClientFactory, peer: Peer, autojump_clock: trio.testing.MockClock
) -> None:
    peer.failing.add(2)
    with trio.fail_after(10):
        async with make_client() as client:
            job = await submit(client, peer.script(), "1-2", retries=0)
            assert (await client.get(f"/api/jobs/{job}/frames/1/thumbnail")).status_code == 404
            assert (await client.get(f"/api/jobs/{job}/frames/1/output")).status_code == 404
            await peer.settle(job)
            log = (await client.get(f"/api/jobs/{job}/frames/2/log")).json()
            assert set(log) == keys(LogsView) and log["state"] == "failed"
            (attempt,) = log["attempts"]
            assert attempt["error"] == "fake failure of frame 2" and attempt["log_tail"] == "boom\n"
            missing = await client.get(f"/api/jobs/{job}/frames/99/log")
            assert missing.status_code == 400 and "frame 99 is not part of" in missing.text
            thumb = await client.get(f"/api/jobs/{job}/frames/1/thumbnail")
            assert thumb.headers["content-type"] == "image/png"
            assert thumb.content.startswith(b"\x89PNG")
            output = await client.get(f"/api/jobs/{job}/frames/1/output")
            assert output.status_code == 200 and output.content.startswith(b"\x89PNG")
            not_int = await client.get(f"/api/jobs/{job}/frames/x/log")
            assert not_int.status_code == 404


async def test_status_pages_frames_and_the_frame_map_is_one_string(
    make_client: ClientFactory, peer: Peer, scene: Path, autojump_clock: trio.testing.MockClock
) -> None:
    peer.failing.update({3, 15})
    with trio.fail_after(600):
        async with make_client() as client:
            big = await submit(client, scene, "1-2500")  # no peer renders it: all pending
            default = (await client.get("/api/status", params={"job": big})).json()
            assert [f["frame"] for f in default["frames"]] == list(range(1, 1001))
            assert set(default["frames_page"]) == keys(FramePage)
            assert default["frames_page"]["next"] == 1001
            assert default["jobs"][0]["frames_total"] == 2500  # the counts stay whole
            summary = (await client.get("/api/status", params={"job": big, "limit": "0"})).json()
            assert summary["frames"] == [] and summary["frames_page"]["matched"] == 2500

            job = await submit(client, peer.script(), "1-20", retries=0)
            params = {"job": job}
            await peer.settle(job)
            failed = (await client.get("/api/status", params={**params, "state": "failed"})).json()
            assert [(f["frame"], f["state"]) for f in failed["frames"]] == [
                (3, "failed"),
                (15, "failed"),
            ]
            assert failed["frames_page"]["matched"] == 2 and failed["frames_page"]["next"] is None
            assert failed["jobs"][0]["frames_done"] == 18
            some = (await client.get("/api/status", params={**params, "frames": "1-10"})).json()
            assert [f["frame"] for f in some["frames"]] == list(range(1, 11))
            assert [f["state"] for f in some["frames"]].count("failed") == 1
            states = (await client.get(f"/api/jobs/{job[:8]}/frame-states")).json()
            assert set(states) == keys(FrameStatesView)
            assert states["runs"] == [[1, 20, 1]] and states["count"] == 20
            assert states["states"] == "".join("f" if f in (3, 15) else "d" for f in range(1, 21))
            for bad, message in [
                ({**params, "state": "broken"}, "bad frame state"),
                ({**params, "frames": "9-1"}, "comes before"),
                ({**params, "limit": "-3"}, "'limit' must be from 0"),
                ({"state": "failed"}, "need a 'job'"),
            ]:
                response = await client.get("/api/status", params=bad)
                assert response.status_code == 400 and message in response.json()["error"]
            missing = await client.get("/api/jobs/nope/frame-states")
            assert missing.status_code == 404

            # since=seq: only the frames changed after that answer, by position.
            later = await submit(client, peer.script("later"), "1-6", retries=0)
            first = (await client.get(f"/api/jobs/{later}/frame-states")).json()
            assert "positions" not in first and len(first["states"]) == 6
            await peer.settle(later)
            since = {"since": str(first["seq"])}
            delta = (await client.get(f"/api/jobs/{later}/frame-states", params=since)).json()
            assert delta["seq"] > first["seq"]
            assert delta["positions"] == [0, 1, 2, 3, 4, 5] and delta["states"] == "ddfddd"
            quiet = {"since": str(delta["seq"])}
            none = (await client.get(f"/api/jobs/{later}/frame-states", params=quiet)).json()
            assert (none["positions"], none["states"]) == ([], "")
            ahead = {"since": str(delta["seq"] + 5)}  # not a seq this peer gave: the whole map
            whole = (await client.get(f"/api/jobs/{later}/frame-states", params=ahead)).json()
            assert "positions" not in whole and whole["states"] == "ddfddd"


async def test_archive_streams_a_zip_of_done_frames(
    make_client: ClientFactory, peer: Peer, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    peer.failing.add(2)
    with trio.fail_after(10):
        async with make_client() as client:
            job = await submit(client, peer.script(), "1-3", name="spin", retries=0)
            early = await client.get(f"/api/jobs/{job}/archive")
            assert early.status_code == 400 and "no finished frames" in early.json()["error"]
            await peer.settle(job)
            await peer.sim.wait_until(
                lambda: peer.sim.job_finished(job), timeout=30, what="delivered"
            )
            response = await client.get(f"/api/jobs/{job}/archive")
    assert response.status_code == 200
    assert 'filename="spin.zip"' in response.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == ["frame_0001.png", "frame_0003.png"]
        delivered = tmp_path / "peerfarm-out" / "spin" / "frame_0003.png"
        assert archive.read("frame_0003.png") == delivered.read_bytes()


async def test_fetch_encode_and_video(
    make_client: ClientFactory,
    peer: Peer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    encoded: list[tuple[list[Path], Path, float]] = []

    async def encode_video(frames: list[Path], out: Path, fps: float) -> Path:
        """ffmpeg's stand-in (tests/real/renderers/test_media.py runs the real one)."""
        encoded.append((frames, out, fps))
        out.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"".join(f.read_bytes() for f in frames))
        return out

    monkeypatch.setattr(farm_module, "encode_video", encode_video)
    with trio.fail_after(10):
        async with make_client() as client:
            job = await submit(client, peer.script(), "1-2")
            await peer.settle(job)
            fetched = await client.post(
                f"/api/jobs/{job}/fetch", json={"dest": str(tmp_path / "d")}
            )
            assert set(fetched.json()) == keys(FetchAnswer) and fetched.json()["files"] == 2
            assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
                "frame_0001.png",
                "frame_0002.png",
            ]
            relative = await client.post(f"/api/jobs/{job}/fetch", json={"dest": "d"})
            assert relative.status_code == 400
            no_dest = await client.post(f"/api/jobs/{job}/fetch", json={})
            assert no_dest.status_code == 400 and "'dest' is required" in no_dest.text
            out = tmp_path / "v.mp4"
            answer = await client.post(f"/api/jobs/{job}/encode", json={"out": str(out), "fps": 30})
            assert answer.json() == {"job": job, "video": str(out), "frames": 2, "fps": 30.0}
            assert set(answer.json()) == keys(EncodeAnswer) and out.is_file()
            video = await client.get(f"/api/jobs/{job}/video")
            again = await client.get(f"/api/jobs/{job}/video")
    assert video.headers["content-type"] == "video/mp4" and b"ftyp" in video.content
    assert again.content == video.content
    assert [fps for _, _, fps in encoded] == [30.0, 24.0]  # the video once (then cached)


async def test_control_errors_are_503_and_surprises_500_without_traceback(
    peer: Peer,
    tmp_path: Path,
    shutdown: trio.Event,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    def unreachable(job: str | None = None) -> object:
        raise ControlError("the farm is unreachable")

    def explode() -> object:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(peer.farm, "status", unreachable)
    monkeypatch.setattr(peer.farm, "peers", explode)
    app = build_app(peer, tmp_path, shutdown)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"Authorization": "Bearer test-token-0123456789"}
    with trio.fail_after(10):
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=headers
        ) as client:
            status = await client.get("/api/status")
            peers = await client.get("/api/peers")
    assert status.status_code == 503 and "unreachable" in status.json()["error"]
    assert peers.status_code == 500
    assert peers.json() == {"error": "internal error: RuntimeError"}


async def test_metrics_in_prometheus_text(
    make_client: ClientFactory, peer: Peer, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        async with make_client() as client:
            job = await submit(client, peer.script(), "1-2")
            await peer.settle(job)
            response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    assert "peerfarm_frames_rendered_total 2.0" in lines
    assert 'peerfarm_members{state="alive"} 1.0' in lines
    assert any(line.startswith("peerfarm_info{") for line in lines)


async def test_events_stream_a_change_and_stop_on_shutdown(
    make_client: ClientFactory,
    peer: Peer,
    scene: Path,
    shutdown: trio.Event,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[int] = []
    wait = peer.farm.wait_for_change

    async def hooked(since: int, timeout: float) -> int:
        seen.append(since)
        if len(seen) == 2:
            shutdown.set()  # the server stops: the waiting stream must end by itself
        return await wait(since, timeout)

    monkeypatch.setattr(peer.farm, "wait_for_change", hooked)
    with trio.fail_after(10):
        async with make_client() as client:
            await submit(client, scene, "1")  # a change; then none (no peer renders it)
            response = await client.get("/api/events")
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block for block in response.text.split("\n\n") if block.startswith("event:")]
    generation = seen[1]  # the peer's view changed since generation 0: one event, at once
    assert generation > 0 and seen == [0, generation]
    assert events == [f'event: change\ndata: {{"generation": {generation}}}']


async def test_index_placeholder_and_static_dashboard(
    peer: Peer, tmp_path: Path, shutdown: trio.Event, autojump_clock: trio.testing.MockClock
) -> None:
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<h1>dashboard</h1>")
    (static / "app.js").write_text("console.log(1)")
    with trio.fail_after(10):
        for static_dir, expected in [(None, "not installed"), (static, "<h1>dashboard</h1>")]:
            app = build_app(peer, tmp_path, shutdown, static_dir=static_dir)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                assert expected in (await c.get("/")).text
                js = await c.get("/static/app.js")
                assert js.status_code == (200 if static_dir else 404)


async def test_a_job_with_requirements_waits_for_a_tagged_peer(
    make_client: ClientFactory, peer: Peer, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """This peer has no tags: the job waits, says why, and the answer warns."""
    with trio.fail_after(10):
        async with make_client() as client:
            response = await client.post(
                "/api/jobs",
                json={"scene": str(peer.script()), "frames": "1-2", "require": "gpu"},
            )
            assert response.status_code == 201, response.text
            answer = response.json()
            assert answer["capable_peers"] == 0
            assert answer["warning"].endswith("waits: no peer can render it: peer1: not tagged gpu")
            view = (await client.get("/api/status", params={"job": answer["job"]})).json()
    assert view["jobs"][0]["waiting"] == {"peer1": "not tagged gpu"}


async def test_a_status_long_poll_answers_the_moment_the_job_ends(
    make_client: ClientFactory,
    peer: Peer,
    scene: Path,
    shutdown: trio.Event,
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``wait=S``: held until the job ends (every frame done or failed), answered at that
    virtual instant with ``ended``; a job still running is answered after S with ``ended``
    false; a server that stops ends the wait."""
    with trio.fail_after(60):
        async with make_client() as client:
            job = await submit(client, peer.script(), "1-3", retries=0)
            ledger = peer.node.node.ledger
            asked = trio.current_time()
            running = (await client.get("/api/status", params={"job": job, "wait": "0.5"})).json()
            assert running["ended"] is False and trio.current_time() - asked == pytest.approx(
                0.5, abs=0.05
            )
            assert running["jobs"][0]["frames_done"] < 3
            asked = trio.current_time()
            params = {"job": job, "wait": "60", "limit": "0"}
            answer = (await client.get("/api/status", params=params)).json()
            took = trio.current_time() - asked
            assert answer["ended"] is True and answer["jobs"][0]["frames_done"] == 3
            assert answer["frames"] == [] and ledger.counts(job).done == 3
            # Answered when the last frame was done (one virtual render per frame), not at 60 s.
            assert took < 3 * RENDER_S + 0.5
            again = (await client.get("/api/status", params=params)).json()
            assert again["ended"] is True and trio.current_time() - asked == pytest.approx(
                took, abs=0.05
            )

            stuck = await submit(client, scene, "1")  # no peer renders it: it never ends
            asked = trio.current_time()
            async with trio.open_nursery() as nursery:
                waiting: list[httpx.Response] = []

                async def poll() -> None:
                    params = {"job": stuck, "wait": "30"}
                    waiting.append(await client.get("/api/status", params=params))

                nursery.start_soon(poll)
                await trio.sleep(2)
                shutdown.set()  # the server stops: the held request is answered at once
            assert trio.current_time() - asked == pytest.approx(2, abs=0.05)
            assert waiting[0].json()["ended"] is False
            for bad, message in [
                ({"job": job, "wait": "61"}, "'wait' must be from 0 to 60"),
                ({"job": job, "wait": "soon"}, "'wait' must be a number"),
                ({"wait": "1"}, "need a 'job'"),
            ]:
                response = await client.get("/api/status", params=bad)
                assert response.status_code == 400 and message in response.json()["error"]
