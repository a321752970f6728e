"""Error classes. Each class owns one exit code; only ``cli.main`` turns them into an exit.

Exit codes (documented in the README):
  0 ok, 2 usage/configuration/environment error, 3 source/hash/patch error,
  4 build error, 5 validation failure, 130 interrupted (Ctrl-C or SIGTERM; ``cli.main``).
"""

from __future__ import annotations


class RvtorchError(Exception):
    """Base class: a one-line message that says what went wrong and what to do."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def one_line(self) -> str:
        msg = str(self)
        if self.hint:
            msg = f"{msg} ({self.hint})"
        return msg.replace("\n", " ")


class UsageError(RvtorchError):
    """Bad arguments, unknown arch/CPU model, invalid configuration, missing tools."""

    exit_code = 2


class SourceError(RvtorchError):
    """A download, hash, unpack or patch problem."""

    exit_code = 3


class BuildError(RvtorchError):
    """The build (image, rootfs, compile, wheel repair) failed."""

    exit_code = 4


class ValidationError(RvtorchError):
    """The wheel or rootfs computed something wrong, or a check failed."""

    exit_code = 5
