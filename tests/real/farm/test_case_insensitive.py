"""A case-insensitive disk (FAT, as macOS, Windows and SMB shares behave): the content store
works on it, and a shared root typed in another case than the disk's still renders in place.

The disk is a FAT image mounted for the test (``tests/support/casefold.py``), skipped with the
reason where this machine cannot mount one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from peerfarm import platform
from peerfarm.files.place import place_copy
from peerfarm.files.store import ContentStore
from peerfarm.testing.daemons import LocalFarm, wait_until
from tests.real.farm.test_farm import DETERMINISTIC, expected
from tests.support.casefold import case_insensitive_folder


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with case_insensitive_folder(tmp_path) as folder:
        yield folder


def test_the_store_and_placed_copies_on_a_case_insensitive_disk(disk: Path) -> None:
    store = ContentStore(disk / "Store", limit_bytes=64)
    first = store.put_bytes(b"a" * 40)
    assert store.verify(first) and store.has(first)
    render = disk / "Frame.PNG"
    render.write_bytes(b"b" * 40)
    second = store.adopt_file(render)
    assert store.evict(needed=0, pinned=lambda d: d == second) == [first]
    placed = place_copy(store.path(second), disk / "Out", "frame_0001.png")
    assert placed.read_bytes() == b"b" * 40
    place_copy(store.path(second), disk / "OUT", "FRAME_0001.png")  # the same file here
    assert [p.name.lower() for p in (disk / "Out").iterdir()] == ["frame_0001.png"]
    typed = disk / "store" / second[:2].upper()
    assert platform.on_disk_case(typed) == disk / "Store" / second[:2]


def test_a_shared_root_typed_in_another_case_renders_without_transfers(
    farm: LocalFarm, disk: Path
) -> None:
    (disk / "NAS" / "Shots").mkdir(parents=True)
    scene = disk / "NAS" / "Shots" / "Seq.sh"
    scene.write_text(DETERMINISTIC)  # FAT files are executable for their owner
    typed_root = disk / "nas"  # as an artist types it; the disk says NAS
    a = farm.start("n1", "--allow-command", "--slots", "0", "--shared-root", str(typed_root))
    b = farm.start("n2", "--allow-command", "--shared-root", str(disk / "NAS"), join=a)
    wait_until(lambda: a.alive_names() == {"n1", "n2"}, 20, "farm formed")
    out = disk / "Nas" / "RENDERS" / "seq"
    typed_scene = disk / "nAs" / "shots" / "SEQ.SH"
    job = a.cli_json("submit", str(typed_scene), "1-3", "--output", str(out))["job"]
    wait_until(lambda: a.status(job)["jobs"][0]["frames_delivered"] == 3, 60, "delivered")
    for frame in range(1, 4):
        assert (out / f"frame_{frame:04d}.txt").read_bytes() == expected(frame)
    assert [p.name for p in (disk / "NAS").iterdir() if p.is_dir()] == ["Shots", "RENDERS"]
    # Nothing crossed the network: n2 read the scene in place, n1 fetched no output.
    digest = hashlib.sha256(scene.read_bytes()).hexdigest()
    assert not (b.data_dir / "store" / digest[:2] / digest[2:]).exists()
    store_a = a.data_dir / "store"
    assert not [p for p in store_a.rglob("*") if p.is_file() and p.parent.name != "tmp"]
