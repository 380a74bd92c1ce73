"""The command renderer and the process plumbing under every renderer (real processes)."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from peerfarm import platform
from peerfarm.renderers import base
from peerfarm.renderers.base import (
    LIMITS,
    DirectChild,
    Progress,
    RenderFailed,
    RenderLimits,
    kill_process_group,
    run_logged,
    start_child,
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


linux_only = pytest.mark.skipif(
    not platform.exit_fds_work(), reason="children are waited for through pidfds on Linux"
)


@linux_only
async def test_a_renderer_starts_in_the_event_loop_without_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Linux a render's process is started and waited for by the event loop itself
    (vfork, then its pidfd): trio's thread-backed ``open_process`` is not used, so nothing
    sits between a free slot and the next frame's process but the start itself."""

    async def no_threads(*args: object, **kwargs: object) -> None:
        raise AssertionError("started through a worker thread")

    monkeypatch.setattr(trio.lowlevel, "open_process", no_threads)
    monkeypatch.setattr(trio.to_thread, "run_sync", no_threads)
    lines: list[str] = []
    with trio.fail_after(10):
        run = await run_logged(
            ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], cwd=tmp_path, on_line=lines.append
        )
    assert run.returncode == 3 and lines == ["out", "err"]
    with pytest.raises(RenderFailed, match="cannot start"):
        await run_logged(["/nonexistent/renderer"])


