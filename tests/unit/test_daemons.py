"""The command line ``peerfarm.testing.daemons`` gives a real daemon, pure: loopback only."""

from __future__ import annotations

from pathlib import Path

from peerfarm.testing.daemons import PEERFARM, up_argv


def test_everything_binds_loopback_and_mdns_only_when_asked(tmp_path: Path) -> None:
    argv = up_argv(
        ["py", "-m", "peerfarm"], tmp_path / "p2", "demo-2", 4000, tmp_path / "k",
        joins=[3000], mdns=True, web_port=4001, allow_command=True, slots=2,
        extra=["--tags", "gpu"],
    )  # fmt: skip
    assert argv[:4] == ["py", "-m", "peerfarm", "up"]

    def value(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert value("--listen") == "127.0.0.1:4000" and value("--web") == "127.0.0.1:4001"
    assert value("--interface") == "127.0.0.1" and value("--join") == "127.0.0.1:3000"
    assert value("--slots") == "2" and value("--preset") == "fast"
    assert "--allow-command" in argv and argv[-2:] == ["--tags", "gpu"]
    first = up_argv(PEERFARM, tmp_path, "demo-1", 1, tmp_path / "k")
    assert "--join" not in first and "--allow-command" not in first
    assert "--no-mdns" in first and "--no-web" in first and "--interface" not in first
