"""The ``ringkernel`` command (also ``python -m ringkernel``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import _core


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["bench"]:  # its own options: ringkernel bench --help
        from .bench import main as bench_main

        return bench_main(args_in[1:])
    parser = argparse.ArgumentParser(prog="ringkernel", description="ringkernel command-line interface")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="show what ringkernel does on this machine")
    demo.add_argument("--messages", type=int, default=200_000, help="messages in the threaded demo (default 200000)")
    sub.add_parser("backends", help="list backends and whether they can run here")
    sub.add_parser("bench", help="the benchmark suite on every available backend (ringkernel bench --help)")
    sub.add_parser("version", help="print the version and build facts")
    args = parser.parse_args(args_in)

    if args.command == "demo":
        from .demo import run

        if args.messages < 1:
            parser.error("--messages must be >= 1")
        return run(messages=args.messages)
    if args.command == "backends":
        for b in _core.backends():
            print(f"{b.name:8s} {'available' if b.available else 'unavailable':12s} {b.detail}")
        return 0
    info = _core.build_info()
    print(f"ringkernel {info['version']} (compiler: {info['compiler']}, CUDA device code compiled: {info['cuda_compiled']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
