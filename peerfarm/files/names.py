"""File names that come from the network: checked before they ever become paths.

Every name a peer sends (an output file name, an asset in a packed scene) passes through
``safe_name`` before it is joined to a folder, and ``peerfarm.files.place.safe_join`` is the only
way to make that join.
The rule is a whitelist of shape rather than a blacklist of attacks: a safe name is one plain
path component that every supported OS (Linux, macOS, Windows) stores as the same single file
inside the folder. Pure: nothing here touches the filesystem (the ledger's codec imports it).
"""

from __future__ import annotations

import re

from peerfarm.errors import RemoteProtocolError

__all__ = ["MAX_NAME_BYTES", "UnsafeName", "folder_name", "safe_name"]

#: Longest accepted name in UTF-8 bytes. Most filesystems allow 255; the margin leaves room for
#: the suffixes we add (".part", a counter) without crossing the limit.
MAX_NAME_BYTES = 200

#: Windows reserves these base names in every folder, whatever the extension or case
#: ("con.txt", "Com1.tar.gz"). Windows also treats the superscript digits 1-3 as digits here.
_DEVICE_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"{port}{digit}" for port in ("COM", "LPT") for digit in "123456789\u00b9\u00b2\u00b3"}
)

_DRIVE_PREFIX = re.compile(r"^[A-Za-z]:")
# Exactly the characters of Unicode categories Cc (C0, DEL, C1) and Cs (lone surrogates): one
# regex search instead of a category lookup per character (names arrive 100,000 at a time).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class UnsafeName(RemoteProtocolError):
    """A name from a peer that could escape its folder or means something special to an OS."""

    def __init__(self, name: object, reason: str) -> None:
        super().__init__(f"unsafe file name {name!r}: {reason}")
        self.name = name
        self.reason = reason


def _problem(name: str) -> str | None:
    """Why ``name`` is not one plain, portable path component, or None if it is."""
    if not name:
        return "empty"
    if name in (".", ".."):
        return "refers to a folder, not a file"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if _CONTROL.search(name):
        return "contains a control character, NUL or a lone surrogate"
    if _DRIVE_PREFIX.match(name):
        return "starts with a drive letter"
    if ":" in name:
        return "contains ':' (a drive or an NTFS stream on Windows)"
    if name.split(".", 1)[0].rstrip(" ").upper() in _DEVICE_NAMES:
        return "is a Windows device name"
    if name[-1] in ". ":
        return "ends with a dot or a space (Windows drops them)"
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"longer than {MAX_NAME_BYTES} bytes in UTF-8"
    return None


def safe_name(name: str) -> str:
    """Return ``name`` unchanged if it is one safe path component, else raise ``UnsafeName``.

    Refused: empty, ``.``, ``..``, any ``/`` or ``\\``, NUL and control characters, absolute
    paths, drive letters (``C:``) and any ``:``, Windows device names (CON, PRN, AUX, NUL,
    COM1-9, LPT1-9; any case, with or without extension), a trailing dot or space, and names
    over ``MAX_NAME_BYTES`` bytes of UTF-8.
    """
    if not isinstance(name, str):
        raise UnsafeName(name, f"not a string but {type(name).__name__}")
    reason = _problem(name)
    if reason is not None:
        raise UnsafeName(name, reason)
    return name


def folder_name(name: str) -> str:
    """A job name made into one plain folder name (``peerfarm-out/<it>/``): letters, digits,
    ``-``, ``_`` and ``.`` kept, everything else ``_``, no leading or trailing dots."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._")
    cut = cleaned.encode("utf-8")[:MAX_NAME_BYTES].decode("utf-8", "ignore").rstrip(".")
    return cut or "job"
