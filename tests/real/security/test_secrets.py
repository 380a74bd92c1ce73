"""Secrets (issue 10): file modes, a refused world-readable key, and the key kept out of every
output a daemon produces (its -v log, status and peers JSON, metrics, the dashboard, mDNS TXT)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import httpx

from peerfarm.gossip.crypto import Keyring, load_key_file, load_or_create_key_file
from peerfarm.gossip.discovery import build_txt
from peerfarm.testing.daemons import LocalFarm, wait_until


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _key_forms(key_file: Path) -> list[str]:
    """The key as it could leak: base64 (file text), url-safe base64, hex."""
    key = load_key_file(key_file)
    return [
        base64.b64encode(key).decode(),
        base64.urlsafe_b64encode(key).decode().rstrip("="),
        key.hex(),
    ]


def test_created_key_file_is_0600(tmp_path: Path) -> None:
    path = tmp_path / "data" / "farm.key_file"
    load_or_create_key_file(path)
    assert _mode(path) == 0o600


def test_daemon_refuses_a_key_file_others_can_read_with_one_clear_line(
    farm: LocalFarm, tmp_path: Path
) -> None:
    farm.key_file.chmod(0o644)
    daemon = farm.start("a", wait=False)
    assert daemon.process.wait(timeout=30) == 2
    log = daemon.log()
    errors = [line for line in log.splitlines() if " E " in line]
    assert len(errors) == 1, log
    assert "accessible by group/other" in errors[0] and f"chmod 600 {farm.key_file}" in errors[0]
    assert "Traceback" not in log
    assert not (daemon.data_dir / "control.json").exists()


def test_key_never_appears_in_log_status_metrics_or_dashboard(
    farm: LocalFarm, tmp_path: Path
) -> None:
    a = farm.start("a", "-v", "--allow-command")
    b = farm.start("b", "-v", join=a)
    wait_until(lambda: len(a.status()["peers"]) == 2, 20, "two peers")
    scene = tmp_path / "s.sh"
    scene.write_text('#!/bin/sh\necho x > "$PEERFARM_OUTPUT_DIR/f.txt"\n')
    job = a.cli_json("submit", str(scene), "1-2", "--renderer", "command")["job"]
    wait_until(lambda: a.status(job)["jobs"][0]["frames_delivered"] == 2, 30, "delivered")

    control = a.data_dir / "control.json"
    assert _mode(control) == 0o600
    assert _mode(farm.key_file) == 0o600
    info = json.loads(control.read_text())
    headers = {"Authorization": f"Bearer {info['token']}"}
    pages = []
    with httpx.Client(base_url=info["url"], headers=headers, timeout=10) as http:
        for path in ("/", "/api/status", "/api/peers", "/metrics", f"/api/jobs/{job}/frames/1/log"):
            response = http.get(path)
            assert response.status_code == 200, (path, response.text)
            pages.append(response.text)
    outputs = [
        a.log(),
        b.log(),
        a.cli("status", "--json").stdout,
        a.cli("peers", "--json").stdout,
        json.dumps(
            build_txt(
                node_id="0" * 16,
                farm_id=Keyring([load_key_file(farm.key_file)]).farm_id,
                protocol=1,
                port=1,
                name="a",
            )
        ),
        *pages,
    ]
    assert "peer joined" in a.log()  # -v logging really was on and captured
    for text in outputs:
        for secret in _key_forms(farm.key_file):
            assert secret not in text
    web_password = Keyring([load_key_file(farm.key_file)]).web_password
    assert not any(web_password in text for text in outputs)
