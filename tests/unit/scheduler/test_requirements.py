"""Job requirements, pure: ``--require`` tags and the Blender ``device`` against what peers
advertise, as a lasting waiting reason; peers older than the rule are named for a warning."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerfarm.gossip.membership import MemberState
from peerfarm.scheduler import eligibility as el
from tests.unit.scheduler.test_eligibility import A, B, C, job, member

BLENDER = {"blender": "5.0.1"}


def test_a_peer_without_a_required_tag_never_takes_the_job() -> None:
    spec = job(require=["gpu", "linux"])
    assert el.requirement_reason(spec, {"tags": ["gpu", "linux", "big"]}) is None
    assert el.requirement_reason(spec, {"tags": ["linux"]}) == "not tagged gpu"
    assert el.requirement_reason(spec, {}) == "not tagged gpu, linux"
    peers = [
        member(A, BLENDER, tags=["gpu", "linux"]),
        member(B, BLENDER, tags=["linux"]),
        member(C, BLENDER),
    ]
    assert el.capable_peers(spec, peers, banned=(), now=0, home_grace=5) == [A]
    assert el.waiting_reasons(spec, peers, banned={}) == {
        B: "not tagged gpu",
        C: "not tagged gpu, linux",
    }
    # Lasting: with only untagged peers alive the job can never run as the farm stands.
    summary = el.no_peer_summary(spec, peers[1:], banned={}, names={B: "b", C: "c"})
    assert summary == "no peer can render it: b: not tagged gpu; c: not tagged gpu, linux"


def test_unreadable_requirements_are_never_met() -> None:
    assert el.requirement_reason(job(require="gpu"), {"tags": ["gpu"]}) is not None
    assert el.requirement_reason(job(require=[1]), {"tags": [1]}) is not None
    assert el.requirement_reason(job(require=[]), {}) is None


@pytest.mark.parametrize(
    ("device", "devices", "reason"),
    [
        ("CPU", None, None),
        ("CUDA", ["CPU", "CUDA", "OPTIX"], None),
        ("OPTIX", ["CPU", "CUDA", "OPTIX"], None),
        ("GPU", ["CPU", "HIP"], None),
        ("HIP", ["CPU", "CUDA"], "no HIP device (CUDA)"),
        ("GPU", ["CPU"], "no GPU device (CPU only)"),
        ("CUDA", None, "no CUDA device (CPU only)"),  # a peer that advertises none
        ("METAL", "METAL", "no METAL device (CPU only)"),  # not a list: unreadable
    ],
)
def test_a_device_matches_what_the_peer_advertises(
    device: str, devices: Any, reason: str | None
) -> None:
    meta = {} if devices is None else {"devices": devices}
    assert el.requirement_reason(job(device=device), meta) == reason


def test_device_is_a_blender_option_only() -> None:
    assert el.requirement_reason(job("povray", device="CUDA"), {}) is None


def test_requirements_come_after_the_renderer_and_version_reasons() -> None:
    spec = job(require=["gpu"], blend_version="5.0")
    assert el.renderer_reason(spec, {"renderers": {}}) == "no blender"
    old = {"renderers": {"blender": "3.4.1"}}
    assert el.renderer_reason(spec, old) == "blender 3.4.1 is older than the file (5.0)"
    assert el.renderer_reason(spec, {"renderers": BLENDER}) == "not tagged gpu"


def test_older_peers_that_would_ignore_the_requirement_are_named() -> None:
    spec = job(require=["gpu"])
    peers = [
        member(A, BLENDER, tags=["gpu"]),  # old, but meets it: harmless
        member(B, BLENDER),  # old and untagged: may render it anyway
        member(C, BLENDER, req=1),  # knows the rule: will not
        member("d" * 32, BLENDER, state=MemberState.DEAD),
    ]
    assert el.unaware_peers(spec, peers) == [B]
    assert el.unaware_peers(job(), peers) == []
    assert el.unaware_peers(job(device="CPU"), peers) == []
    assert el.unaware_peers(job(device="CUDA"), peers) == [A, B]


@given(
    st.lists(st.sampled_from(["gpu", "big", "linux", "mac"]), max_size=4),
    st.lists(st.sampled_from(["gpu", "big", "linux", "mac"]), max_size=4),
)
def test_a_peer_qualifies_exactly_when_it_has_every_required_tag(
    required: list[str], tags: list[str]
) -> None:
    reason = el.requirement_reason(job(require=sorted(set(required))), {"tags": tags})
    assert (reason is None) == set(required).issubset(tags)
