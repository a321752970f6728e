"""PyTorch sources: fetch (sha256-pinned, resumable, cached) and unpack (atomic) per provider.

Providers (``toolchains/torch.toml``):
  upstream  the git tag with its submodules (needs GitHub)
  debian    Debian's dfsg orig tarball + packaging tarball from the Debian archive, plus the
            orig tarballs of the submodules restored in-tree (``vendored``: gloo, cpp-httplib);
            the mirror is ``--debian-mirror`` > ``RVTORCH_DEBIAN_MIRROR`` > the host's apt
            configuration.
``auto`` picks upstream when its git server answers within a few seconds, otherwise debian.

Every downloaded file is checked against its pinned size and sha256. Downloads go to
``NAME.part`` and resume with an HTTP Range request (in the same run while the server keeps
making progress, else in the next run); only a verified file is renamed to ``NAME``. A file
of the pinned size whose sha256 differs is deleted (:class:`SourceError`, exit 3); a short one
is kept for the resume. Unpacking happens in a staging directory (``rvtorch.paths.StagingDir``)
that a later run removes if its owner was killed.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import http.client
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import proc
from .aptsource import check_mirror_url
from .errors import BuildError, SourceError, UsageError
from .paths import StagingDir, cache_dir, check_writable_dir, staging_root
from .torchspec import PROVIDERS, PinnedFile, TorchVersion

SOURCE_CHOICES = ("auto", *PROVIDERS)
APT_SOURCES = Path("/etc/apt")
_CHUNK = 1 << 20


def sources_dir() -> Path:
    path = cache_dir() / "sources"
    path.mkdir(parents=True, exist_ok=True)
    return path


def trees_dir() -> Path:
    """Unpacked (and patched) source trees; each is written by an atomic rename."""
    path = cache_dir() / "trees"
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------------------- mirror
def _apt_uris(etc: Path) -> list[str]:
    """Archive URIs from one-line ``sources.list`` files and deb822 ``*.sources`` files."""
    uris: list[str] = []
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in text.split("\n\n"):
                fields = {}
                for line in stanza.splitlines():
                    if ":" in line and not line.startswith((" ", "#")):
                        k, v = line.split(":", 1)
                        fields[k.strip().lower()] = v.strip()
                if (
                    "deb-src" in fields.get("types", "deb").split()
                    or "deb" in fields.get("types", "deb").split()
                ):
                    if fields.get("enabled", "yes").lower() != "no":
                        uris += [u for u in fields.get("uris", "").split() if u]
        elif path.suffix in (".list", "") and path.name.endswith(".list"):
            for line in text.splitlines():
                parts = line.split("#", 1)[0].split()
                if parts and parts[0] in ("deb", "deb-src"):
                    rest = [p for p in parts[1:] if not p.startswith("[")]
                    # options in [ ... ] may contain spaces; skip to the first URI-looking token
                    rest = [p for p in rest if "://" in p]
                    if rest:
                        uris.append(rest[0])
    return uris


def debian_mirror(cli: str | None = None, *, apt_etc: Path = APT_SOURCES) -> str:
    """The Debian archive base URL: CLI > RVTORCH_DEBIAN_MIRROR > apt configuration."""
    for value in (cli, os.environ.get("RVTORCH_DEBIAN_MIRROR")):
        if value:
            return check_mirror_url(value)
    for uri in _apt_uris(apt_etc):
        # The security archive and third-party repositories have no pool/main/p/pytorch.
        if "security" in uri or not uri.startswith(("http://", "https://", "file:")):
            continue
        return uri.rstrip("/")
    raise UsageError(
        "no Debian mirror found in the apt configuration",
        hint="pass --debian-mirror URL or set RVTORCH_DEBIAN_MIRROR",
    )


# ------------------------------------------------------------------------------------- download
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, pin: PinnedFile) -> None:
    """Check size and sha256 of a complete file.

    Only a file of the pinned size whose sha256 differs is deleted (exit 3; it can never become
    right). A shorter one is a download to resume, never a reason to delete; a longer one is
    deleted (no resume can shrink it).
    """
    size = path.stat().st_size
    if size < pin.size:
        raise SourceError(
            f"{pin.name}: {size} of {pin.size} bytes; the partial file is kept",
            hint="rerun to resume",
        )
    if size > pin.size:
        _delete(path, pin)
        raise SourceError(f"{pin.name}: size {size} > pinned {pin.size}; file deleted",
                          hint="rerun to download it again")
    digest = sha256_file(path)
    if digest != pin.sha256:
        _delete(path, pin)
        raise SourceError(
            f"{pin.name}: sha256 {digest} != pinned {pin.sha256}; file deleted",
            hint="rerun to download it again; if it persists the mirror serves a different file",
        )


def _delete(path: Path, pin: PinnedFile) -> None:
    """Delete a wrong file; one that cannot be deleted (read-only cache) is still exit 3."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise SourceError(
            f"{pin.name}: {path} does not match its pin and cannot be deleted: {exc.strerror}",
            hint=f"delete {path} by hand",
        ) from exc


