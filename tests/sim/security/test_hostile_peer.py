"""A peer that holds the farm key but lies: unsafe names, forged jobs, overwrites (issue 10).

Real nodes on the in-memory network under virtual time (:class:`peerfarm.testing.SimFarm`); the
"hostile" peer is an ordinary node whose ledger writes are hand-made, sent with the farm key like
any peer's. Each test asserts what reaches the disk, not only what the ledger says.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import pytest
import trio
import trio.testing

from peerfarm.control import SubmitRequest
from peerfarm.errors import DecodeError
from peerfarm.farm import Farm
from peerfarm.ledger import codec
from peerfarm.ledger.model import FrameRecord, JobState, Output, SceneRef, Status
from peerfarm.peer.delivery import delivery_target
from peerfarm.peer.gossip import T_LEDGER
from peerfarm.testing import SimFarm, SimPeer, output_files

HOSTILE_NAMES = ["../escape.txt", "/etc/escape.txt", "CON", "con.txt", "a" * 201 + ".png", ".."]


def _done_delta(job: str, frame: int, node: str, name: str, version: int) -> list[object]:
    data = b"pwned\n"
    record = FrameRecord(
        epoch=0,
        status=Status.DONE,
        attempt=1,
        stamp=1 << 40,
        node=node,
        outputs=(Output(name, hashlib.sha256(data).digest(), len(data)),),
    )
    return codec.encode_delta((("F", job, frame), record, node, version))


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_decoder_refuses_an_output_name_that_is_not_one_plain_file_name(name: str) -> None:
    wire = _done_delta("0123456789abcdef", 1, "fedcba9876543210", name, 1)
    with pytest.raises(DecodeError, match="output name"):
        codec.decode_delta(wire)


def test_decoder_keeps_accepting_ordinary_output_names() -> None:
    wire = _done_delta("0123456789abcdef", 1, "fedcba9876543210", "frame_0001.png", 1)
    _key, value, _origin, _version = codec.decode_delta(wire)
    assert isinstance(value, FrameRecord) and value.outputs[0].name == "frame_0001.png"


async def test_keyed_peer_sending_traversal_output_names_writes_nothing_outside(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    farm = SimFarm(tmp_path, seed=7, renderer_seconds=0.5)
    async with farm.running():
        submitter, _renderer, hostile = await farm.start(3, renderers=2)
        job = await farm.submit(submitter, "1-4", name="shot")
        await farm.wait_until(lambda: hostile.node.ledger.job(job) is not None, timeout=10)
        before = submitter.node.stats.bad_messages
        # The hostile peer "finishes" every frame first, with names aimed outside the folder.
        for version, (frame, name) in enumerate(
            zip(range(1, 5), HOSTILE_NAMES[:4], strict=True), start=1
        ):
            message = {
                "t": T_LEDGER,
                "d": [_done_delta(job, frame, hostile.node_id, name, version)],
            }
            await hostile.node.transport.send_datagram(submitter.address, message)
        await farm.wait_until(lambda: farm.job_finished(job), timeout=60, what="job done")
        ledger = submitter.node.ledger
        assert submitter.node.stats.bad_messages >= before + 4
        for frame in range(1, 5):
            record = ledger.frame(job, frame)
            assert record.status == Status.DONE and record.node != hostile.node_id
        expected = farm.expected_files(job)
        farm.check_invariants()
    spec = ledger.job(job)
    assert spec is not None
    out = Path(spec.output)
    assert sorted(expected) == [f"frame_{f:04d}.txt" for f in range(1, 5)]
    assert output_files(out) == expected
    escaped = [p for p in tmp_path.rglob("escape*")] + [Path("/etc/escape.txt")]
    assert not any(p.exists() for p in escaped)


async def test_forged_job_naming_another_peer_as_submitter_is_never_delivered(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """submitted_by and output are plain fields: a keyed peer can write a job that names the
    victim as its submitter and ~/.ssh as its folder. The victim delivers only its own jobs."""
    caplog.set_level(logging.WARNING, logger="peerfarm")
    target = tmp_path / "victim-home" / ".ssh"
    farm = SimFarm(tmp_path, seed=8, renderer_seconds=0.2, invariants="converged")
    async with farm.running():
        victim, hostile = await farm.start(2)
        scene = tmp_path / "evil.sh"
        scene.write_bytes(b"#!/bin/sh\n")
        digest = hostile.node.store.put_file(scene)
        honest = hostile.node.ledger.new_job(
            name="authorized_keys",
            submitter_name="victim",
            renderer="command",
            options={},
            scene=SceneRef(bytes.fromhex(digest), "evil.sh", scene.stat().st_size),
            frames=[1, 2],
            wall_ms=farm.wall_ms(),
            output=str(target),
        )
        forged = dataclasses.replace(honest, submitted_by=victim.node_id)
        forged = dataclasses.replace(forged, id=codec.spec_id(forged))
        await hostile.node.write(lambda ledger, wall: ledger.submit(forged))
        await farm.wait_until(
            lambda: farm.job_finished(forged.id, delivered=False), timeout=30, what="rendered"
        )
        assert victim.node.ledger.job_state(forged.id) == JobState.DONE
        await trio.sleep(5)  # several delivery rounds
    assert not target.exists()
    assert not any(victim.node.ledger.delivered(forged.id, f) for f in (1, 2))
    assert any("forged" in r.getMessage() for r in caplog.records)


async def test_asset_path_traversal_fails_the_frame_with_a_clear_error(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    farm = SimFarm(tmp_path, seed=9, renderer_seconds=0.2)
    async with farm.running():
        renderer, hostile = await farm.start(2)
        payload = tmp_path / "payload"
        payload.write_bytes(b"evil\n")
        digest = bytes.fromhex(hostile.node.store.put_file(payload))
        spec = hostile.node.ledger.new_job(
            name="trojan",
            submitter_name="hostile",
            renderer="command",
            options={},
            scene=SceneRef(digest, "scene.sh", 5),
            assets=[SceneRef(digest, "../../../escape.sh", 5)],
            frames=[1],
            wall_ms=farm.wall_ms(),
            retries=0,
        )
        await hostile.node.write(lambda ledger, wall: ledger.submit(spec))
        await farm.wait_until(
            lambda: (
                renderer.node.ledger.job(spec.id) is not None
                and renderer.node.ledger.job_state(spec.id) == JobState.FAILED
            ),
            timeout=30,
            what="frame failed",
        )
        error = renderer.node.ledger.frame(spec.id, 1).error
    assert "unsafe file name" in error and "'..'" in error
    assert not list(tmp_path.rglob("escape.sh"))


async def _submit(peer: SimPeer, root: Path, output: Path, **options: object) -> str:
    scene = root / "render.sh"
    scene.write_text("#!/bin/sh\n")
    request = SubmitRequest(
        scene=scene,
        frames="1-3",
        renderer="command",
        name="shot",
        output=output,
        options=dict(options),
        cwd=root,
    )
    return str((await Farm(peer.node).submit(request))["job"])


async def test_delivery_never_overwrites_a_file_it_did_not_write(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "frame_0002.txt").write_text("the artist's own work\n")
    farm = SimFarm(tmp_path, seed=10, renderer_seconds=0.2)
    async with farm.running():
        submitter, _ = await farm.start(2)
        job = await _submit(submitter, tmp_path, out)
        await farm.wait_until(lambda: farm.job_finished(job), timeout=60, what="delivered")
        # A retry re-renders frame 1: the job may replace what it wrote itself.
        await Farm(submitter.node).act(job, "retry", "1")
        await farm.wait_until(lambda: farm.job_finished(job), timeout=60, what="redelivered")
        expected = farm.expected_files(job)
        farm.check_invariants()
    assert output_files(out) == {
        "frame_0001.txt": expected["frame_0001.txt"],
        "frame_0002.txt": b"the artist's own work\n",
        "frame_0002 (2).txt": expected["frame_0002.txt"],
        "frame_0003.txt": expected["frame_0003.txt"],
    }


async def test_overwrite_option_lets_a_job_replace_existing_files(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "frame_0002.txt").write_text("stale render\n")
    farm = SimFarm(tmp_path, seed=11, renderer_seconds=0.2)
    async with farm.running():
        submitter, _ = await farm.start(2)
        job = await _submit(submitter, tmp_path, out, overwrite=True)
        await farm.wait_until(lambda: farm.job_finished(job), timeout=60, what="delivered")
        expected = farm.expected_files(job)
        farm.check_invariants()
    assert sorted(expected) == [f"frame_{f:04d}.txt" for f in (1, 2, 3)]
    assert output_files(out) == expected


def test_delivery_target_policy(tmp_path: Path) -> None:
    data = b"render\n"
    output = Output("f.png", hashlib.sha256(data).digest(), len(data))
    assert delivery_target(tmp_path, output, False, set()) == tmp_path / "f.png"
    (tmp_path / "f.png").write_bytes(data)
    assert delivery_target(tmp_path, output, False, set()) is None  # already delivered
    (tmp_path / "f.png").write_bytes(b"someone else's\n")
    assert delivery_target(tmp_path, output, False, set()) == tmp_path / "f (2).png"
    assert delivery_target(tmp_path, output, False, {"f.png"}) == tmp_path / "f.png"
    assert delivery_target(tmp_path, output, True, set()) == tmp_path / "f.png"
    (tmp_path / "f (2).png").write_bytes(data)
    assert delivery_target(tmp_path, output, False, set()) is None
    outside = tmp_path.parent / f"{tmp_path.name}-outside.png"
    (tmp_path / "link.png").symlink_to(outside)
    link = Output("link.png", output.digest, output.size)
    # A planted link is never followed: another name, or (overwrite) the link itself replaced.
    assert delivery_target(tmp_path, link, False, set()) == tmp_path / "link (2).png"
    assert delivery_target(tmp_path, link, True, set()) == tmp_path / "link.png"
    assert not outside.exists()
