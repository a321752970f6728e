"""Running external commands: every command is echoed as ``+ cmd args`` before it runs."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import BuildError, UsageError

Cmd = Sequence[str | os.PathLike[str]]


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
