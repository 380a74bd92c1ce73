"""The ``peerfarm`` click group: running a verb, its errors and exit codes, shared options.

Rules:

- Exit codes: 0 ok, 1 a job failed (``submit --wait``) or an operation failed on the daemon,
  2 a usage error, 3 no daemon / unreachable / refused, 130 interrupted.
- Every user mistake is one line on stderr and never a traceback; an unexpected error is one
  line plus a hint to run with ``--verbose``.
- ``--json`` output is exactly what the API returned (keys are only ever added).
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from peerfarm import __version__
from peerfarm.client import ENV_DATA_DIR, FarmClient, resolve_data_dir
from peerfarm.errors import ControlError, PeerfarmError, UsageError
from peerfarm.plaintext import printable

if TYPE_CHECKING:
    from rich.console import Console

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])


def console(err: bool = False) -> Console:
    from rich.console import Console  # imported when output is written (start-up time)

    return Console(
        file=sys.stderr if err else sys.stdout, highlight=False, emoji=False, soft_wrap=True
    )


def print_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def common(func: F) -> F:
    """``--data-dir`` and ``--json``, accepted by every verb."""
    func = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=f"The daemon's data dir (default: ${ENV_DATA_DIR}, else the user data dir).",
    )(func)
    func = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)
    return func


@contextmanager
def connect(data_dir: Path | None) -> Iterator[FarmClient]:
    """A client of the local daemon of ``data_dir`` (``--data-dir``, env or default)."""
    client = FarmClient.connect(resolve_data_dir(data_dir))
    try:
        yield client
    finally:
        client.close()


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if isinstance(exc, ControlError):
        return EXIT_NO_DAEMON
    return EXIT_FAILED


#: Where each verb is defined: its module is imported only when the verb runs (or help lists
#: it), so a short-lived command such as ``submit`` or ``status`` does not pay for importing the
#: daemon's or every other verb's dependencies (tests/unit/cli checks the table is complete).
VERBS: dict[str, str] = {
    **dict.fromkeys(("up", "key", "dashboard", "demo", "addon"), "host"),
    **dict.fromkeys(("hold", "release", "drain"), "hosts"),
    **dict.fromkeys(
        ("submit", "status", "peers", "cancel", "pause", "resume", "retry", "check", "logs",
         "fetch", "encode"),
        "jobs",
    ),
}  # fmt: skip


class _Cli(click.Group):
    """The ``peerfarm`` group: runs a verb and turns every error into one line + exit code.
    Verbs register on it when their module is imported (:data:`VERBS`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*VERBS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = VERBS.get(cmd_name)
        if module is not None and cmd_name not in self.commands:
            importlib.import_module(f"peerfarm.cli.{module}")
        return super().get_command(ctx, cmd_name)

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> int:
        argv = list(sys.argv[1:] if args is None else args)
        verbose = "--verbose" in argv or "-v" in argv
        code = _run_guarded(
            lambda: super(_Cli, self).main(
                argv, prog_name or "peerfarm", complete_var, standalone_mode=False, **extra
            ),
            verbose,
        )
        if standalone_mode:
            sys.exit(code)
        return code


def _run_guarded(run: Callable[[], Any], verbose: bool) -> int:
    try:
        result = run()
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        err = console(err=True)  # rich is imported only when there is something to say
        err.print(f"peerfarm: {exc.format_message()}", markup=False)
        return EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        console(err=True).print("peerfarm: interrupted", markup=False)
        return EXIT_INTERRUPTED
    except PeerfarmError as exc:
        err = console(err=True)
        if verbose:
            err.print_exception()
        err.print(f"peerfarm: {printable(exc)}", markup=False)
        return exit_code(exc)
    except Exception as exc:  # the last line of defence: one line, details on request
        err = console(err=True)
        if verbose:
            err.print_exception()
        err.print(
            f"peerfarm: unexpected error: {type(exc).__name__}: {printable(exc)}", markup=False
        )
        if not verbose:
            err.print("run with --verbose for details", markup=False)
        return EXIT_FAILED
    return result if isinstance(result, int) else EXIT_OK


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="peerfarm")
@click.option("-v", "--verbose", is_flag=True, help="Show details of unexpected errors.")
def cli(verbose: bool) -> None:
    """A render farm with no server: every host runs `peerfarm up`."""


def main(argv: Sequence[str] | None = None) -> int:
    """The console script ``peerfarm``: returns the exit status."""
    return int(cli.main(argv, prog_name="peerfarm", standalone_mode=False))