def _progress(name: str, done: int, total: int, start: float) -> None:
    if not sys.stderr.isatty():
        return
    rate = done / max(time.monotonic() - start, 1e-3) / 1e6
    print(
        f"\r  {name}: {done / 1e6:7.1f}/{total / 1e6:.1f} MB {rate:6.1f} MB/s",
        end="",
        file=sys.stderr,
        flush=True,
    )


# Errors of the local file system: a rerun cannot help until the user acts (exit 2).
_LOCAL_ERRNOS = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded",
                 errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                 errno.EPERM: "operation not permitted"}


def _local_error(exc: OSError, part: Path, pin: PinnedFile) -> UsageError:
    what = _LOCAL_ERRNOS.get(exc.errno or 0, exc.strerror or str(exc))
    kept = part.stat().st_size if part.exists() else 0
    note = f"; {kept} bytes kept in {part.name}" if kept else ""
    return UsageError(f"cannot write {pin.name} into {part.parent}: {what}{note}",
                      hint="free space or make the cache writable (RVTORCH_CACHE), then rerun")


def _network_error(url: str, exc: BaseException) -> SourceError:
    """A failure before any byte arrived: resume hints only where waiting can help."""
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ConnectionRefusedError):
        return SourceError(f"download of {url} failed: connection refused",
                           hint="check --debian-mirror / RVTORCH_DEBIAN_MIRROR")
    if isinstance(reason, OSError) and reason.errno in (-2, -3, -5):  # EAI_NONAME/AGAIN/NODATA
        return SourceError(f"download of {url} failed: host not found ({reason.strerror})",
                           hint="check --debian-mirror / RVTORCH_DEBIAN_MIRROR and DNS")
    return SourceError(f"download of {url} failed: {reason}",
                       hint="check the network and the mirror, then rerun")


def _declared_total(resp: Any, have: int) -> int | None:
    """The whole file's size as the server declares it: ``Content-Range: bytes a-b/TOTAL`` of a
    206, else the bytes already here plus ``Content-Length``; None when it does not say."""
    rng = resp.headers.get("Content-Range") or ""
    m = re.match(r"bytes \d+-\d+/(\d+)$", rng.strip())
    if resp.status == 206 and m:
        return int(m.group(1))
    length = resp.headers.get("Content-Length")
    if length is None or not length.strip().isdigit():
        return None
    return (have if resp.status == 206 else 0) + int(length)


