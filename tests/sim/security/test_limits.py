"""Oversized jobs (issue 10): refused on decode from the network, and at submit with one line.

The caps live in ``peerfarm/ledger/codec.py``; the submit path round-trips every spec through
the decoder, so the CLI and the API refuse exactly what peers would drop.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from peerfarm.api.bodies import submit_request
from peerfarm.control import SubmitRequest
from peerfarm.errors import DecodeError, UsageError
from peerfarm.farm import Farm
from peerfarm.ledger import Ledger, codec
from peerfarm.ledger.model import SceneRef
from peerfarm.testing import SimFarm

NODE = "0123456789abcdef"


def _body(**changes: object) -> list[object]:
    ledger = Ledger(NODE)
    spec = ledger.new_job(
        name="ok",
        submitter_name="me",
        renderer="command",
        options={},
        scene=SceneRef(bytes(32), "s.sh", 1),
        frames=[1, 2, 3],
        wall_ms=1_700_000_000_000,
    )
    body: list[object] = codec.encode_delta((("J", spec.id), spec, NODE, 1))[5]
    fields = {
        "name": 0,
        "options": 5,
        "assets": 7,
        "runs": 8,
        "output": 10,
    }
    for key, value in changes.items():
        body[fields[key]] = value
    return body


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "n" * 201}, "job name"),
        ({"options": {"k": "v" * 9000}}, "8192 bytes"),
        ({"runs": [[i * 3, i * 3, 1] for i in range(10_001)]}, "frame runs"),
        ({"runs": [[0, 2_000_000, 1]]}, "at most 1000000 frames"),
        ({"runs": [[0, 10**10, 1]]}, "frame"),
        ({"assets": [[bytes(32), f"a{i}", 1] for i in range(10_001)]}, "assets"),
        ({"output": "/" + "o" * 5000}, "output folder"),
    ],
)
def test_decoder_refuses_oversized_jobs(change: dict[str, object], message: str) -> None:
    body = _body(**change)
    with pytest.raises(DecodeError, match=message):
        codec.decode_spec("0123456789abcdef", body)


@pytest.mark.parametrize(
    ("frames", "options", "message"),
    [
        ("0-2000000", {}, "at most 1,000,000 frames"),
        ("2000000000", {}, "frame numbers go up to 1,000,000,000"),
        ("1", {"args": ["x" * 4000] * 3}, "cannot submit: job options must be a map of at most"),
        (",".join(str(3 * i + (i % 2)) for i in range(30_000)), {}, "cannot submit"),
    ],
)
async def test_submit_refuses_an_oversized_job_with_one_clear_line(
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    frames: str,
    options: dict[str, object],
    message: str,
) -> None:
    farm = SimFarm(tmp_path, seed=41)
    async with farm.running():
        (peer,) = await farm.start(1)
        scene = tmp_path / "s.sh"
        scene.write_text("#!/bin/sh\n")
        request = SubmitRequest(
            scene=scene, frames=frames, renderer="command", options=options, cwd=tmp_path
        )
        with pytest.raises(UsageError, match=message) as info:
            await Farm(peer.node).submit(request)
        assert "\n" not in str(info.value)
        assert peer.node.ledger.jobs() == []  # nothing half-submitted


def test_api_submit_fields_carry_the_overwrite_choice(tmp_path: Path) -> None:
    fields = {"scene": str(tmp_path / "s.sh"), "frames": "1", "overwrite": True}
    assert submit_request(fields).options == {"overwrite": True}
    assert "overwrite" not in submit_request({**fields, "overwrite": False}).options
    with pytest.raises(UsageError, match="unknown submit field"):
        submit_request({**fields, "overwrite_everything": True})
