"""What the benchmarks need beyond peerfarm, installed on first use with clear output.

Owns the benchmark-only dependencies: Debian's ``redis-server`` (``apt-get install -y``, as
root) and, inside the running virtualenv, ``rq`` (Buildcat's engine) and ``matplotlib`` (the
plot). Nothing here is imported by peerfarm itself.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def have_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def ensure_pip(package: str, module: str | None = None) -> bool:
    """``pip install package`` into this interpreter's environment unless ``module`` imports."""
    module = module or package
    if have_module(module):
        return True
    say(f"installing {package} into {sys.prefix} (pip)")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", package],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    importlib.invalidate_caches()
    if result.returncode != 0 or not have_module(module):
        say(f"could not install {package}: {result.stderr.strip()[-400:]}")
        return False
    return True


def redis_server_path() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )


def ensure_redis_server() -> str | None:
    """The path of ``redis-server``, installing Debian's package first if we are root."""
    found = redis_server_path()
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        say("redis-server is missing: run `apt-get install -y redis-server` as root")
        return None
    say("installing redis-server (apt-get install -y redis-server)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "redis-server"],
    ):
        result = subprocess.run(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            check=False,
        )
        if result.returncode != 0:
            say(f"`{' '.join(argv)}` failed: {result.stderr.strip()[-400:]}")
            return None
    return redis_server_path()


def ensure_rq() -> bool:
    """redis-server and the rq package, both ready."""
    server = ensure_redis_server()
    return server is not None and ensure_pip("rq")


def ensure_matplotlib() -> bool:
    return ensure_pip("matplotlib")
