"""The verbs about another peer's availability, from any peer: ``hold``, ``release``, ``drain``.

``hold HOST`` lets HOST finish the frames it renders and take no more; ``drain HOST --now``
hands them back at once too; ``release HOST`` lets it take work again. Each writes one
replicated ledger register (it survives restarts of HOST and of the peer that wrote it) and
answers once that write is on disk; HOST reacts when gossip brings it (well under a second on
a LAN).
"""

from __future__ import annotations

from pathlib import Path

import click

from peerfarm.cli.app import cli, common, connect, print_json
from peerfarm.cli.views import host_text


@cli.command()
@common
@click.argument("host")
def hold(data_dir: Path | None, as_json: bool, host: str) -> None:
    """HOST finishes its current frames and takes no more (until release; survives restarts)."""
    with connect(data_dir) as client:
        result = client.host(host, "hold")
    print_json(result) if as_json else click.echo(host_text(result))


@cli.command()
@common
@click.argument("host")
def release(data_dir: Path | None, as_json: bool, host: str) -> None:
    """HOST takes work again after a hold or a drain."""
    with connect(data_dir) as client:
        result = client.host(host, "release")
    print_json(result) if as_json else click.echo(host_text(result))


@cli.command()
@common
@click.argument("host")
@click.option("--now", is_flag=True, help="Stop its renders and hand their frames back now.")
def drain(data_dir: Path | None, as_json: bool, host: str, now: bool) -> None:
    """HOST takes no more work; with --now its frames go back to the farm at once."""
    with connect(data_dir) as client:
        result = client.host(host, "drain", now=now)
    print_json(result) if as_json else click.echo(host_text(result))
