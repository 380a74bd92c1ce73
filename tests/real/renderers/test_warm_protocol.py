"""The daemon's side of the warm worker's protocol against a stand-in worker process.

A warm worker answers on one pipe (JSON events) and logs on another (Blender's prints). Under
load the daemon can read a command's last event before that command's last log lines, which
are still in the other pipe: they must still be relayed for that command, not lost or handed
to the next one. The stand-in below forces that order (it writes the event first and the log a
moment later); the real worker writes its log first, and the race is in the reading.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from peerfarm.renderers.base import RenderFailed
from peerfarm.renderers.blender_warm import WarmWorker
from peerfarm.renderers.blender_worker import LOG_MARK

STAND_IN = f"""
import json, sys, time
MARK = {LOG_MARK!r}
marks = 0

def event(log_first, lines, **message):
    global marks
    marks += 1
    message["log"] = marks
    if log_first:
        for line in lines:
            sys.stderr.write(line + "\\n")
        sys.stderr.write(f"{{MARK}}{{marks}}\\n")
        sys.stderr.flush()
    sys.stdout.write(json.dumps(message) + "\\n")
    sys.stdout.flush()
    if not log_first:
        time.sleep(0.3)  # the event is read long before the log that came with it
        for line in lines:
            sys.stderr.write(line + "\\n")
        sys.stderr.write(f"{{MARK}}{{marks}}\\n")
        sys.stderr.flush()

event(True, ["banner"], event="ready", version="4.2.0", protocol=3, oidn=False)
for raw in sys.stdin:
    command = json.loads(raw)
    if command["cmd"] == "quit":
        break
    frame = command["frame"]
    lines = [f"Fra:{{frame}} | Sample 1/1", f"Saved: 'frame_{{frame:04d}}.png'"]
    if frame == 13:
        event(False, ["Traceback: the settings script failed"], event="error", message="bad")
    else:
        event(False, lines, event="done", frame=frame, files=[], seconds=0.1)
"""


async def test_a_commands_last_log_lines_are_relayed_with_it_not_lost(tmp_path: Path) -> None:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    worker = WarmWorker([sys.executable, str(script)])
    with trio.fail_after(20):
        await worker.start()
        try:
            for frame in (1, 2):
                lines: list[str] = []
                answer = await worker.render(frame, tmp_path / "out", lines.append, 10.0)
                assert answer["frame"] == frame
                assert lines == [f"Fra:{frame} | Sample 1/1", f"Saved: 'frame_{frame:04d}.png'"]
            # An error's log tail holds what the worker printed before it said so.
            with pytest.raises(RenderFailed) as failed:
                await worker.render(13, tmp_path / "out", lines.append, 10.0)
            assert "the settings script failed" in failed.value.log_tail
            assert LOG_MARK not in worker.tail.text()  # marks are not log
        finally:
            await worker.stop()
