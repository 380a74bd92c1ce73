"""safe_name / safe_join: names from the network never become paths outside their folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from peerfarm.errors import RemoteProtocolError
from peerfarm.files.names import MAX_NAME_BYTES, UnsafeName, safe_name
from peerfarm.files.place import safe_join

UNSAFE = [
    "",
    ".",
    "..",
    "a/b",
    "/etc/passwd",
    "../up",
    "a\\b",
    "\\\\server\\share",
    "nul\x00byte",
    "tab\there",
    "new\nline",
    "del\x7f",
    "c1\x85control",
    "C:",
    "c:evil",
    "C:\\Windows",
    "file.txt:stream",
    "CON",
    "con",
    "Con.txt",
    "PRN",
    "aux.tar.gz",
    "NUL",
    "COM1",
    "com9.log",
    "LPT1",
    "lpt9.png",
    "COM\u00b9",
    "CON .txt",
    "trailing.",
    "trailing ",
    "...",
    "x" * (MAX_NAME_BYTES + 1),
    "\u00e9" * (MAX_NAME_BYTES // 2 + 1),  # 2 bytes each in UTF-8
    "lone\ud800surrogate",
]

SAFE = [
    "frame_0001.png",
    ".hidden",
    "scene.blend",
    "COM10",
    "console.log",
    "LPT0",
    "auxiliary.txt",
    "con-fig",
    "名前.exr",
    "x" * MAX_NAME_BYTES,
    "a b.png",
]


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafeName) as info:
        safe_name(name)
    assert info.value.reason


@pytest.mark.parametrize("name", SAFE)
def test_safe_names_pass_unchanged(name: str, tmp_path: Path) -> None:
    assert safe_name(name) == name
    assert safe_join(tmp_path, name) == tmp_path / name


@pytest.mark.parametrize("value", [None, 3, b"bytes", ["a"]])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(UnsafeName):
        safe_name(value)  # type: ignore[arg-type]


def test_unsafe_name_is_a_remote_protocol_error() -> None:
    assert issubclass(UnsafeName, RemoteProtocolError)


def test_safe_join_refuses_a_symlink_leading_outside(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "frame.png").symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(UnsafeName, match="outside"):
        safe_join(folder, "frame.png")


def test_safe_join_follows_a_symlinked_folder(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    assert safe_join(link, "a.png") == link / "a.png"


NASTY_ALPHABET = "./\\:CONLPTaux19 \x00\t\u00b9\u00e9"


@given(name=st.one_of(st.text(max_size=300), st.text(alphabet=NASTY_ALPHABET, max_size=12)))
@example(name="..")
@example(name="../../etc/passwd")
@example(name="C:\\x")
@example(name="\x00")
@example(name=".." + "/" * 3)
def test_any_string_is_refused_or_a_direct_child(
    tmp_path_factory: pytest.TempPathFactory, name: str
) -> None:
    folder = tmp_path_factory.getbasetemp() / "names-out"
    try:
        joined = safe_join(folder, name)
    except UnsafeName:
        return
    assert joined.parent == folder
    assert joined.name == name
    assert joined.resolve().parent == folder.resolve()
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