def _fetch_range(url: str, part: Path, pin: PinnedFile, timeout: float) -> int:
    """Append to ``part`` from its current size; returns the bytes received in this attempt.

    Raises :class:`SourceError` for HTTP errors and connections that fail before data,
    :class:`UsageError` for local write errors; a connection cut mid-body just returns.
    """
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    start = time.monotonic()
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have == pin.size:
            return 0  # already complete
        hint = ("rerun later to resume" if exc.code in (408, 429, 500, 502, 503, 504)
                else "check --debian-mirror / RVTORCH_DEBIAN_MIRROR and the pin in torch.toml")
        raise SourceError(f"download of {url} failed: HTTP {exc.code} {exc.reason}",
                          hint=hint) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _network_error(url, exc) from exc
    got = 0
    with resp:
        if have and resp.status != 206:
            have = 0  # the server ignored the range: start over
        total = _declared_total(resp, have)
        if total is not None and total != pin.size:
            # A complete answer of another size is a wrong file, not a cut connection: keeping
            # it for a resume would only resume the wrong file.
            part.unlink(missing_ok=True)
            raise SourceError(
                f"{pin.name}: the mirror serves {total} bytes, the pin says {pin.size}; "
                "file deleted",
                hint="check --debian-mirror / RVTORCH_DEBIAN_MIRROR and the pin in torch.toml")
        try:
            with part.open("ab" if have else "wb") as out:
                done = have
                while True:
                    try:
                        block = resp.read(_CHUNK)
                    except (OSError, TimeoutError, http.client.HTTPException):
                        break  # cut mid-body: what arrived is kept
                    if not block:
                        break
                    out.write(block)
                    got += len(block)
                    done += len(block)
                    _progress(pin.name, done, pin.size, start)
                    if done > pin.size:
                        break
        except OSError as exc:
            raise _local_error(exc, part, pin) from exc
    if sys.stderr.isatty():
        print(file=sys.stderr)
    return got


def _download_locked(url: str, dest: Path, part: Path, pin: PinnedFile, timeout: float,
                     attempts: int) -> None:
    have = part.stat().st_size if part.exists() else 0
    if have > pin.size:
        part.unlink()
        have = 0
    print(f"fetch {url}" + (f" (resuming at {have} bytes)" if have else ""), file=sys.stderr)
    for attempt in range(attempts):
        have = part.stat().st_size if part.exists() else 0
        if have >= pin.size:
            break
        got = _fetch_range(url, part, pin, timeout)
        if got == 0:
            break  # no progress: retrying at once will not help
        if attempt + 1 < attempts and part.stat().st_size < pin.size:
            print(f"  {pin.name}: connection closed at {part.stat().st_size} of {pin.size} "
                  "bytes; resuming", file=sys.stderr)
            time.sleep(min(0.2 * (attempt + 1), 2.0))  # a flaky mirror gets a moment
    size = part.stat().st_size if part.exists() else 0
    if size < pin.size:
        raise SourceError(
            f"download of {url} interrupted at {size} of {pin.size} bytes; {part.name} kept",
            hint="rerun to resume",
        )
    verify(part, pin)
    try:
        part.rename(dest)
    except OSError as exc:
        raise _local_error(exc, part, pin) from exc


