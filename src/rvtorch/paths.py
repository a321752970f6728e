"""Where things live: the repository's data files and the cache (never inside git)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from .errors import UsageError

R = TypeVar("R")


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


# ----------------------------------------------------------------------------- checked inputs
def _strerror(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_writable_dir(path: Path, *, create: bool, what: str = "directory") -> Path:
    """``path`` as an absolute directory we can write, checked before any long work starts.

    ``create`` makes it (with its parents) and writes a probe file in it. Without ``create``
    nothing lasting is made: the nearest existing ancestor must take a new directory (made and
    removed at once), so ``--dry-run`` proves ``--out`` without creating it. Permission bits
    alone prove nothing for root (``/proc`` is "writable" to ``access(2)``), hence real probes.
    Raises :class:`UsageError` (exit 2) with the reason.
    """
    path = Path(os.path.abspath(path.expanduser()))
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} exists and is not a directory")
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe-")
            os.close(fd)
            Path(probe).unlink(missing_ok=True)
            return path
        base = path
        while not base.is_dir():
            if base.exists() or base.parent == base:
                raise UsageError(f"{what} {path} cannot be created: {base} is not a directory")
            base = base.parent
        if base == path:
            fd, probe = tempfile.mkstemp(dir=path, prefix=".write-probe-")
            os.close(fd)
            Path(probe).unlink(missing_ok=True)
        else:
            Path(tempfile.mkdtemp(dir=base, prefix=".write-probe-")).rmdir()
    except OSError as exc:
        raise UsageError(f"{what} {path} is not writable: {_strerror(exc)}",
                         hint="give a writable directory") from exc
    return path


def check_existing_file(path: Path, *, what: str = "file") -> Path:
    """``path`` must be a readable regular file (exit 2 otherwise)."""
    path = Path(os.path.abspath(path.expanduser()))
    if not path.exists():
        raise UsageError(f"{what} {path} not found")
    if not path.is_file():
        raise UsageError(f"{what} {path} is not a file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{what} {path} is not readable")
    return path


def check_existing_dir(path: Path, *, what: str = "directory") -> Path:
    """``path`` must be an existing directory (exit 2 otherwise)."""
    path = Path(os.path.abspath(path.expanduser()))
    if not path.is_dir():
        raise UsageError(f"{what} {path} " + ("is not a directory" if path.exists()
                                              else "not found"))
    return path


# ------------------------------------------------------------------------------------ staging
STAGING = "staging"
_OWNER = ".owner"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat): PID reuse tells apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def staging_root(near: Path | None = None) -> Path:
    """Where temporary trees live: ``$CACHE/staging``, or ``.rvtorch-staging`` beside ``near``
    when ``near`` is on another file system (a rename across file systems is not atomic)."""
    root = cache_dir() / STAGING
    root.mkdir(exist_ok=True)
    if near is not None:
        near.mkdir(parents=True, exist_ok=True)
        if near.stat().st_dev != root.stat().st_dev:
            root = near / ".rvtorch-staging"
            root.mkdir(exist_ok=True)
    return root


class StagingDir:
    """A temporary directory under a staging root, owned by this process.

    Its owner record ``NAME.owner`` (PID, start time, command) is created first and stays
    ``flock``-ed for the directory's life, so the lock vanishes with the process however it ends
    (SIGKILL included). :func:`reap_stale` removes directories whose owner lock is free.
    """

    def __init__(self, root: Path, prefix: str, *, orphans: bool = True) -> None:
        import fcntl
        import json
        import sys

        reap_stale(root, orphans=orphans)
        fd, owner = tempfile.mkstemp(dir=root, prefix=f"{prefix}.", suffix=_OWNER)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd: int | None = fd
        self.owner = Path(owner)
        self.path = root / self.owner.name[: -len(_OWNER)]
        record = {"pid": os.getpid(), "start": _start_time(os.getpid()),
                  "argv": sys.argv[:6]}
        os.write(fd, (json.dumps(record) + "\n").encode())
        self.path.mkdir()

    def release(self, *, remove: bool = True) -> None:
        """Delete the directory (unless it was renamed away) and the owner record."""
        import shutil

        if remove:
            shutil.rmtree(self.path, ignore_errors=True)
        self.owner.unlink(missing_ok=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# ------------------------------------------------------------------------------- locks
def try_lock(path: Path, busy: str, *, hint: str) -> IO[str]:
    """An exclusive lock on ``path`` (created with its folder), held while the returned file is
    open (the process's end releases it too); ``busy`` is the usage error (exit 2) when another
    process holds it: for work that must never run twice at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise UsageError(busy, hint=hint) from None
    return fh


@contextlib.contextmanager
def wait_lock(path: Path, waiting: str) -> Iterator[None]:
    """An exclusive lock on ``path`` for the ``with`` block; when another process holds it,
    print ``waiting`` once and wait: for work a second process would otherwise redo."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"rvtorch: {waiting}", file=sys.stderr)
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def reap_stale(root: Path, *, orphans: bool = True) -> list[Path]:
    """Remove staging directories of ``root`` whose owner is gone; returns what was removed.

    An owner record whose lock can be taken belongs to a dead process. With ``orphans`` (a root
    only rvtorch writes, such as ``$CACHE/staging``) a directory without a record is a leftover
    too: the record is always made before its directory. A shared root (a rootfs's ``/tmp``)
    passes ``orphans=False``: only directories with a dead owner's record are touched there.
    """
    import fcntl
    import shutil

    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for owner in root.glob(f"*{_OWNER}"):
        try:
            fd = os.open(owner, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # alive
        try:
            st = os.fstat(fd)
            if st.st_size == 0 and time.time() - st.st_mtime < 60:
                continue  # just made, its owner has not locked it yet
            d = owner.with_name(owner.name[: -len(_OWNER)])
            if d.exists():
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
            owner.unlink(missing_ok=True)
        finally:
            os.close(fd)
    for d in root.iterdir() if orphans else ():
        if d.is_dir() and not d.with_name(d.name + _OWNER).exists():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


# ------------------------------------------------------------------------------- publishing
UNPUBLISHED = "unpublished"


def keeps_wheel_on_failure(publish: Callable[..., R]) -> Callable[..., R]:
    """Decorate ``publish(wheel, out, ...)`` so that publishing never loses the wheel.

    * A write error into ``out`` (full disk, a folder removed or made read-only during the
      build) keeps the wheel in ``$CACHE/unpublished/`` and says so in one line (exit 2),
      instead of losing hours of build with the build's temporary folder.
    * Publishers into one ``out`` take turns (a lock under the cache, never a file in
      ``out``); holding it, any ``out/.publish-*`` staging folder belongs to a killed
      publisher and is removed first.
    """
    import fcntl
    import functools
    import hashlib
    import shutil

    @functools.wraps(publish)
    def wrapper(wheel: Path, out: Path, *args: Any, **kwargs: Any) -> R:
        locks = cache_dir() / "locks"
        locks.mkdir(exist_ok=True)
        key = hashlib.sha256(str(Path(os.path.abspath(out))).encode()).hexdigest()[:16]
        with (locks / f"publish-{key}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                for stale in out.glob(".publish-*"):
                    shutil.rmtree(stale, ignore_errors=True)
                return publish(wheel, out, *args, **kwargs)
            except OSError as exc:
                keep = cache_dir() / UNPUBLISHED
                keep.mkdir(exist_ok=True)
                try:
                    # Same file system as the build's temporary folder: a rename needs no space.
                    os.replace(wheel, keep / wheel.name)
                except OSError:
                    shutil.copy2(wheel, keep / wheel.name)
                raise UsageError(
                    f"cannot publish {wheel.name} into {out}: {_strerror(exc)}",
                    hint=f"the wheel is kept at {keep / wheel.name}; fix {out} and copy it there",
                ) from exc

    return wrapper
