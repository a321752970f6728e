"""Where things live: the repository's data files and the cache (never inside git)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import UsageError


def repo_root() -> Path:
    """The checkout that holds toolchains/, patches/, recipes/ (src layout: two levels up)."""
    env = os.environ.get("RVTORCH_ROOT")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2]


def data_dir(name: str) -> Path:
    return repo_root() / name


def cache_dir(create: bool = True) -> Path:
    """``$RVTORCH_CACHE`` or ``$XDG_CACHE_HOME/rvtorch`` (default ``~/.cache/rvtorch``).

    Fails with a usage error (exit 2) when it cannot be created or written.
    """
    env = os.environ.get("RVTORCH_CACHE")
    if env:
        path = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(xdg) / "rvtorch"
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
            # A unique probe, tolerant of a concurrent cleanup removing it first.
            fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe-")
            os.close(fd)
            Path(probe).unlink(missing_ok=True)
        except OSError as exc:
            raise UsageError(
                f"cache directory {path} is not writable: {exc.strerror}",
                hint="set RVTORCH_CACHE to a writable directory",
            ) from exc
    return path
