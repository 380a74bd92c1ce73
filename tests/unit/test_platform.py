"""peerfarm.platform, pure and under the simulated Windows: retries, read-only files, liveness,
signals, and the rule that no other module makes an OS-specific call itself."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

import peerfarm
from peerfarm import platform
from peerfarm.errors import PeerfarmError
from peerfarm.files.place import place_copy
from peerfarm.files.store import ContentStore
from tests.support.windows import NotOnWindows, simulate_windows

PACKAGE = Path(peerfarm.__file__).resolve().parent

#: Calls only peerfarm/platform.py may make: the POSIX-only ones, pid probing, symlinks, and
#: renames and deletes (which must retry on Windows).
FORBIDDEN = re.compile(
    r"os\.killpg|os\.fchmod|os\.getpgid|os\.uname|os\.kill\(|signal\.SIGKILL|signal\.SIGTERM"
    r"|start_new_session|\.symlink_to\(|os\.symlink\("
    r"|\.unlink\(|os\.remove\(|os\.replace\(|(?<!platform)\.rename\("
)


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> None:
    simulate_windows(monkeypatch)
    monkeypatch.setattr(platform, "RETRY_DELAYS_S", (0.0,) * 4)


def test_only_the_platform_module_makes_os_specific_calls() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "platform.py" and path.parent == PACKAGE:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if FORBIDDEN.search(code) and not code.lstrip().startswith(('"', "'")):
                offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_graceful_signals_here() -> None:
    assert {signal.SIGINT, signal.SIGTERM} <= set(platform.graceful_signals())
    assert platform.signal_name(int(signal.SIGTERM)) == "SIGTERM"
    assert platform.signal_name(999) == "999"
    assert platform.stop_signal() == signal.SIGTERM


def test_a_pid_is_alive_without_signal_zero_on_windows(windows: None) -> None:
    with pytest.raises(NotOnWindows):
        os.kill(os.getpid(), 0)  # the simulation catches what Windows would do wrong
    assert platform.pid_alive(os.getpid())
    assert not platform.pid_alive(0) and not platform.pid_alive(2**22 + 12345)


def test_replace_retries_a_file_held_for_an_instant(windows: None, tmp_path: Path) -> None:
    (tmp_path / "a").write_text("new")
    (tmp_path / "b").write_text("old")
    platform.replace(tmp_path / "a", tmp_path / "b")  # the first try is refused (a scanner)
    assert (tmp_path / "b").read_text() == "new"


def test_replace_over_a_read_only_file(windows: None, tmp_path: Path) -> None:
    (tmp_path / "a").write_text("new")
    (tmp_path / "b").write_text("old")
    (tmp_path / "b").chmod(0o444)
    platform.replace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "b").read_text() == "new"


def test_a_file_still_open_cannot_be_replaced_and_says_so(windows: None, tmp_path: Path) -> None:
    (tmp_path / "a").write_text("new")
    with (tmp_path / "a").open("rb"), pytest.raises(platform.FileBusy, match="holds it open"):
        platform.replace(tmp_path / "a", tmp_path / "b")
    platform.replace(tmp_path / "a", tmp_path / "b")  # closed: fine


def test_remove_a_read_only_file_and_a_missing_one(windows: None, tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"x")
    path.chmod(0o444)
    platform.remove(path)
    assert not path.exists()
    platform.remove(path)  # missing is fine
    with pytest.raises(FileNotFoundError):
        platform.remove(path, missing_ok=False)


def test_remove_tree_with_read_only_files(windows: None, tmp_path: Path) -> None:
    folder = tmp_path / "job"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "frame.png").write_bytes(b"x")
    (folder / "sub" / "frame.png").chmod(0o444)
    platform.remove_tree(folder)
    assert not folder.exists()


def test_the_store_keeps_evicts_and_adopts_read_only_blobs(windows: None, tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store", limit_bytes=10)
    first = store.put_bytes(b"12345678")
    assert not os.stat(store.path(first)).st_mode & 0o222  # read-only
    render = tmp_path / "frame.png"
    render.write_bytes(b"abcdefgh")
    second = store.adopt_file(render)
    assert store.evict(needed=0, pinned=lambda d: d == second) == [first]
    assert not store.has(first) and store.verify(second)
    with store.open_writer(first, 8) as writer:
        writer.write(b"12345678")
        writer.commit()
    assert store.verify(first)


def test_set_mode_without_fchmod(windows: None, tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert not hasattr(os, "fchmod")
        platform.set_mode(path, 0o444, fd)
    finally:
        os.close(fd)
    assert path.stat().st_mode & 0o777 == 0o444


def test_symlinks_are_refused_to_peerfarm_on_windows(windows: None, tmp_path: Path) -> None:
    assert not platform.symlinks_work(tmp_path)


@pytest.mark.posix_only
def test_symlinks_work_here(tmp_path: Path) -> None:
    assert platform.symlinks_work(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_on_disk_case_spells_each_existing_part_as_the_folder_lists_it(tmp_path: Path) -> None:
    (tmp_path / "NAS" / "Shot 01").mkdir(parents=True)
    typed = tmp_path / "nas" / "SHOT 01" / "render" / "Out"
    assert platform.on_disk_case(typed) == tmp_path / "NAS" / "Shot 01" / "render" / "Out"
    (tmp_path / "nas").mkdir()  # a case-sensitive disk: the exact name wins
    assert platform.on_disk_case(tmp_path / "nas" / "x") == tmp_path / "nas" / "x"
    assert platform.on_disk_case(tmp_path / "Nas" / "x") == tmp_path / "Nas" / "x"


def test_a_fetch_onto_a_frame_another_program_holds_is_a_clear_peerfarm_error(
    windows: None, tmp_path: Path
) -> None:
    source = tmp_path / "blob"
    source.write_bytes(b"new frame")
    folder = tmp_path / "dest"
    folder.mkdir()
    (folder / "frame_0001.png").write_bytes(b"old frame")
    busy = pytest.raises(PeerfarmError, match=r"frame_0001\.png: another program holds it")
    with (folder / "frame_0001.png").open("rb"), busy:  # an image viewer shows it
        place_copy(source, folder, "frame_0001.png")
    assert [p.name for p in folder.iterdir()] == ["frame_0001.png"]  # no partial file left
    assert place_copy(source, folder, "frame_0001.png").read_bytes() == b"new frame"
