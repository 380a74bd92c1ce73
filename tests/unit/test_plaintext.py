"""Farm text made inert for terminals and logs (issue 17, item 7)."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerfarm.plaintext import PlainFormatter, printable


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("shot_010 v2", "shot_010 v2"),
        ("[/] [bold]x[/bold]", "[/] [bold]x[/bold]"),  # markup is Rich's business, not ours
        ("a\x1b[2Jb", "a\\x1b[2Jb"),
        ("line\nfake: INFO", "line\\nfake: INFO"),
        ("over\rwrite", "over\\rwrite"),
        ("\x07\x00\x7f\x9b", "\\x07\\x00\\x7f\\x9b"),
        ("gnp.\u202eexe", "gnp.\\u202eexe"),
        ("a\u2028b\u2066c", "a\\u2028b\\u2066c"),
        ("\ud800", "\\ud800"),
        ("日本語 é 🏳️‍🌈", "日本語 é 🏳️‍🌈"),  # letters and emoji sequences stay
    ],
)
def test_printable(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_log_tails_keep_their_lines_but_not_their_escapes() -> None:
    assert printable("one\n\ttwo\x1b[0m\r", keep_newlines=True) == "one\n\ttwo\\x1b[0m\\r"


@given(st.text())
def test_nothing_unsafe_survives(text: str) -> None:
    shown = printable(text)
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in shown)
    assert "\u202e" not in shown and "\u2028" not in shown
    shown.encode("utf-8")  # no lone surrogate left to crash a terminal write


def test_the_log_formatter_escapes_messages() -> None:
    message = ("x\x1b[31m",)
    record = logging.LogRecord("peerfarm", logging.INFO, __file__, 1, "job %s", message, None)
    assert PlainFormatter("%(message)s").format(record) == "job x\\x1b[31m"
    assert record.getMessage() == "job x\x1b[31m"  # other handlers see the record unchanged
