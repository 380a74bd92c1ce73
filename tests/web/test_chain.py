"""The dashboard shows a chain (``submit --after``): "after NAME" under the waiting job's name,
the reason it waits on its row, and a click on the link selects the job it waits for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peerfarm.testing.daemons import LocalFarm
from tests.web.test_dashboard import open_dashboard, row_selector

SLOW = 'sleep 2\necho "$PEERFARM_FRAME" > "$PEERFARM_OUTPUT_DIR/frame_$PEERFARM_FRAME.txt"'


def test_a_chained_job_links_to_the_job_it_waits_for(
    farm: LocalFarm, page: Any, tmp_path: Path
) -> None:
    atlas, birch, _ = farm.daemons
    parent = farm.submit(atlas, farm.script("bake.sh", SLOW), "1-6", name="bake")
    child = farm.submit(atlas, farm.script("comp.sh", SLOW), "1-2", name="comp", after=parent)
    try:
        open_dashboard(page, birch)
        link = page.locator(f"{row_selector(child)} a.after")
        link.wait_for(timeout=20_000)
        assert link.inner_text() == "after bake"
        wait = page.locator(f"{row_selector(child)} .job-wait")
        assert "after bake" in wait.inner_text()
        link.click()
        page.wait_for_function("id => location.hash === `#job=${id}`", arg=parent, timeout=10_000)
        page.wait_for_selector(f"{row_selector(parent)}.selected")
    finally:
        for job in (child, parent):
            atlas.client().act(job, "cancel")
