"""``peerfarm key``: the farm key from the data dir, ``$PEERFARM_KEY`` or ``--key-file``."""

from __future__ import annotations

import json
from pathlib import Path

from peerfarm.client import key_file_path
from peerfarm.gossip.crypto import encode_key, generate_key, load_or_create_key_file
from tests.support.cli import Run, one_error_line


def test_key(run: Run, tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    missing = run("key", "--data-dir", data_dir)
    assert missing.exit_code == 2 and "peerfarm up --data-dir" in one_error_line(missing)
    key = load_or_create_key_file(key_file_path(data_dir))
    assert run("key", "--data-dir", data_dir).stdout.strip() == encode_key(key)
    other = encode_key(generate_key())
    from_env = run("key", "--json", "--data-dir", data_dir, env={"PEERFARM_KEY": other})
    assert json.loads(from_env.stdout) == {"key": other}
    bad_env = run("key", "--data-dir", data_dir, env={"PEERFARM_KEY": "not-base64!"})
    assert bad_env.exit_code == 2 and "PEERFARM_KEY" in one_error_line(bad_env)
    key_file = data_dir / "farm.key"
    key_file.chmod(0o644)
    open_file = run("key", "--key-file", key_file)
    assert open_file.exit_code == 2 and "chmod 600" in one_error_line(open_file)
