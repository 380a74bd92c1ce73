"""A case-insensitive folder for real tests: a small FAT image, mounted for one test.

macOS and Windows disks (APFS, NTFS) and most SMB shares are case-insensitive but keep the case
a name was created with; FAT is the same, and Linux can mount one without special kernel
features: through the kernel (``mount -o loop``, needs root and the vfat module) or through
FUSE (``fusefat``, needs /dev/fuse). ``case_insensitive_folder`` tries both and skips the test
with the reason when neither works here; the mount is always undone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Size of the FAT image: small scenes and frames only.
IMAGE_BYTES = 32 * 1024 * 1024


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def _mount(image: Path, mountpoint: Path) -> list[str] | str:
    """The command that unmounts ``mountpoint`` once mounted, or why nothing could mount it."""
    reasons = []
    if os.geteuid() == 0 and shutil.which("mount"):
        done = _run("mount", "-o", "loop,uid=0,gid=0,fmask=0022,dmask=0022", str(image),
                    str(mountpoint))  # fmt: skip
        if done.returncode == 0:
            return ["umount", str(mountpoint)]
        reasons.append(f"mount -o loop: {done.stderr.strip().splitlines()[0][:120]}")
    if shutil.which("fusefat") and os.path.exists("/dev/fuse"):
        done = _run("fusefat", "-o", "rw+", str(image), str(mountpoint))
        if done.returncode == 0:
            return ["fusermount", "-u", str(mountpoint)]
        reasons.append(f"fusefat: {(done.stderr or done.stdout).strip()[-120:]}")
    else:
        reasons.append("no fusefat or /dev/fuse (apt-get install fusefat)")
    return "; ".join(reasons)


@contextlib.contextmanager
def case_insensitive_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder on a case-insensitive, case-preserving file system (FAT), empty, writable."""
    mkfs = shutil.which("mkfs.vfat") or shutil.which("mkfs.fat")
    if mkfs is None:
        pytest.skip("no mkfs.vfat to make a case-insensitive disk (apt-get install dosfstools)")
    image = tmp_path / "case-insensitive.img"
    with image.open("wb") as f:
        f.truncate(IMAGE_BYTES)
    made = _run(mkfs, str(image))
    if made.returncode != 0:
        pytest.skip(f"mkfs.vfat failed: {made.stderr.strip()[:200]}")
    mountpoint = tmp_path / "case-insensitive"
    mountpoint.mkdir()
    unmount = _mount(image, mountpoint)
    if isinstance(unmount, str):
        pytest.skip(f"cannot mount a FAT image here: {unmount}")
    try:
        probe = mountpoint / "Probe"
        probe.mkdir()
        if not (mountpoint / "PROBE").is_dir():
            pytest.skip("the FAT mount here is case-sensitive")
        probe.rmdir()
        yield mountpoint
    finally:
        for _ in range(50):
            if _run(*unmount).returncode == 0:
                break
            time.sleep(0.1)
