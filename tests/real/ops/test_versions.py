"""Two protocol versions side by side on real daemons (loopback, no mDNS).

Both builds are faked with the documented test hook ``PEERFARM_TEST_PROTOCOL`` (see
``peerfarm.gossip.transport``): the old one speaks ``1``; ``1-2`` speaks protocols 1-2
(compatible with it), ``2-2`` only 2 (incompatible). Compatible peers must work together;
incompatible ones must refuse each other with a clear line in both logs and in both ``peers``
views, and keep running: never a crash, never a silent split.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from peerfarm.gossip.transport import TEST_PROTOCOL_ENV
from peerfarm.testing.daemons import LocalFarm, wait_until
from tests.support import TINY_FRAME

pytestmark = pytest.mark.slow


def test_a_newer_compatible_peer_works_with_an_older_one(tmp_path: Path) -> None:
    with LocalFarm(tmp_path) as farm:
        old = farm.start(
            "old", web=True, allow_command=True, wait=False, env={TEST_PROTOCOL_ENV: "1"}
        )
        farm.wait_ready(old)
        new = farm.start(
            "new",
            join=old,
            web=True,
            allow_command=True,
            wait=False,
            env={TEST_PROTOCOL_ENV: "1-2"},
        )
        farm.wait_converged()
        by_name = {p["name"]: p for p in old.cli_json("peers")["peers"]}
        assert by_name["new"]["protocol"] == 2 and by_name["new"]["state"] == "alive"
        assert by_name["old"]["protocol"] == 1
        work = tmp_path / "work"
        work.mkdir()
        job = new.cli_json("submit", str(farm.script("tiny.sh", TINY_FRAME)), "1-4", cwd=work)

        def done() -> bool:
            farm.check_running()
            view = old.cli_json("status", job["job"])
            return bool(view["jobs"][0]["frames_done"] == 4)

        wait_until(done, 60, "the job to finish across protocol versions")
        assert "new (" in old.log() and "speaks protocol 2, this peer 1: compatible" in old.log()
        assert "refusing" not in old.log() + new.log()


def test_incompatible_peers_refuse_each_other_loudly_and_keep_running(tmp_path: Path) -> None:
    with LocalFarm(tmp_path) as farm:
        old = farm.start(
            "old", web=True, allow_command=True, wait=False, env={TEST_PROTOCOL_ENV: "1"}
        )
        farm.wait_ready(old)
        new = farm.start(
            "new",
            join=old,
            web=True,
            allow_command=True,
            wait=False,
            env={TEST_PROTOCOL_ENV: "2-2"},
        )
        farm.wait_ready(new)

        def refused(peer_name: str, other: str, why: str) -> bool:
            farm.check_running()
            peer = old if peer_name == "old" else new
            return any(
                p["name"] == other and p["state"] == f"incompatible: {why}"
                for p in peer.cli_json("peers")["peers"]
            )

        wait_until(lambda: refused("old", "new", "speaks protocol 2, this peer 1"), 30, "old")
        wait_until(lambda: refused("new", "old", "speaks protocol 1, this peer 2"), 30, "new")
        text = old.cli("peers", check=False)
        assert (
            text.returncode == 0 and "incompatible: speaks protocol 2, this peer 1" in text.stdout
        )
        assert "refusing peer new" in old.log() and "speaks protocol 2, this peer 1" in old.log()
        assert "refusing peer old" in new.log() and "speaks protocol 1, this peer 2" in new.log()
        for peer in (old, new):  # no silent split: neither believes the other is a member
            alive = {p["name"] for p in peer.cli_json("peers")["peers"]}
            assert alive == {"old", "new"}
            states = {p["name"]: p["state"] for p in peer.cli_json("peers")["peers"]}
            assert states[peer.name] == "alive"
        farm.check_running()
        assert "Traceback" not in old.log() + new.log()
