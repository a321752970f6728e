"""Command-line entry point: argument parsing only; errors become exit codes here.

Each sub-command lives in ``rvtorch.commands.<name>`` and exposes ``add_parser(subparsers)``
(which sets ``func``) so features stay in their own modules.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from . import __version__
from .errors import RvtorchError

# Sub-command modules, in the order `rvtorch --help` lists them.
COMMANDS = (
    "targets",
    "doctor",
    "image",
    "rootfs",
    "emulator",
    "run",
    "patches",
    "source",
    "build",
    "check_wheel",
    "deps",
    "validate",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rvtorch",
        description="Build PyTorch for RISC-V and ARM from source and prove every wheel.",
    )
    parser.add_argument("--version", action="version", version=f"rvtorch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"rvtorch.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"rvtorch.commands.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except RvtorchError as exc:
        print(f"rvtorch: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("rvtorch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error of ours.
        sys.stderr.close()
        return 0
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
