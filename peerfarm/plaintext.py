"""Text from the farm shown as plain text: names, errors and log lines made inert (pure).

Job names, peer names, frame errors and renderer logs come from users and from other peers. On
their way to a terminal or a log file they pass through :func:`printable`, which replaces every
control character (C0, DEL, C1), lone surrogate, line or paragraph separator and bidirectional
override by a visible escape (``\\x1b``, ``\\n``, ``\\u202e``), so a name cannot move the
cursor, recolour or clear the terminal, fake a log line or reorder what is shown. Rich markup is
a separate matter: the CLI never lets Rich interpret farm text (it wraps it in
``rich.text.Text``). :class:`PlainFormatter` applies the same rule to every log record.
"""

from __future__ import annotations

import logging
import re
import unicodedata

__all__ = ["PlainFormatter", "printable"]

#: Bidirectional controls that reorder how the text around them is displayed ("Trojan Source").
_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_CANDIDATE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def _unsafe(char: str) -> bool:
    return char in _BIDI or unicodedata.category(char) in _UNSAFE_CATEGORIES


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` with every control character replaced by a visible escape.

    With ``keep_newlines`` (a log tail) newlines and tabs stay as they are; everything else of
    the kind is still escaped, including ``\\r`` (it would overwrite the line on a terminal).
    """
    value = str(text)
    if _CANDIDATE.search(value) is None:
        return value

    def replace(match: re.Match[str]) -> str:
        char = match.group()
        if keep_newlines and char in "\n\t":
            return char
        return _escape(char) if _unsafe(char) else char

    return _CANDIDATE.sub(replace, value)


class PlainFormatter(logging.Formatter):
    """A log formatter whose messages are :func:`printable` (tracebacks keep their lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        safe = logging.makeLogRecord(record.__dict__)
        safe.message = printable(record.message)
        return super().formatMessage(safe)
