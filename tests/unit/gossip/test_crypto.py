"""The farm key: file handling, sealing, rotation and derived values."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerfarm.errors import AuthenticationError, UsageError
from peerfarm.gossip.crypto import (
    SEAL_OVERHEAD,
    Keyring,
    decode_key,
    encode_key,
    generate_key,
    load_key_file,
    load_or_create_key_file,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))


def test_generate_key_is_32_random_bytes() -> None:
    keys = {generate_key() for _ in range(8)}
    assert len(keys) == 8
    assert all(len(k) == 32 for k in keys)


def test_encode_decode_roundtrip() -> None:
    text = encode_key(KEY_A)
    assert base64.b64decode(text) == KEY_A
    assert decode_key(text) == KEY_A
    assert decode_key(f"  {text}\n") == KEY_A


@pytest.mark.parametrize(
    "text",
    [
        "not base64 at all!",
        base64.b64encode(b"short").decode(),
        base64.b64encode(b"x" * 33).decode(),
        "",
        "é",
    ],
)
def test_decode_key_rejects_bad_text(text: str) -> None:
    with pytest.raises(UsageError, match="farm key") as info:
        decode_key(text)
    if text:
        assert text not in str(info.value)  # never echo a possible secret


def test_create_key_file_private_atomic_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "farm.key"
    key = load_or_create_key_file(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == encode_key(key) + "\n"
    assert load_or_create_key_file(path) == key
    assert load_key_file(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["farm.key"]  # no temp file left


def test_create_never_overwrites_existing_key(tmp_path: Path) -> None:
    path = tmp_path / "farm.key"
    path.write_text(encode_key(KEY_A) + "\n")
    path.chmod(0o600)
    assert load_or_create_key_file(path) == KEY_A


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644])
def test_refuses_key_file_readable_by_others(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "farm.key"
    path.write_text(encode_key(KEY_A) + "\n")
    path.chmod(mode)
    for load in (load_key_file, load_or_create_key_file):
        with pytest.raises(UsageError) as info:
            load(path)
        assert f"chmod 600 {path}" in str(info.value)


def test_load_key_file_missing_and_malformed(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    with pytest.raises(UsageError, match="no farm key file"):
        load_key_file(missing)
    assert not missing.exists()
    bad = tmp_path / "bad.key"
    fd = os.open(bad, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"\xff\xfe garbage\n")
    os.close(fd)
    with pytest.raises(UsageError, match="malformed") as info:
        load_key_file(bad)
    assert str(bad) in str(info.value)


def test_seal_open_roundtrip_and_overhead() -> None:
    ring = Keyring([KEY_A])
    blob = ring.seal(b"hello", b"aad")
    assert len(blob) == len(b"hello") + SEAL_OVERHEAD
    assert ring.open(blob, b"aad") == b"hello"
    assert ring.seal(b"hello", b"aad") != blob  # random nonce per seal


def test_open_rejects_tampering_wrong_aad_wrong_key_and_short_blobs() -> None:
    ring = Keyring([KEY_A])
    blob = ring.seal(b"payload", b"aad")
    with pytest.raises(AuthenticationError):
        ring.open(blob, b"other aad")
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(AuthenticationError):
        ring.open(bytes(tampered), b"aad")
    with pytest.raises(AuthenticationError):
        Keyring([KEY_B]).open(blob, b"aad")
    for short in (b"", b"x" * (SEAL_OVERHEAD - 1)):
        with pytest.raises(AuthenticationError, match="too short"):
            ring.open(short, b"aad")


def test_rotation_first_key_seals_every_key_opens() -> None:
    old, new = Keyring([KEY_A]), Keyring([KEY_B])
    rotating = Keyring([KEY_B, KEY_A])
    assert rotating.open(old.seal(b"from old", b""), b"") == b"from old"
    assert rotating.open(new.seal(b"from new", b""), b"") == b"from new"
    assert rotating.open_with_index(old.seal(b"x", b""), b"") == (1, b"x")
    assert new.open(rotating.seal(b"to new", b""), b"") == b"to new"
    with pytest.raises(AuthenticationError):
        old.open(rotating.seal(b"to old", b""), b"")
    assert rotating.narrowed(1).open(old.seal(b"y", b""), b"") == b"y"
    with pytest.raises(AuthenticationError):
        rotating.narrowed(1).open(new.seal(b"y", b""), b"")


@given(st.binary(max_size=2000), st.binary(max_size=64))
def test_seal_open_property(plaintext: bytes, aad: bytes) -> None:
    ring = Keyring([KEY_A, KEY_B])
    assert ring.open(ring.seal(plaintext, aad), aad) == plaintext


def test_farm_id_and_web_password_are_derived_not_revealing() -> None:
    ring = Keyring([KEY_A])
    assert len(ring.farm_id) == 16
    int(ring.farm_id, 16)
    assert ring.farm_id == Keyring([KEY_A, KEY_B]).farm_id  # only the primary key counts
    assert ring.farm_id != Keyring([KEY_B]).farm_id
    assert ring.farm_id not in KEY_A.hex()
    password = ring.web_password
    assert len(password) == 24
    assert set(password) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert password != Keyring([KEY_B]).web_password
    assert ring.farm_id[:8] not in base64.urlsafe_b64decode(password + "=" * 8).hex()


def test_repr_never_shows_key_bytes() -> None:
    ring = Keyring([KEY_A, KEY_B])
    text = repr(ring)
    for key in (KEY_A, KEY_B):
        assert repr(key) not in text
        assert key.hex()[:16] not in text
        assert encode_key(key)[:12] not in text
    assert ring.farm_id in text


def test_keyring_rejects_empty_and_bad_keys() -> None:
    with pytest.raises(UsageError):
        Keyring([])
    with pytest.raises(UsageError):
        Keyring([b"short"])
