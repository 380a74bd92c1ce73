"""The Blender program benchmark (bench/blender_program.py) runs once at a tiny size, so it
cannot rot. Uses the Blender program on PATH; one frame, every way of rendering it."""

from __future__ import annotations

import pytest

from bench import blender_program
from tests.support.renderers import needs_blender_cli


@needs_blender_cli
@pytest.mark.timeout(600)
def test_the_program_benchmark_runs_at_a_tiny_size() -> None:
    result = blender_program.run(frames=1)
    assert result["frames"] == 1 and result["blender"].startswith("Blender ")
    for key in ("peer_s", "warm_s", "per_frame_s", "plain_s"):
        assert result[key] > 0, key
    for key in ("peer_cpu_s", "warm_cpu_s", "per_frame_cpu_s", "plain_cpu_s"):
        assert result[key] > 0, key  # the render processes' CPU was counted
