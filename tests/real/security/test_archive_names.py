"""A job's zip names its entries as the frames are delivered (issue 17, item 11): real daemon."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import httpx

from peerfarm.testing.daemons import LocalFarm, wait_until


def test_the_archive_entries_are_the_delivered_file_names(farm: LocalFarm, tmp_path: Path) -> None:
    a = farm.start("a", "--allow-command")
    scene = tmp_path / "s.sh"
    scene.write_text(
        "#!/bin/sh\n"
        'printf "%s" "$PEERFARM_FRAME" > "$PEERFARM_OUTPUT_DIR/frame_000$PEERFARM_FRAME.png"\n'
    )
    out = tmp_path / "out"
    job = a.cli_json("submit", str(scene), "1-3", "--renderer", "command", "--output", str(out))[
        "job"
    ]
    wait_until(lambda: a.status(job)["jobs"][0]["frames_delivered"] == 3, 60, "3 frames delivered")
    url = json.loads((a.data_dir / "control.json").read_text())["url"]
    response = httpx.get(f"{url}/api/jobs/{job}/archive", timeout=30)
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        names = archive.namelist()
        assert names == ["frame_0001.png", "frame_0002.png", "frame_0003.png"]
        assert not any(re.fullmatch(r"[0-9a-f]{64}.*", n) for n in names)  # no blob hashes
        assert sorted(names) == sorted(p.name for p in out.iterdir())
        assert [archive.read(n) for n in names] == [b"1", b"2", b"3"]