def download(url: str, dest: Path, pin: PinnedFile, *, timeout: float = 60,
             attempts: int = 30) -> Path:
    """Fetch ``url`` to ``dest`` (resuming ``dest.part``) and verify it against ``pin``.

    A connection the server closes early leaves ``dest.part``; the download resumes from it
    with an HTTP Range request as long as each attempt brings new bytes (at most ``attempts``
    in this run, so a mirror that keeps dropping still finishes), and in the next run after
    that.
    """
    part = dest.with_name(dest.name + ".part")
    if dest.exists():
        size = dest.stat().st_size
        if size < pin.size and not part.exists():
            try:
                dest.rename(part)  # a truncated file in the cache: resume it, do not delete it
            except OSError as exc:
                raise SourceError(f"{pin.name}: {size} of {pin.size} bytes in a cache that "
                                  f"cannot be written: {exc.strerror}",
                                  hint=f"make {dest.parent} writable and rerun") from exc
        else:
            verify(dest, pin)
            return dest
    lock = part.with_name(part.name + ".lock")
    try:
        lock_fh = lock.open("a")
    except OSError as exc:
        raise _local_error(exc, part, pin) from exc
    with lock_fh:
        try:
            fcntl.flock(lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # A lock file unlinked by its finishing owner while we opened it is not the lock.
            if os.fstat(lock_fh.fileno()).st_ino != os.stat(lock).st_ino:
                raise BlockingIOError
        except (BlockingIOError, FileNotFoundError):
            raise UsageError(f"another rvtorch is downloading {part}",
                             hint="wait for it to finish") from None
        try:
            _download_locked(url, dest, part, pin, timeout, attempts)
        finally:
            lock.unlink(missing_ok=True)
    return dest


def fetch_debian(tv: TorchVersion, mirror: str | None = None) -> dict[str, Path]:
    """Download (or reuse) every pinned Debian file of ``tv``; returns name -> verified path."""
    base = debian_mirror(mirror)
    out_dir = sources_dir() / "debian"
    wanted = [(tv.debian.pool, pin) for pin in tv.debian.files]
    wanted += [(v.pool, v.file) for v in tv.debian.vendored]
    if not all((out_dir / pin.name).is_file() for _, pin in wanted):
        # Something to download: a read-only or full cache is found now, not after the fetch.
        check_writable_dir(out_dir, create=True, what="source cache")
    paths = {}
    for pool, pin in wanted:
        paths[pin.name] = download(f"{base}/{pool}/{pin.name}", out_dir / pin.name, pin)
    return paths


# ------------------------------------------------------------------------------------- upstream
def upstream_reachable(tv: TorchVersion, timeout: float = 8) -> bool:
    """True when the upstream git server lists the pinned tag within ``timeout`` seconds."""
    if not shutil.which("git"):
        return False
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    try:
        res = subprocess.run(
            ["git", "ls-remote", "--tags", tv.upstream.git, tv.upstream.tag],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except (subprocess.TimeoutExpired, OSError):
        return False
    return res.returncode == 0 and tv.upstream.tag in res.stdout


def resolve_provider(choice: str, tv: TorchVersion) -> str:
    """``auto`` -> upstream when reachable, else debian (with a one-line notice)."""
    if choice not in SOURCE_CHOICES:
        from .targets import suggest

        raise UsageError(f"unknown --source {choice!r}", hint=suggest(choice, SOURCE_CHOICES))
    if choice != "auto":
        return choice
    if upstream_reachable(tv):
        return "upstream"
    print(
        f"rvtorch: notice: {tv.upstream.git} not reachable; using the debian source provider",
        file=sys.stderr,
    )
    return "debian"


def _git(argv: list[str | Path], what: str, capture: bool = False) -> str:
    """Run git; a failure is a source error (exit 3)."""
    try:
        return proc.run(argv, capture=capture, what=what).stdout or ""
    except BuildError as exc:
        raise SourceError(str(exc), hint="check network access to the upstream git server") from exc


def fetch_upstream(tv: TorchVersion) -> Path:
    """Clone the tag with submodules into the cache (resumable: reuses a partial clone)."""
    dest = sources_dir() / "upstream" / f"pytorch-{tv.version}"
    stamp = dest / ".rvtorch-complete"
    if stamp.exists():
        return dest
    git = proc.which("git")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not (dest / ".git").exists():
        with staging(dest) as tmp:
            _git(
                [git, "clone", "--branch", tv.upstream.tag, "--depth", "1", tv.upstream.git,
                 tmp],
                "git clone",
            )
    head = _git([git, "-C", dest, "rev-parse", "HEAD"], "git rev-parse", capture=True)
    if head.strip() != tv.upstream.commit:
        raise SourceError(
            f"{tv.upstream.tag} is {head.strip()}, pinned {tv.upstream.commit}",
            hint="the tag moved upstream; delete the cache and check the pin",
        )
    _git(
        [
            git,
            "-C",
            dest,
            "submodule",
            "update",
            "--init",
            "--recursive",
            "--depth",
            "1",
            "--jobs",
            "4",
        ],
        "git submodule update",
    )
    stamp.write_text(tv.upstream.commit + "\n")
    return dest


def fetch(tv: TorchVersion, provider: str, *, mirror: str | None = None) -> dict[str, object]:
    """Fetch the sources of ``provider`` (already resolved); returns a description for plans."""
    if provider == "debian":
        paths = fetch_debian(tv, mirror)
        return {"provider": "debian", "files": {n: str(p) for n, p in paths.items()}}
    path = fetch_upstream(tv)
    return {"provider": "upstream", "checkout": str(path), "commit": tv.upstream.commit}


# --------------------------------------------------------------------------------------- unpack
@contextmanager
def staging(dest: Path) -> Iterator[Path]:
    """A staging directory for ``dest``; renamed to ``dest`` on success, removed on any failure.

    It lives under the cache's ``staging/`` (or ``.rvtorch-staging/`` beside ``dest`` on another
    file system) with a locked owner record, so a run killed with SIGKILL leaves a directory the
    next run removes (``rvtorch.paths.reap_stale``).
    """
    dest = Path(os.path.abspath(dest))
    st = StagingDir(staging_root(dest.parent), f"{dest.name}")
    try:
        yield st.path
        if dest.exists():
            # Out of the way first, then deleted: a kill in between leaves a reapable leftover.
            old = StagingDir(staging_root(dest.parent), f"{dest.name}.old")
            old.path.rmdir()
            dest.rename(old.path)
            st.path.rename(dest)
            old.release()
        else:
            st.path.rename(dest)
        st.release(remove=False)
    except BaseException:
        st.release()
        raise


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A staging directory under the cache that is always removed (``patches check``)."""
    st = StagingDir(staging_root(), prefix)
    try:
        yield st.path
    finally:
        st.release()


def _extract(archive: Path, into: Path) -> None:
    """Extract a (sha256-verified) tarball; GNU tar when present (3x faster than tarfile here).

    tar dies with us (``PR_SET_PDEATHSIG``): a killed run leaves no tar writing into staging.
    """
    into.mkdir(parents=True, exist_ok=True)
    tar = shutil.which("tar")
    if tar:
        res = subprocess.run([tar, "--no-same-owner", "-xf", str(archive), "-C", str(into)],
                             capture_output=True, text=True, check=False,
                             preexec_fn=proc.die_with_parent())
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or ["tar failed"])[-1]
            if "No space left" in last or "Read-only file system" in last:
                raise UsageError(f"cannot unpack {archive.name} into {into.parent}: {last}",
                                 hint="free space or point RVTORCH_CACHE elsewhere")
            raise SourceError(f"{archive.name} is corrupt: {last}",
                              hint=f"delete {archive} and rerun")
        return
    try:
        with tarfile.open(archive) as tf:
            tf.extractall(into, filter="tar")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise SourceError(
            f"{archive.name} is corrupt: {exc}", hint=f"delete {archive} and rerun"
        ) from exc


def _restore_vendored(archive: Path, top: str, dest: Path, work: Path) -> None:
    """Put the top directory ``top`` of ``archive`` at ``dest`` (an absent or empty submodule)."""
    if dest.exists() and any(dest.iterdir()):
        raise SourceError(f"{dest.name}/ is not empty in the source tree; cannot restore "
                          f"{archive.name} there")
    into = work / f"vendored-{dest.name}"
    _extract(archive, into)
    if not (into / top).is_dir():
        raise SourceError(f"{archive.name} has no top directory {top}/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.rmdir()
    (into / top).rename(dest)


def unpack_into(tv: TorchVersion, provider: str, tmp: Path, *, mirror: str | None = None) -> None:
    """Write a pristine source tree of ``tv`` into the (empty) directory ``tmp``."""
    if provider == "debian":
        paths = fetch_debian(tv, mirror)
        work = tmp / ".rvtorch-unpack"
        _extract(paths[tv.debian.orig.name], work)
        top = work / tv.debian.tree
        if not top.is_dir():
            raise SourceError(f"{tv.debian.orig.name} has no top directory {tv.debian.tree}/")
        for entry in top.iterdir():
            entry.rename(tmp / entry.name)
        if tv.debian.packaging is not None:
            _extract(paths[tv.debian.packaging.name], work)
            for ov in tv.debian.overlays:
                src = work / ov.source
                if not src.is_dir():
                    raise SourceError(f"{tv.debian.packaging.name} lacks {ov.source}/")
                shutil.copytree(src, tmp / ov.dest, dirs_exist_ok=True)
        for v in tv.debian.vendored:
            _restore_vendored(paths[v.file.name], v.tree, tmp / v.dest, work)
        shutil.rmtree(work)
    else:
        checkout = fetch_upstream(tv)
        shutil.copytree(
            checkout,
            tmp,
            symlinks=True,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns(".rvtorch-complete"),
        )


def unpack(tv: TorchVersion, provider: str, dest: Path, *, mirror: str | None = None) -> Path:
    """Unpack a pristine tree into ``dest`` atomically (replacing an older one)."""
    with staging(dest) as tmp:
        unpack_into(tv, provider, tmp, mirror=mirror)
    return dest
