"""The command renderer and the process plumbing under every renderer (real processes)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import trio

from peerfarm.renderers.base import (
    Progress,
    RenderFailed,
    kill_process_group,
    run_logged,
)
from peerfarm.renderers.command import CommandRenderer
from tests.support.renderers import EXAMPLES, make_task, pid_gone

SPAWNER = """#!/bin/sh
sleep 1000 &
echo $! > "$PEERFARM_OUTPUT_DIR/grandchild.pid"
echo $$ > "$PEERFARM_OUTPUT_DIR/child.pid"
wait
"""


def _script(path: Path, text: str, executable: bool = True) -> Path:
    path.write_text(text)
    if executable:
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


async def _wait_for_file(path: Path) -> int:
    while not (path.exists() and path.read_text().strip()):
        await trio.sleep(0.02)
    return int(path.read_text())


async def _wait_gone(pid: int) -> bool:
    with trio.move_on_after(3):
        while not pid_gone(pid):
            await trio.sleep(0.02)
    return pid_gone(pid)


async def test_renders_the_example_script_once_per_frame(tmp_path: Path) -> None:
    renderer = CommandRenderer()
    task = make_task(tmp_path, EXAMPLES / "command" / "render.sh", (1, 2, 7), allow_scripts=True)
    seen: list[Progress] = []
    with trio.fail_after(20):
        result = await renderer.render(task, on_progress=seen.append)
    assert sorted(result.outputs) == [1, 2, 7]
    contents = set()
    for files in result.outputs.values():
        assert [f.name for f in files] == ["frame.ppm"]
        assert files[0].is_relative_to(task.output_dir)
        contents.add(files[0].read_bytes())
    assert len({files[0].parent for files in result.outputs.values()}) == 3  # one folder each
    assert len(contents) == 3  # each frame wrote different pixels
    assert {p.frame for p in seen if p.fraction == 1.0} == {1, 2, 7}
    assert "written" in result.log_tail


async def test_a_script_without_its_executable_bit_runs_through_its_shebang(
    tmp_path: Path,
) -> None:
    script = _script(
        tmp_path / "r.sh", '#!/bin/sh\necho "$1" > "$PEERFARM_OUTPUT_DIR/a.txt"\n', False
    )
    task = make_task(tmp_path, script, (3,), allow_scripts=True, options={"args": ["hi"]})
    with trio.fail_after(10):
        result = await CommandRenderer().render(task, on_progress=lambda p: None)
    assert result.outputs[3][0].read_text() == "hi\n"


async def test_a_failing_script_raises_render_failed_with_its_log(tmp_path: Path) -> None:
    script = _script(tmp_path / "bad.sh", "#!/bin/sh\necho 'out of cheese' >&2\nexit 3\n")
    task = make_task(tmp_path, script, (1,), allow_scripts=True)
    with trio.fail_after(10), pytest.raises(RenderFailed) as info:
        await CommandRenderer().render(task, on_progress=lambda p: None)
    assert "status 3" in info.value.reason
    assert "out of cheese" in info.value.log_tail


async def test_a_script_that_writes_nothing_succeeds_with_no_outputs(tmp_path: Path) -> None:
    script = _script(tmp_path / "noop.sh", "#!/bin/sh\nexit 0\n")
    task = make_task(tmp_path, script, (1, 2), allow_scripts=True)
    with trio.fail_after(10):
        result = await CommandRenderer().render(task, on_progress=lambda p: None)
    assert result.outputs == {1: [], 2: []}
    # The chunk's frames all ran in the task's folder, left empty: the peer may reuse it.
    assert list(task.output_dir.iterdir()) == []


async def test_a_chunk_gives_each_frame_an_empty_folder_and_keeps_only_what_holds_something(
    tmp_path: Path,
) -> None:
    """Frames of a chunk that leave their folder empty pass it on to the next frame; no
    empty folder is left behind."""
    script = _script(
        tmp_path / "some.sh",
        '#!/bin/sh\n[ -z "$(ls -A "$PEERFARM_OUTPUT_DIR")" ] || exit 9\n'
        'case "$PEERFARM_FRAME" in\n'
        '  2) echo two > "$PEERFARM_OUTPUT_DIR/two.txt"\n'
        '     mkdir "$PEERFARM_OUTPUT_DIR/frame_0003" ;;\n'  # the name the next one would get
        '  3) mkdir "$PEERFARM_OUTPUT_DIR/empty" ;;\nesac\n',
    )
    task = make_task(tmp_path, script, (1, 2, 3, 4, 5), allow_scripts=True)
    with trio.fail_after(10):
        result = await CommandRenderer().render(task, on_progress=lambda p: None)
    assert {f: [p.name for p in files] for f, files in result.outputs.items()} == {
        1: [],
        2: ["two.txt"],
        3: [],
        4: [],
        5: [],
    }
    # Frame 2 wrote a file and a folder into the task's folder; 3 got a new folder and left
    # one there; 4 and 5 shared the next one, which they left empty.
    left = sorted(p.relative_to(task.output_dir).as_posix() for p in task.output_dir.rglob("*"))
    assert left == ["frame_0003", "frame_0003-2", "frame_0003-2/empty", "frame_0004", "two.txt"]


async def test_scripts_need_allow_scripts(tmp_path: Path) -> None:
    task = make_task(tmp_path, EXAMPLES / "command" / "render.sh", (1,), allow_scripts=False)
    with pytest.raises(RenderFailed, match="allow_scripts"):
        await CommandRenderer().render(task, on_progress=lambda p: None)
    assert not task.output_dir.exists()


async def test_cancelling_a_render_kills_the_whole_process_group(tmp_path: Path) -> None:
    script = _script(tmp_path / "spawn.sh", SPAWNER)
    task = make_task(tmp_path, script, (1,), allow_scripts=True)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: CommandRenderer().render(task, on_progress=print))
            child = await _wait_for_file(tmp_path / "out" / "child.pid")
            grandchild = await _wait_for_file(tmp_path / "out" / "grandchild.pid")
            assert not pid_gone(child) and not pid_gone(grandchild)
            nursery.cancel_scope.cancel()
        assert await _wait_gone(child)
        assert await _wait_gone(grandchild)


async def test_a_leader_that_exits_takes_its_stragglers_with_it(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    argv = ["/bin/sh", "-c", f"sleep 1000 & echo $! > {pidfile}; echo started"]
    with trio.fail_after(10):
        run = await run_logged(argv)
    assert run.returncode == 0 and run.log_tail == "started"
    assert await _wait_gone(int(pidfile.read_text()))


async def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    process = await trio.lowlevel.open_process(
        ["/bin/sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"], start_new_session=True
    )
    await trio.sleep(0.2)  # let the shell install its trap
    with trio.fail_after(5):
        await kill_process_group(process, grace=0.3)
    assert process.returncode is not None and process.returncode < 0


async def test_run_logged_reports_a_missing_program() -> None:
    with pytest.raises(RenderFailed, match="cannot start"):
        await run_logged(["/nonexistent/renderer"])


async def test_run_logged_streams_lines_in_order(tmp_path: Path) -> None:
    lines: list[str] = []
    with trio.fail_after(10):
        run = await run_logged(
            ["/bin/sh", "-c", "printf 'a\\rb\\n'; echo c >&2; exit 4"],
            cwd=tmp_path,
            env={**os.environ},
            on_line=lines.append,
        )
    assert lines == ["a", "b", "c"]
    assert run.returncode == 4
