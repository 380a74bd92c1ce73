"""The CLI run in-process (``run``), from :mod:`tests.support.cli`."""

from tests.support.cli import run

__all__ = ["run"]
