"""A stand-in for ``peerfarm up`` while the real CLI (peerfarm/cli.py) is not installed.

Owns nothing but the translation of the ``up`` flags the cluster harness uses into
:class:`peerfarm.daemon.NodeOptions`. The harness prefers the real ``peerfarm up`` whenever
``peerfarm.cli`` can be imported; this file exists so the suite runs before it lands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from peerfarm.daemon import NodeOptions, run_daemon


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def parse(argv: list[str]) -> NodeOptions:
    parser = argparse.ArgumentParser(prog="launch.py up")
    parser.add_argument("verb", choices=["up"])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--name", default="")
    parser.add_argument("--listen", type=_address, default=("0.0.0.0", 7946))
    parser.add_argument("--join", type=_address, action="append", default=[])
    parser.add_argument("--interface", action="append", default=[])
    parser.add_argument("--no-mdns", action="store_true")
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--allow-command", action="store_true")
    parser.add_argument("--key-file", type=Path)
    parser.add_argument("--preset", default="lan")
    parser.add_argument("--no-web", action="store_true")
    args = parser.parse_args(argv)
    return NodeOptions(
        data_dir=args.data_dir,
        name=args.name,
        listen=args.listen,
        joins=args.join,
        interfaces=args.interface,
        mdns=not args.no_mdns,
        slots=args.slots,
        allow_command=args.allow_command,
        key_file=args.key_file,
        preset=args.preset,
        web=None if args.no_web else ("127.0.0.1", 7947),
    )


if __name__ == "__main__":
    sys.exit(run_daemon(parse(sys.argv[1:])))
