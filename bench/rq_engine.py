"""Redis + RQ (the engine Buildcat is built on) as the benchmarks' baseline, on loopback.

Owns the baseline farm: a private ``redis-server`` on 127.0.0.1 at a free port (no persistence),
``workers`` warm RQ workers started before any job is queued, and one RQ job per frame that runs
the frame's command through ``subprocess`` as Buildcat does (:func:`bench.rq_tasks.run_command`).
``worker_class`` is RQ's default forking ``Worker`` (a fresh work-horse process per job) or
``SimpleWorker`` (the job runs in the worker process). Every process is stopped on exit.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from bench import ROOT, BenchError
from bench.install import redis_server_path
from peerfarm.testing.daemons import free_port, wait_until

WORKER_CLASSES = {"fork": "rq.worker.Worker", "simple": "rq.worker.SimpleWorker"}
QUEUE = "frames"


class RQFarm:
    """redis-server plus N warm RQ workers of one class. Use as a context manager."""

    def __init__(self, workers: int = 4, worker_class: str = "fork") -> None:
        if worker_class not in WORKER_CLASSES:
            raise ValueError(f"worker_class must be one of {sorted(WORKER_CLASSES)}")
        self.count = workers
        self.worker_class = worker_class
        self.port = 0
        self.redis: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.connection: Any = None

    def __enter__(self) -> RQFarm:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        from redis import Redis

        server = redis_server_path()
        if server is None:
            raise BenchError("redis-server is not installed")
        self._tmp = tempfile.TemporaryDirectory(prefix="peerfarm-bench-rq-")
        self.port = free_port()
        self.redis = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self._tmp.name, "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        self.connection = Redis(host="127.0.0.1", port=self.port)

        def pong() -> bool:
            try:
                return bool(self.connection.ping())
            except Exception:
                return False

        wait_until(pong, 20, "redis-server")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        rq = str(Path(sys.executable).with_name("rq"))
        for _ in range(self.count):
            self.workers.append(subprocess.Popen(
                [rq, "worker", "--url", f"redis://127.0.0.1:{self.port}",
                 "--worker-class", WORKER_CLASSES[self.worker_class], "--quiet", QUEUE],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True,
            ))
        from rq import Worker

        wait_until(lambda: Worker.count(self.connection) >= self.count, 60,
                   f"{self.count} RQ workers", interval=0.05)

    def run_frames(self, argv: list[str], frames: int, timeout: float = 600) -> float:
        """Queue one job per frame running ``argv``; seconds until every job has finished."""
        from rq import Queue

        from bench.rq_tasks import run_command

        queue = Queue(QUEUE, connection=self.connection)
        registry = queue.finished_job_registry
        failed = queue.failed_job_registry
        before = registry.count
        started = time.monotonic()
        with self.connection.pipeline() as pipe:
            for _ in range(frames):
                queue.enqueue(run_command, argv, result_ttl=3600, pipeline=pipe)
            pipe.execute()

        def finished() -> float | None:
            if failed.count:
                raise BenchError(f"{failed.count} RQ jobs failed")
            return time.monotonic() if registry.count - before >= frames else None

        return wait_until(finished, timeout, f"{frames} RQ jobs", interval=0.02) - started

    def close(self) -> None:
        for proc in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait()
        self.workers = []
        if self.connection is not None:
            with contextlib.suppress(Exception):
                self.connection.close()
            self.connection = None
        if self.redis is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.redis.pid, 9)
            self.redis.wait()
            self.redis = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
