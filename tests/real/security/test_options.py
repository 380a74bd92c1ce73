"""One bad option must not take down the farm (issue 17, item 1): real daemons, real POV-Ray.

A careless user's ``--option width=640px`` is refused at submit with one line naming the option;
a hostile keyed peer that skips that check and gossips such a job straight into a daemon's
ledger gets that frame failed with a readable reason, and the daemon keeps rendering.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import time
from pathlib import Path

import pytest

from peerfarm.gossip.crypto import Keyring, load_key_file
from peerfarm.gossip.transport import encode_datagram
from peerfarm.ledger import Ledger, codec
from peerfarm.ledger.model import SceneRef
from peerfarm.peer.gossip import T_LEDGER
from peerfarm.testing.daemons import LocalFarm, wait_until

needs_povray = pytest.mark.skipif(shutil.which("povray") is None, reason="povray not on PATH")

BALL = """#version 3.7;
camera { location <0, 0, -4> look_at <0, 0, 0> }
light_source { <2, 4, -3> color rgb 1 }
sphere { <0, 0, 0>, 1 pigment { color rgb <1, clock, 0.2> } }
"""


def _ball(tmp_path: Path) -> Path:
    scene = tmp_path / "ball.pov"
    scene.write_text(BALL)
    return scene


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("width=640px", "option width: expected a whole number, got '640px'"),
        ("threads=four", "option threads: expected a whole number, got 'four'"),
        ("height=0", "option height: must be from 1 to 16384, got 0"),
        ("antialias=NaN", "option antialias: expected a number, got 'NaN'"),
        ("widht=640", "option widht: povray has no such option (did you mean width?"),
    ],
)
def test_a_bad_option_is_refused_at_submit_in_one_line(
    farm: LocalFarm, tmp_path: Path, option: str, message: str
) -> None:
    a = farm.start("a")
    result = a.cli("submit", str(_ball(tmp_path)), "1-3", "--option", option, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"peerfarm: {message}"), result.stderr
    assert result.stderr.count("\n") == 1  # one line
    assert a.status()["jobs"] == [] and a.alive()


@needs_povray
def test_a_hostile_peers_bad_option_fails_the_frame_not_the_daemon(
    farm: LocalFarm, tmp_path: Path
) -> None:
    a = farm.start("a", "--slots", "1")
    scene = _ball(tmp_path)
    good = a.cli_json("submit", str(scene), "1", "--option", "width=32", "--option", "height=24",
                  "--output", str(tmp_path / "good"))  # fmt: skip
    wait_until(lambda: a.status(good["job"])["jobs"][0]["state"] == "done", 60, "first job done")

    # A keyed peer writes a job by hand (no submit checks) that uses the scene a already holds,
    # and pushes it into a's ledger as a gossip datagram.
    data = scene.read_bytes()
    hostile = Ledger("f00dfeedf00dfeed")
    spec = hostile.new_job(
        name="hostile",
        submitter_name="mallory",
        renderer="povray",
        options={"width": "640px", "threads": "four"},
        scene=SceneRef(hashlib.sha256(data).digest(), "ball.pov", len(data)),
        frames=[1, 2],
        wall_ms=int(time.time() * 1000),
        retries=0,
    )
    message = {"t": T_LEDGER, "d": [codec.encode_delta(d) for d in hostile.submit(spec)]}
    host, port = a.address.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(
            encode_datagram(Keyring([load_key_file(farm.key_file)]), message), (host, int(port))
        )

    def failed() -> bool:
        return a.status(spec.id)["jobs"][0]["state"] == "failed" if a.alive() else True

    wait_until(failed, 60, "the hostile job's frames to fail")
    assert a.alive(), a.log()
    frames = a.status(spec.id)["frames"]
    assert {f["state"] for f in frames} == {"failed"}
    assert frames[0]["error"].startswith("bad job option: option "), frames[0]["error"]
    # ... and the daemon goes on rendering honest work.
    again = a.cli_json("submit", str(scene), "2", "--option", "width=32", "--option", "height=24",
                   "--output", str(tmp_path / "again"))  # fmt: skip
    wait_until(lambda: a.status(again["job"])["jobs"][0]["state"] == "done", 60, "later job done")
    assert (tmp_path / "again" / "frame_0002.png").is_file()
