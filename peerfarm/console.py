"""The ``peerfarm`` program's entry: the console script and ``python -m peerfarm``.

A command is a short process: it imports some three hundred modules, answers, and exits. The
garbage collector has nothing to do in that time but walk what was just imported, and once
more, over everything, as the interpreter shuts down. So the imports run with it off, and
before returning the process's objects are frozen (``gc.freeze``): a quarter of a short
command's start and most of its exit (``peerfarm status`` ends some 20 ms sooner). Commands
that run long (``up``, ``demo``, ``submit --wait``) collect as usual once started.
"""

from __future__ import annotations

import gc


def run() -> int:
    """Run ``peerfarm`` with the process's arguments; returns the exit status."""
    gc.disable()
    try:
        from peerfarm.cli.app import main
    finally:
        gc.enable()
    code = main()
    gc.freeze()  # the process ends now: no last collection of everything it loaded
    return code
