"""Small builders shared by the ledger tests."""

from __future__ import annotations

import hashlib

from peerfarm.ledger import Ledger, Output
from peerfarm.ledger.model import JobSpec, SceneRef

NODES = [f"{i:x}" * 16 for i in range(1, 7)]


def scene() -> SceneRef:
    return SceneRef(hashlib.sha256(b"scene").digest(), "scene.blend", 5)


def make_job(ledger: Ledger, frames: int = 10, wall: int = 1_000, **kw: object) -> JobSpec:
    spec = ledger.new_job(
        name=str(kw.pop("name", "shot")),
        submitter_name="artist",
        renderer="command",
        options=dict(kw.pop("options", None) or {"width": 320}),  # type: ignore[call-overload]
        scene=scene(),
        frames=range(1, frames + 1),
        wall_ms=wall,
        **kw,  # type: ignore[arg-type]
    )
    return spec


def output(frame: int, data: bytes = b"") -> Output:
    content = data or str(frame).encode()
    return Output(f"frame_{frame:04d}.png", hashlib.sha256(content).digest(), 100)