@linux_only
async def test_a_direct_child_is_waited_for_however_it_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reaped early by a look at ``returncode`` (the memory sampler does that), killed while
    waited for, or without a pidfd at all: ``wait`` returns its status and no descriptor is
    left open."""

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = fds()
    with trio.fail_after(10):
        quick = start_child(["/bin/true"], cwd=tmp_path, env=None)
        assert isinstance(quick, DirectChild)
        while quick.returncode is None:  # reaped here, not by wait()
            await trio.sleep(0.01)
        assert await quick.wait() == 0

        slow = start_child(["/bin/sh", "-c", "sleep 1000"], cwd=tmp_path, env=None)
        assert slow is not None
        async with trio.open_nursery() as nursery:
            codes: list[int] = []

            async def waiter() -> None:
                codes.append(await slow.wait())

            nursery.start_soon(waiter)
            await trio.sleep(0.1)
            assert not codes
            await kill_process_group(slow, grace=0.2)
        assert codes and codes[0] < 0

        monkeypatch.setattr(platform, "exit_fd", lambda pid: None)
        blind = start_child(["/bin/sh", "-c", "exit 5"], cwd=tmp_path, env=None)
        assert blind is not None and await blind.wait() == 5
        for child in (quick, slow, blind):
            assert child.stdout is not None
            await child.stdout.aclose()
    assert fds() == before


@linux_only
async def test_a_second_wait_leaves_the_exit_descriptor_to_the_task_watching_it(
    tmp_path: Path,
) -> None:
    """One task waits on the exit descriptor; the child ends and another task finds it reaped
    before the first has run again (a kill after its grace, under load): both get the status,
    and the descriptor is not closed under the first."""
    with trio.fail_after(10):
        child = start_child(["/bin/sh", "-c", "sleep 1000"], cwd=tmp_path, env=None)
        assert isinstance(child, DirectChild)
        codes: list[int] = []

        async def waiter() -> None:
            codes.append(await child.wait())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()  # the waiter watches the descriptor
            os.kill(child.pid, signal.SIGKILL)
            while child.returncode is None:  # reaped here, with no checkpoint in between
                time.sleep(0.001)
            assert await child.wait() == -signal.SIGKILL
        assert codes == [-signal.SIGKILL]
        assert child.stdout is not None
        await child.stdout.aclose()


async def test_a_child_that_runs_code_before_exec_starts_through_trio(tmp_path: Path) -> None:
    """``preexec_fn`` (lowering a render's priority) rules out vfork: such a child is left to
    trio's ``open_process`` rather than forked in the event loop."""
    assert start_child(["/bin/true"], cwd=tmp_path, env=None, preexec_fn=lambda: None) is None


@pytest.mark.parametrize("fails", [False, True])
async def test_the_machine_is_free_once_the_last_frame_of_a_chunk_exits(
    tmp_path: Path, fails: bool
) -> None:
    """The peer starts its next frame while the renderer still collects this chunk's files:
    told once, at the exit of the chunk's last process (not of an earlier one), success or not."""
    ran = tmp_path / "ran"
    body = f'echo "$PEERFARM_FRAME" >> "{ran}"\n'
    body += 'test "$PEERFARM_FRAME" != 3\n' if fails else 'touch "$PEERFARM_OUTPUT_DIR/out.txt"\n'
    script = _script(tmp_path / "frame.sh", "#!/bin/sh\n" + body)
    task = make_task(tmp_path, script, (1, 2, 3), allow_scripts=True)
    told: list[list[str]] = []
    limits = RenderLimits(machine_free=lambda: told.append(ran.read_text().split()))
    token = LIMITS.set(limits)
    try:
        with trio.fail_after(20):
            if fails:
                with pytest.raises(RenderFailed, match="frame 3"):
                    await CommandRenderer().render(task, on_progress=lambda _: None)
            else:
                result = await CommandRenderer().render(task, on_progress=lambda _: None)
                assert sorted(result.outputs) == [1, 2, 3]
    finally:
        LIMITS.reset(token)
    assert told == [["1", "2", "3"]]


async def test_run_logged_frees_the_machine_only_for_the_last_process(tmp_path: Path) -> None:
    told: list[str] = []
    token = LIMITS.set(RenderLimits(machine_free=lambda: told.append("free")))
    try:
        with trio.fail_after(20):
            await run_logged(["true"])
            assert told == []
            done = await run_logged(["sh", "-c", "exit 3"], last=True)
    finally:
        LIMITS.reset(token)
    assert done.returncode == 3 and told == ["free"]


async def test_a_long_render_is_sampled_less_and_less_often(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each memory sample reads the render's processes: a render is sampled soon after
    it starts (its peak is still recorded), then at doubling intervals up to one a second,
    not every 0.2 s however long it runs."""
    samples: list[float] = []
    real = base.group_memory

    def counted(pid: int) -> int:
        samples.append(time.monotonic())
        return real(pid)

    monkeypatch.setattr(base, "group_memory", counted)
    limits = RenderLimits()
    token = LIMITS.set(limits)
    try:
        with trio.fail_after(20):
            started = time.monotonic()
            hold = "import time; x = b'x' * 30_000_000; time.sleep(2.2)"
            await run_logged(["python3", "-c", hold])
    finally:
        LIMITS.reset(token)
    offsets = [round(t - started, 2) for t in samples]
    # at about 0.05, 0.25, 0.65, 1.45 s (a sample every 0.2 s would be 11)
    assert 3 <= len(samples) <= 6, offsets
    assert samples[0] - started < 0.5, offsets
    gaps = [b - a for a, b in itertools.pairwise(samples)]
    assert all(later > earlier + 0.1 for earlier, later in itertools.pairwise(gaps)), offsets
    assert limits.peak_memory >= 30_000_000


THREADED_SPAWNER = """
import subprocess, sys, threading, time
kids = []
def spawn():
    # The shell says "up" once it has forked both sleeps: "ready" must not race them.
    shell = subprocess.Popen(
        ["sh", "-c", "sleep 60 & sleep 60 & echo up; wait"], stdout=subprocess.PIPE, text=True
    )
    assert shell.stdout.readline() == "up\\n"
    kids.append(shell)
thread = threading.Thread(target=spawn)
thread.start()
thread.join()
kids.append(subprocess.Popen(["sleep", "60"]))
while time.process_time() < 0.05:  # CPU the sample must count: several clock ticks
    pass
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not platform._proc_children_files(), reason="needs /proc/PID/task/TID/children")
def test_a_render_tree_is_walked_down_from_its_leader_without_reading_every_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sampling a render reads its own processes, children started from any thread of any
    process of the tree included, and none of the machine's other processes (psutil's
    ``children`` reads them all: about 5 ms a sample with 200 processes, several times a
    frame on every peer)."""
    import psutil

    leader = subprocess.Popen(
        [sys.executable, "-c", THREADED_SPAWNER], stdout=subprocess.PIPE, text=True
    )
    below: list[psutil.Process] = []
    try:
        assert leader.stdout is not None and leader.stdout.readline() == "ready\n"
        below = psutil.Process(leader.pid).children(recursive=True)
        expected = {leader.pid} | {p.pid for p in below}
        assert len(expected) == 5  # the leader; a shell and its two sleeps; a sleep

        def every_process() -> dict[int, int]:
            raise AssertionError("read every process of the machine")

        monkeypatch.setattr(psutil, "_ppid_map", every_process)
        assert {p.pid for p in platform.tree_processes(leader.pid)} == expected
        assert base.group_memory(leader.pid) > 0
        assert base.group_cpu_seconds(leader.pid) > 0
    finally:
        for process in below:
            with contextlib.suppress(psutil.Error):
                process.kill()
        leader.kill()
        leader.wait()
    assert platform.tree_processes(leader.pid) == []
