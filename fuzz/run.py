"""Coverage-guided fuzzing of peerfarm's decoders with atheris (libFuzzer for Python).

    python fuzz/run.py --seconds 600              # every target, 600 s each
    python fuzz/run.py --target ledger --seconds 60
    python fuzz/run.py --replay                   # re-run every saved crash (regressions)

Targets live in ``fuzz/targets.py``. Each runs in its own process (libFuzzer exits when its time
is up), instrumented for coverage, starting from valid seed inputs and the saved corpus in
``fuzz/corpus/<target>/`` (inputs that found new coverage are added there). A crash is saved to
``fuzz/regressions/<target>/crash-<sha1>``; ``tests/unit/security/test_fuzz.py`` replays every
file there, so each crash becomes a regression test once it is committed. Exit status: 0 clean,
1 a crash was found, 2 atheris is not installed (``pip install atheris``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NAMES = ("datagram", "stream", "ledger", "frames", "control", "options")


def _fuzz_one(target: str, seconds: float, seed: int, corpus: Path, crashes: Path) -> int:
    """In this process: instrument peerfarm, then hand control to libFuzzer (never returns)."""
    import atheris

    sys.path.insert(0, str(ROOT))
    with atheris.instrument_imports(include=["peerfarm", "fuzz"]):
        from fuzz import targets

    fn = targets.TARGETS[target]
    corpus = corpus / target
    corpus.mkdir(parents=True, exist_ok=True)
    crashes = crashes / target
    crashes.mkdir(parents=True, exist_ok=True)
    seeds = Path(tempfile.mkdtemp(prefix=f"peerfarm-fuzz-{target}-"))
    for i, data in enumerate(targets.seeds()[target]):
        (seeds / f"seed-{i}").write_bytes(data)
    args = [
        sys.argv[0],
        f"-max_total_time={max(1, int(seconds))}",
        f"-seed={seed}",
        "-max_len=4096",
        "-rss_limit_mb=1024",
        "-timeout=10",
        f"-artifact_prefix={crashes}/",
        "-print_final_stats=1",
        str(corpus),
        str(seeds),
    ]
    atheris.Setup(args, fn)
    atheris.Fuzz()
    return 0  # pragma: no cover - libFuzzer exits the process


def replay() -> int:
    """Run every saved crash input through its target; 1 if any still fails."""
    sys.path.insert(0, str(ROOT))
    from fuzz import targets

    failed = 0
    for target in NAMES:
        for path in sorted((HERE / "regressions" / target).glob("*")):
            try:
                targets.TARGETS[target](path.read_bytes())
            except Exception as exc:
                failed += 1
                print(f"FAIL {target} {path.name}: {type(exc).__name__}: {exc}")
    print("every saved crash passes" if not failed else f"{failed} input(s) still fail")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="per target (default 60)")
    parser.add_argument("--target", choices=NAMES, action="append", help="default: all")
    parser.add_argument("--seed", type=int, default=1, help="libFuzzer's RNG seed")
    parser.add_argument("--replay", action="store_true", help="re-run saved crashes only")
    parser.add_argument("--corpus", type=Path, default=HERE / "corpus", help="corpus root")
    parser.add_argument(
        "--crashes", type=Path, default=HERE / "regressions", help="where crashes are saved"
    )
    parser.add_argument("--child", choices=NAMES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.replay:
        return replay()
    if args.child:
        return _fuzz_one(args.child, args.seconds, args.seed, args.corpus, args.crashes)
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed: pip install atheris", file=sys.stderr)
        return 2
    status = 0
    for target in args.target or NAMES:
        print(f"== fuzzing {target} for {args.seconds:g} s", flush=True)
        result = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                target,
                "--seconds",
                str(args.seconds),
                "--seed",
                str(args.seed),
                "--corpus",
                str(args.corpus),
                "--crashes",
                str(args.crashes),
            ],
            check=False,
        )
        if result.returncode != 0:
            print(
                f"!! {target}: crash found (exit {result.returncode}), "
                f"saved in {args.crashes / target}"
            )
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
