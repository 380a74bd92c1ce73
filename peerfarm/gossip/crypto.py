"""The farm key: how it is made, stored, loaded, and used to seal and open every message.

This module owns every use of key material. One symmetric 32-byte key is shared by all the
peers of a farm; ChaCha20-Poly1305 (from ``cryptography``) authenticates and encrypts each
datagram and stream frame. Rules:

- A key file is base64 text plus a newline, mode 0600. We create it atomically and never
  overwrite one that exists; we refuse to use one that group or other can access.
- A :class:`Keyring` holds one or more keys for rotation: the first seals, every one opens.
- Derived values (farm id, web password) come from HMAC-SHA256 with distinct labels, so none
  of them reveals the key or another derived value. Key bytes never appear in a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from peerfarm import platform
from peerfarm.errors import AuthenticationError, UsageError

KEY_LEN = 32
#: Bytes of the random per-message AEAD nonce that prefixes every sealed blob.
NONCE_LEN = 12
#: Bytes of the Poly1305 authentication tag that ends every sealed blob.
TAG_LEN = 16
#: Bytes a sealed blob adds to its plaintext.
SEAL_OVERHEAD = NONCE_LEN + TAG_LEN

_FARM_ID_LABEL = b"peerfarm farm id"
_WEB_LOGIN_LABEL = b"peerfarm web login"


def generate_key() -> bytes:
    """Return a fresh random farm key (32 bytes from the OS CSPRNG)."""
    return secrets.token_bytes(KEY_LEN)


def encode_key(key: bytes) -> str:
    """Return the key as standard base64 text (no newline)."""
    _check_key(key)
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str) -> bytes:
    """Parse base64 text into a key; raise UsageError unless it is exactly 32 bytes.

    The message never quotes the text: it may be a (mistyped) secret.
    """
    try:
        key = base64.b64decode(text.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise UsageError("farm key is not valid base64 text") from None
    if len(key) != KEY_LEN:
        raise UsageError(f"farm key must be {KEY_LEN} bytes, got {len(key)} after base64 decoding")
    return key


def load_key_file(path: Path) -> bytes:
    """Read the key in ``path``; UsageError if missing, unreadable, too open or malformed."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise UsageError(f"no farm key file at {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot open farm key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        _check_private(path, os.fstat(f.fileno()).st_mode)
        raw = f.read(4096)
    try:
        return decode_key(raw.decode("ascii"))
    except (UsageError, UnicodeDecodeError) as exc:
        raise UsageError(f"farm key file {path} is malformed: {exc}") from None


def load_or_create_key_file(path: Path) -> bytes:
    """Load the key in ``path``, first creating it (mode 0600, atomically) if it is missing.

    Creation writes a temporary file in the same folder and hard-links it into place, so a
    reader never sees a half-written key and two peers racing to create it agree on one key.
    """
    if not path.exists():
        _create_key_file(path, generate_key())
    return load_key_file(path)


def _create_key_file(path: Path, key: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(encode_key(key).encode("ascii") + b"\n")
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # somebody else won the race: use theirs
                os.link(tmp, path)
        finally:
            platform.remove(tmp)
    except OSError as exc:
        raise UsageError(f"cannot create farm key file {path}: {exc.strerror}") from None


def _check_private(path: Path, mode: int) -> None:
    if os.name == "nt":  # POSIX mode bits mean nothing there; rely on the ACL of the folder
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(
            f"farm key file {path} is accessible by group/other (mode {stat.S_IMODE(mode):o}); "
            f"fix it with: chmod 600 {path}"
        )


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_LEN:
        raise UsageError(f"a farm key must be {KEY_LEN} bytes")


class Keyring:
    """The keys this peer accepts: the first seals, every one opens (for key rotation).

    Rotation without downtime: add the new key second on every peer, then make it first on
    every peer, then drop the old one. Peers at neighbouring steps can always talk.
    """

    __slots__ = ("_aeads", "_keys")

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise UsageError("a keyring needs at least one farm key")
        for key in keys:
            _check_key(key)
        self._keys: tuple[bytes, ...] = tuple(keys)
        self._aeads = tuple(ChaCha20Poly1305(key) for key in self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Keyring(farm_id={self.farm_id!r}, keys={len(self._keys)})"

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt and authenticate with the primary key: 12-byte nonce + ciphertext + tag."""
        nonce = secrets.token_bytes(NONCE_LEN)
        return nonce + self._aeads[0].encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """The plaintext of ``blob``; AuthenticationError unless some key authenticates it."""
        return self.open_with_index(blob, aad)[1]

    def open_with_index(self, blob: bytes, aad: bytes) -> tuple[int, bytes]:
        """Like :meth:`open`, also returning the index of the key that authenticated it."""
        if len(blob) < SEAL_OVERHEAD:
            raise AuthenticationError(f"sealed blob too short ({len(blob)} bytes)")
        nonce, body = blob[:NONCE_LEN], blob[NONCE_LEN:]
        for index, aead in enumerate(self._aeads):
            try:
                return index, aead.decrypt(nonce, body, aad)
            except InvalidTag:
                continue
        raise AuthenticationError("message failed authentication under every farm key")

    def narrowed(self, index: int) -> Keyring:
        """A keyring holding only key ``index`` (a stream keeps the key its peer proved)."""
        return Keyring([self._keys[index]])

    @property
    def farm_id(self) -> str:
        """16 hex chars naming the farm (in mDNS TXT records); reveals nothing about the key."""
        return self._derive(_FARM_ID_LABEL)[:8].hex()

    @property
    def web_password(self) -> str:
        """24 url-safe chars for the dashboard login, derived from the primary key."""
        return base64.urlsafe_b64encode(self._derive(_WEB_LOGIN_LABEL)).decode("ascii")[:24]

    def _derive(self, label: bytes) -> bytes:
        return hmac.new(self._keys[0], label, hashlib.sha256).digest()
