"""Thumbnails decode a bounded number of pixels (issue 17, item 9): a real daemon.

Before: a thumbnail of a 90-megapixel PNG raised the daemon from 62 to 296 MB, and a
40000x40000 PNG answered HTTP 500. Now the size is read from the header first: such images get
a clear 404 ("no thumbnail") and the daemon's peak memory does not move.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from peerfarm.media import MAX_DECODE_PIXELS, ImageTooLarge, make_thumbnail
from peerfarm.testing.daemons import LocalFarm, wait_until
from tests.support.pngs import write_png


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_huge_image_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    huge = write_png(tmp_path / "huge.png", 40000, 40000, bit_depth=1)
    with pytest.raises(ImageTooLarge, match="too large to preview"):
        make_thumbnail(huge, tmp_path / "t.png")
    big = write_png(tmp_path / "big.png", 9500, 9500)
    with pytest.raises(ImageTooLarge, match=r"9500x9500 \(90 megapixels\)"):
        make_thumbnail(big, tmp_path / "t.png")
    assert MAX_DECODE_PIXELS < 9500 * 9500


def test_a_big_jpeg_is_decoded_at_a_reduced_scale(tmp_path: Path) -> None:
    source = tmp_path / "big.jpg"
    Image.new("RGB", (8000, 6000), (200, 30, 30)).save(source, quality=50)  # 48 megapixels
    thumb = make_thumbnail(source, tmp_path / "t.png")
    with Image.open(thumb) as image:
        assert image.size == (160, 120)
        assert image.getpixel((80, 60))[0] > 150


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_thumbnails_of_huge_frames_are_a_clear_404_and_cost_no_memory(
    farm: LocalFarm, tmp_path: Path
) -> None:
    images = {
        1: write_png(tmp_path / "big90.png", 9500, 9500),
        2: write_png(tmp_path / "huge.png", 40000, 40000, bit_depth=1),
        3: write_png(tmp_path / "small.png", 64, 48, grey=200),
    }
    script = tmp_path / "copy.py"
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, shutil\n"
        f"images = {json.dumps({k: str(v) for k, v in images.items()})}\n"
        "frame = os.environ['PEERFARM_FRAME']\n"
        "shutil.copy(images[frame], os.path.join(os.environ['PEERFARM_OUTPUT_DIR'], 'f.png'))\n"
    )
    a = farm.start("a", "--allow-command")
    job = a.cli_json("submit", str(script), "1-3", "--renderer", "command",
                 "--output", str(tmp_path / "out"))["job"]  # fmt: skip
    wait_until(lambda: a.status(job)["jobs"][0]["state"] == "done", 60, "the job done")
    url = json.loads((a.data_dir / "control.json").read_text())["url"]
    before = _peak_rss_mb(a.process.pid)
    with httpx.Client(base_url=url, timeout=30) as client:
        answers = {n: client.get(f"/api/jobs/{job}/frames/{n}/thumbnail") for n in (1, 2, 3)}
    assert a.alive()
    for n in (1, 2):
        assert answers[n].status_code == 404, answers[n].text
        assert "no thumbnail" in answers[n].json()["error"]
    assert answers[3].status_code == 200
    assert answers[3].headers["content-type"] == "image/png"
    grew = _peak_rss_mb(a.process.pid) - before
    assert grew < 40, f"the daemon's peak memory grew by {grew:.0f} MB"
