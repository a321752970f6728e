"""Command-line entry point: argument parsing only; errors become exit codes here.

Each sub-command lives in ``rvtorch.commands.<name>`` and exposes ``add_parser(subparsers)``
(which sets ``func``) so features stay in their own modules.

Every flag that names a path, a URL or a version is checked while the arguments are parsed (the
``*_arg`` types below), so a bad one fails in a second with exit 2, never after a long build.
Argument errors print one line first: ``rvtorch: error: ...``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import NoReturn

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
    "board",
)

# Commands that never fetch anything: a malformed $RVTORCH_DEBIAN_MIRROR does not stop them.
_NO_MIRROR = {"targets", "doctor"}


class Parser(argparse.ArgumentParser):
    """argparse with the project's error format: the one-line reason first, no usage block."""

    def error(self, message: str) -> NoReturn:
        where = self.prog.partition(" ")[2]
        self.exit(2, f"rvtorch: error: {where + ': ' if where else ''}{message} "
                     f"(see `{self.prog} --help`)\n")


# ------------------------------------------------------------------------ parse-time checks
def _checked(fn: Callable[[str], object], name: str) -> Callable[[str], object]:
    """Wrap a checker so argparse reports its :class:`RvtorchError` as the argument's error."""

    def check(value: str) -> object:
        try:
            return fn(value)
        except RvtorchError as exc:
            raise argparse.ArgumentTypeError(exc.one_line()) from None

    check.__name__ = name
    return check


def out_dir_arg(value: str) -> Path:
    """A directory that will be written later (``--out``): proven writable, not created."""
    from .paths import check_writable_dir

    return check_writable_dir(Path(value), create=False)


def report_dir_arg(value: str) -> Path:
    """A report directory: created now (and probed), so a long run cannot end unwritable."""
    from .paths import check_writable_dir

    return check_writable_dir(Path(value), create=True)


def file_arg(value: str) -> Path:
    from .paths import check_existing_file

    return check_existing_file(Path(value))


def dir_arg(value: str) -> Path:
    from .paths import check_existing_dir

    return check_existing_dir(Path(value))


def mirror_arg(value: str) -> str:
    from .aptsource import check_mirror_url

    return check_mirror_url(value)


def torch_version_arg(value: str) -> str:
    from .torchspec import torch_version

    return torch_version(value).version


def output_file_arg(value: str) -> Path:
    """A file to write later: its folder is proven writable now (nothing is created)."""
    from .errors import UsageError
    from .paths import check_writable_dir

    path = Path(os.path.abspath(Path(value).expanduser()))
    if path.is_dir():
        raise UsageError(f"{path} is a directory, a file name is expected")
    check_writable_dir(path.parent, create=False, what="folder of")
    return path


def openblas_version_arg(value: str) -> str:
    """An OpenBLAS version the repository's recipe serves (recipes/openblas/config.yml)."""
    from .conan import recipe_versions
    from .errors import UsageError
    from .targets import suggest

    versions = recipe_versions("openblas")
    if value not in versions:
        raise UsageError(f"OpenBLAS {value!r} is not a version recipes/openblas serves",
                         hint=suggest(value, tuple(versions)))
    return value


def positive_int_arg(value: str) -> int:
    from .errors import UsageError

    try:
        n = int(value)
    except ValueError:
        raise UsageError(f"{value!r} is not a whole number") from None
    if n < 1:
        raise UsageError(f"{n} is not a positive number")
    return n


OUT_DIR = _checked(out_dir_arg, "directory")
REPORT_DIR = _checked(report_dir_arg, "directory")
FILE = _checked(file_arg, "file")
DIR = _checked(dir_arg, "directory")
MIRROR = _checked(mirror_arg, "URL")
TORCH_VERSION = _checked(torch_version_arg, "version")
POSITIVE_INT = _checked(positive_int_arg, "number")
OUTPUT_FILE = _checked(output_file_arg, "file")
OPENBLAS_VERSION = _checked(openblas_version_arg, "version")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="rvtorch",
        description="Build PyTorch for RISC-V and ARM from source and prove every wheel.",
    )
    parser.add_argument("--version", action="version", version=f"rvtorch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
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


def _check_environment(args: argparse.Namespace) -> None:
    """Inputs from the environment, checked like flags before any work."""
    from .aptsource import MIRROR_ENV, check_mirror_url

    env = os.environ.get(MIRROR_ENV)
    if env and getattr(args, "command", None) not in _NO_MIRROR and not getattr(
        args, "debian_mirror", None
    ):
        check_mirror_url(env, what=f"${MIRROR_ENV}")


def _terminated(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C: staging directories are removed, children are stopped.
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _terminated)
    except ValueError:  # not the main thread (an embedding caller): leave SIGTERM alone
        previous = None
    try:
        args = parser.parse_args(argv)
        _check_environment(args)
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
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
