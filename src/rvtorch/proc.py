"""Running external commands: every command is echoed as ``+ cmd args`` before it runs.

Children die with their parent: each is started with ``PR_SET_PDEATHSIG`` = SIGKILL, so a
``rvtorch`` killed with SIGKILL (which runs no cleanup) leaves no ``tar`` or ``git`` writing on.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .errors import BuildError, UsageError

Cmd = Sequence[str | os.PathLike[str]]


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_prctl = _libc.prctl


def die_with_parent(parent: int | None = None) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGKILL when the process that started it dies.

    Resolved in the parent (``_prctl``) so the child only makes one system call; if the parent
    died before that call, the child exits at once instead of running on orphaned.
    """
    ppid = os.getpid() if parent is None else parent

    def _set() -> None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != ppid:
            os._exit(1)

    return _set


def echo(cmd: Cmd) -> None:
    print("+ " + shlex.join(str(c) for c in cmd), file=sys.stderr, flush=True)


def which(tool: str, *, hint: str | None = None) -> str:
    """Absolute path of ``tool`` or a usage error that says how to install it."""
    found = shutil.which(tool)
    if not found:
        raise UsageError(f"{tool} not found on PATH", hint=hint or f"install {tool}")
    return found


def run(
    cmd: Cmd,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    check: bool = True,
    capture: bool = False,
    quiet: bool = False,
    input: str | None = None,
    timeout: float | None = None,
    error: type[BuildError] | type[UsageError] = BuildError,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; on failure raise ``error`` naming ``what`` failed and its exit status."""
    if not quiet:
        echo(cmd)
    try:
        proc = subprocess.run(
            [str(c) for c in cmd],
            env=dict(env) if env is not None else None,
            cwd=cwd,
            text=True,
            input=input,
            capture_output=capture,
            timeout=timeout,
            check=False,
            preexec_fn=die_with_parent(),
        )
    except FileNotFoundError as exc:
        raise UsageError(f"{cmd[0]} not found", hint="see `rvtorch doctor`") from exc
    except subprocess.TimeoutExpired as exc:
        raise error(f"{what or cmd[0]} timed out after {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        tail = ""
        if capture and proc.stderr:
            tail = ": " + proc.stderr.strip().splitlines()[-1][:300]
        name = what or shlex.join(map(str, cmd[:3]))
        raise error(f"{name} failed (exit {proc.returncode}){tail}")
    return proc
