"""Which Cycles compute devices this machine has, found cheaply: no Blender, no waiting.

A peer advertises the list in its metadata (``devices``), so a Blender job's ``device`` option
matches like ``submit --require`` (``scheduler.eligibility.requirement_reason``). Detection
only looks for the driver files each Cycles backend needs and never starts a process, so it
cannot slow or block ``peerfarm up`` (asking Cycles itself means importing Blender: seconds).
It can be wrong in one direction: a driver without a card Cycles supports. Such a peer takes
the job, and the generated settings script fails the frame with "no CUDA device for Cycles
here", so after a few failures the peer stops taking the job (a ban) and others go on.
``PEERFARM_CYCLES_DEVICES=CPU,CUDA`` replaces the detection (a machine it gets wrong, tests).

=======  ============================================================================
CPU      always
CUDA,    NVIDIA's driver: ``/dev/nvidiactl`` or ``/proc/driver/nvidia/version`` (Linux),
OPTIX    ``nvcuda.dll`` in the system folder (Windows)
HIP      AMD's ROCm kernel driver ``/dev/kfd`` (Linux), ``amdhip64*.dll`` (Windows)
METAL    macOS on Apple silicon
=======  ============================================================================

oneAPI (Intel Arc) is never guessed: its driver files exist on machines whose integrated
graphics Cycles cannot use; name it in ``PEERFARM_CYCLES_DEVICES`` where it works.
"""

from __future__ import annotations

import glob
import os
import platform
from collections.abc import Callable, Mapping

from peerfarm.renderers.options import BLENDER_DEVICES

ENV_DEVICES = "PEERFARM_CYCLES_DEVICES"


def detect(
    *,
    system: str | None = None,
    machine: str | None = None,
    exists: Callable[[str], bool] = os.path.exists,
    matches: Callable[[str], list[str]] = glob.glob,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """The Cycles devices of this machine, ``CPU`` first (see the module doc)."""
    env = os.environ if environ is None else environ
    if env.get(ENV_DEVICES):
        return from_text(env[ENV_DEVICES])
    system = system or platform.system()
    machine = (machine or platform.machine()).lower()
    found = ["CPU"]
    if system == "Linux":
        if exists("/dev/nvidiactl") or exists("/proc/driver/nvidia/version"):
            found += ["CUDA", "OPTIX"]
        if exists("/dev/kfd"):
            found.append("HIP")
    elif system == "Windows":
        root = env.get("SystemRoot", r"C:\Windows")
        if exists(os.path.join(root, "System32", "nvcuda.dll")):
            found += ["CUDA", "OPTIX"]
        if matches(os.path.join(root, "System32", "amdhip64*.dll")):
            found.append("HIP")
    elif system == "Darwin" and machine in ("arm64", "aarch64"):
        found.append("METAL")
    return found


def from_text(text: str) -> list[str]:
    """``"cpu, cuda"`` -> ``["CPU", "CUDA"]``: known backends only, CPU always first."""
    names = [part.strip().upper() for part in text.split(",")]
    chosen = [n for n in BLENDER_DEVICES if n in names and n not in ("CPU", "GPU")]
    return ["CPU", *chosen]
