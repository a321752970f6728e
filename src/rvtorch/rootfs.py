"""Target root filesystems (Debian, suite from targets.toml) for running code under QEMU.

``ensure_rootfs(arch, with_torch)`` returns a ready rootfs, creating it once:

* ``<suite>-<debian_arch>``: ``debootstrap --variant=minbase`` plus python3. Foreign arches run
  the second stage through binfmt_misc (registered for the duration when we are root and
  nothing is registered; see :func:`rvtorch.emulate.binfmt_registered`).
* ``<suite>-<debian_arch>-torch``: a copy of the base plus Debian's python3-torch and numpy,
  with OpenBLAS (pthread) as libblas.so.3 / liblapack.so.3 — python3-torch alone pulls the
  reference BLAS, 2-4x slower (FACTS).
* arch ``host``: the same for the machine's own Debian arch, run natively via chroot: the x86
  reference with the same torch version as the target rootfs.

Everything lives under ``cache_dir()/rootfs``. A rootfs is made in ``.<name>.tmp-<pid>`` and
renamed into place; the manifest ``<name>.json`` next to it (package versions, recipe hash) is
written last and is the completion stamp: a directory without it, or with another recipe hash,
is deleted and made again. A per-rootfs lock file serialises concurrent callers; the lock is
passed down to debootstrap/apt, so a killed rvtorch whose children still run keeps it held.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .aptsource import debian_mirror
from .emulate import binfmt_registered, guest_env, is_root, resolve
from .errors import BuildError, UsageError
from .paths import cache_dir
from .proc import echo
from .targets import Target, matrix

# What goes into each rootfs. Bump RECIPE when the steps change: existing rootfs are remade.
RECIPE = 1
# python3, and the system libraries the manylinux policy lets a wheel take from the system
# (auditwheel's lib_whitelist) that minbase lacks: Debian's python3 does not pull libatomic1 on
# riscv64, and a wheel linked against it (Debian's torch repaired: its libraries need it) must
# import in the clean venv as it does on a board. libstdc++6, libgcc-s1, zlib1g and libexpat1
# come with python3.
BASE_PACKAGES = ("python3", "libatomic1")
TORCH_PACKAGES = ("python3-torch", "python3-numpy", "libopenblas0-pthread")
# Debian's torch must be this version: the validation layer compares target and host at equal
# versions.
TORCH_VERSION = "2.6.0"
# Manifest key saying every symlink in the rootfs is relative (relative_links).
LINKS_KEY = "links"
# Rough upper bound of a torch rootfs plus its base (checked before creating).
MIN_FREE_BYTES = 4 << 30

_HOST_DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "riscv64": "riscv64"}


def host_debian_arch() -> str:
    if shutil.which("dpkg"):
        proc = subprocess.run(
            ["dpkg", "--print-architecture"], capture_output=True, text=True, check=False
        )
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
    machine = platform.machine()
    if machine not in _HOST_DEBIAN_ARCH:
        raise UsageError(f"unsupported host machine {machine!r}")
    return _HOST_DEBIAN_ARCH[machine]


def debian_arch(arch: str) -> str:
    t = resolve(arch)
    return host_debian_arch() if t is None else t.debian_arch


def packages(with_torch: bool) -> tuple[str, ...]:
    return BASE_PACKAGES + (TORCH_PACKAGES if with_torch else ())


def rootfs_name(arch: str, with_torch: bool = False) -> str:
    suffix = "-torch" if with_torch else ""
    return f"{matrix().project.suite}-{debian_arch(arch)}{suffix}"


def rootfs_root(create: bool = True) -> Path:
    root = cache_dir(create=create) / "rootfs"
    if create:
        root.mkdir(parents=True, exist_ok=True)
    return root


def rootfs_path(arch: str, with_torch: bool = False, *, create_cache: bool = True) -> Path:
    """Where the rootfs lives (whether or not it exists yet)."""
    return rootfs_root(create_cache) / rootfs_name(arch, with_torch)


def manifest_path(rootfs: Path) -> Path:
    return rootfs.with_name(rootfs.name + ".json")


def recipe_hash(arch: str, with_torch: bool) -> str:
    spec = {
        "recipe": RECIPE,
        "suite": matrix().project.suite,
        "debian_arch": debian_arch(arch),
        "packages": packages(with_torch),
        "torch_version": TORCH_VERSION if with_torch else None,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def read_manifest(rootfs: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(manifest_path(rootfs).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_complete(rootfs: Path, arch: str, with_torch: bool) -> bool:
    """Ready to use: the directory exists and its stamp carries the current recipe hash."""
    m = read_manifest(rootfs)
    return (
        m is not None
        and m.get("recipe_hash") == recipe_hash(arch, with_torch)
        and (rootfs / "usr/bin").is_dir()
    )


# --------------------------------------------------------------------------------------------
# Locks, mounts, removal
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(root: Path, name: str) -> Iterator[int]:
    fd = os.open(root / f".{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"rvtorch: waiting for another process creating {name}", file=sys.stderr)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    out = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) > 4:
            mnt = fields[4].encode().decode("unicode_escape")
            if mnt.startswith(prefix):
                out.append(mnt)
    return sorted(out, key=len, reverse=True)


def _remove_tree(path: Path) -> None:
    """Delete a (possibly half-made) rootfs: unmount what a killed run left mounted first."""
    if not path.exists() and not path.is_symlink():
        return
    for mnt in _mounts_below(path):
        subprocess.run(["umount", "-l", mnt], check=False)
    if _mounts_below(path):
        raise BuildError(f"cannot unmount file systems below {path}",
                         hint="unmount them by hand, then retry")
    # --one-file-system: never descend into anything still mounted below the tree.
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)
    if path.exists():
        raise BuildError(f"cannot remove {path}", hint="remove it by hand, then retry")


def _clean_stale(root: Path, name: str) -> None:
    for stale in root.glob(f".{name}.tmp-*"):
        print(f"rvtorch: removing incomplete rootfs {stale}", file=sys.stderr)
        _remove_tree(stale)


@contextlib.contextmanager
def _mounted_proc(rootfs: Path) -> Iterator[None]:
    proc_dir = rootfs / "proc"
    proc_dir.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "proc", "proc", str(proc_dir)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(proc_dir)], check=False)


# --------------------------------------------------------------------------------------------
# Creation
# --------------------------------------------------------------------------------------------


def _build_env(t: Target | None = None) -> dict[str, str]:
    # Maintainer scripts run in the guest: give them the guest's clean environment, and for a
    # foreign arch the fast -cpu of targets.toml (qemu-user reads QEMU_CPU; children inherit it).
    extra = {"DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true"}
    if t is not None:
        extra["QEMU_CPU"] = t.emulation_cpu
    return guest_env(extra)


def _run(cmd: Sequence[str | Path], lock_fd: int, what: str, t: Target | None = None) -> None:
    argv = [str(c) for c in cmd]
    echo(argv)
    try:
        # Own process group: on Ctrl-C/SIGTERM the whole tree (debootstrap, dpkg, maintainer
        # scripts) is killed before the temp rootfs is deleted under it.
        proc = subprocess.Popen(argv, env=_build_env(t), pass_fds=(lock_fd,),
                                start_new_session=True)
    except FileNotFoundError as exc:
        raise UsageError(f"{argv[0]} not found", hint="apt-get install debootstrap") from exc
    try:
        proc.wait()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if proc.returncode != 0:
        raise BuildError(f"{what} failed (exit {proc.returncode})",
                         hint="see the output above; rerun to start over")


def _installed_packages(rootfs: Path) -> dict[str, str]:
    proc = subprocess.run(
        ["dpkg-query", f"--admindir={rootfs / 'var/lib/dpkg'}", "-W",
         "-f=${Package}:${Architecture}\t${Version}\t${db:Status-Abbrev}\n"],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise BuildError(f"dpkg-query on {rootfs} failed: {proc.stderr.strip()[:200]}")
    out = {}
    for line in proc.stdout.splitlines():
        pkg, _, rest = line.partition("\t")
        version, _, status = rest.partition("\t")
        if status.strip() == "ii":
            out[pkg] = version
    return out


def _version_of(pkgs: dict[str, str], name: str) -> str | None:
    for key, version in pkgs.items():
        if key.split(":", 1)[0] == name:
            return version
    return None


def _blas_target(rootfs: Path, lib: str) -> str:
    """Where the libblas.so.3 / liblapack.so.3 alternative points (guest path)."""
    links = sorted((rootfs / "etc/alternatives").glob(f"{lib}-*"))
    if not links:
        raise BuildError(f"no {lib} alternative in {rootfs}")
    return os.readlink(links[0])


def _debootstrap(arch: str, tmp: Path, mirror: str, lock_fd: int) -> None:
    t = resolve(arch)
    da = debian_arch(arch)
    suite = matrix().project.suite
    native = da == host_debian_arch()
    cmd: list[str | Path] = [
        "debootstrap", "--variant=minbase", f"--arch={da}",
        "--include=" + ",".join(BASE_PACKAGES),
    ]
    if not native:
        cmd.append("--foreign")
    cmd += [suite, tmp, mirror]
    _run(cmd, lock_fd, f"debootstrap {suite} {da}")
    if not native:
        assert t is not None
        with binfmt_registered(t):
            _run(["chroot", tmp, "/debootstrap/debootstrap", "--second-stage"], lock_fd,
                 f"debootstrap second stage ({da} under QEMU)", t)
    hosts = tmp / "etc/hosts"
    if not hosts.exists():
        hosts.write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")


def _add_torch(arch: str, tmp: Path, lock_fd: int) -> None:
    t = resolve(arch)
    guard = binfmt_registered(t) if t is not None else contextlib.nullcontext(False)
    resolv = tmp / "etc/resolv.conf"
    had_resolv = resolv.exists() or resolv.is_symlink()
    if not had_resolv and Path("/etc/resolv.conf").exists():
        shutil.copy("/etc/resolv.conf", resolv)
    try:
        with guard, _mounted_proc(tmp):
            _run(["chroot", tmp, "apt-get", "-q", "update"], lock_fd, "apt-get update in rootfs",
                 t)
            _run(["chroot", tmp, "apt-get", "-q", "-y", "--no-install-recommends", "install",
                  *TORCH_PACKAGES], lock_fd, "apt-get install torch in rootfs", t)
            for lib in ("libblas.so.3", "liblapack.so.3"):
                for link in sorted((tmp / "etc/alternatives").glob(f"{lib}-*")):
                    choice = f"/usr/lib/{link.name[len(lib) + 1:]}/openblas-pthread/{lib}"
                    _run(["chroot", tmp, "update-alternatives", "--set", link.name, choice],
                         lock_fd, f"select OpenBLAS for {lib}", t)
            _run(["chroot", tmp, "apt-get", "clean"], lock_fd, "apt-get clean", t)
    finally:
        if not had_resolv:
            resolv.unlink(missing_ok=True)
    for d in (tmp / "var/lib/apt/lists").glob("*_*"):
        d.unlink()


def relative_links(root: Path) -> int:
    """Rewrite every absolute symlink below ``root`` into the relative link that reaches the
    same file inside ``root``; returns how many were rewritten.

    Debian makes absolute links (``libblas.so.3 -> /etc/alternatives/libblas.so.3-<triple>``).
    Under chroot they resolve inside the rootfs, but explicit ``qemu -L ROOTFS`` only redirects
    the path the guest opens: the kernel follows an absolute link found there on the *host*
    (docs/emulation.md). A relative link means the same in both modes. The walk stays on the
    rootfs's file system (never into a mounted /proc) and replaces each link atomically.
    """
    root = Path(root)
    dev = root.stat().st_dev
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        # Do not descend into other file systems (a /proc or /sys a running guest mounted).
        dirnames[:] = [d for d in dirnames
                       if (here / d).is_symlink() or (here / d).lstat().st_dev == dev]
        for name in (*dirnames, *filenames):
            link = here / name
            if not link.is_symlink():
                continue
            target = os.readlink(link)
            if not target.startswith("/"):
                continue
            rel = os.path.relpath(root / target.lstrip("/"), here)
            tmp = here / f".{name}.rvtorch-relink"
            tmp.unlink(missing_ok=True)
            os.symlink(rel, tmp)
            os.replace(tmp, link)
            count += 1
    return count


def absolute_links(root: Path) -> list[Path]:
    """The absolute symlinks below ``root`` (on its own file system)."""
    dev = Path(root).stat().st_dev
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames
                       if (here / d).is_symlink() or (here / d).lstat().st_dev == dev]
        out += [here / n for n in (*dirnames, *filenames)
                if (here / n).is_symlink() and os.readlink(here / n).startswith("/")]
    return out


def _check_torch(tmp: Path, pkgs: dict[str, str]) -> None:
    version = _version_of(pkgs, "python3-torch")
    if version is None or not version.startswith(TORCH_VERSION):
        raise BuildError(
            f"the archive's python3-torch is {version}, not {TORCH_VERSION}",
            hint="use a mirror/snapshot that carries it (--debian-mirror)",
        )
    for lib in ("libblas.so.3", "liblapack.so.3"):
        if "openblas" not in _blas_target(tmp, lib):
            raise BuildError(f"{lib} does not point at OpenBLAS in {tmp}")


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the temp rootfs is unmounted and
    deleted right away instead of by the next run. Only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _create(arch: str, with_torch: bool, final: Path, mirror: str, lock_fd: int) -> None:
    root = final.parent
    free = shutil.disk_usage(root).free
    if free < MIN_FREE_BYTES:
        raise UsageError(
            f"only {free >> 20} MiB free in {root}; "
            f"a rootfs needs about {MIN_FREE_BYTES >> 30} GiB",
            hint="free space or point RVTORCH_CACHE elsewhere",
        )
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    start = time.monotonic()
    with _terminate_as_interrupt():
        _create_in(arch, with_torch, final, mirror, lock_fd, tmp, start)


def _create_in(arch: str, with_torch: bool, final: Path, mirror: str, lock_fd: int, tmp: Path,
               start: float) -> None:
    try:
        if with_torch:
            base = ensure_rootfs(arch, False, mirror=mirror)
            # "seconds" in the manifest is this step's own time, without the base's.
            start = time.monotonic()
            _run(["cp", "-a", "--reflink=auto", base, tmp], lock_fd, "copy the base rootfs")
            _add_torch(arch, tmp, lock_fd)
        else:
            _debootstrap(arch, tmp, mirror, lock_fd)
        pkgs = _installed_packages(tmp)
        if with_torch:
            _check_torch(tmp, pkgs)
        relinked = relative_links(tmp)
        manifest = {
            "name": final.name,
            "arch": arch,
            "debian_arch": debian_arch(arch),
            "suite": matrix().project.suite,
            "with_torch": with_torch,
            "recipe_hash": recipe_hash(arch, with_torch),
            "mirror": mirror,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.monotonic() - start, 1),
            "python3": _version_of(pkgs, "python3"),
            "torch": _version_of(pkgs, "python3-torch"),
            "blas": _blas_target(tmp, "libblas.so.3") if with_torch else None,
            "packages": pkgs,
            LINKS_KEY: "relative",
            "relinked": relinked,
        }
        manifest_path(final).unlink(missing_ok=True)
        _remove_tree(final)
        os.rename(tmp, final)
        stamp_tmp = manifest_path(tmp)
        stamp_tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        os.replace(stamp_tmp, manifest_path(final))
    except BaseException:
        _remove_tree(tmp)
        raise


def _fix_links(final: Path) -> None:
    """Bring a rootfs made before links were made relative up to date, in place, once.

    Rewriting links is cheap and idempotent, so a cached rootfs is fixed rather than remade
    (a remake costs minutes under QEMU); the manifest records it.
    """
    with _locked(final.parent, final.name):
        m = read_manifest(final)
        if m is None or m.get(LINKS_KEY) == "relative":
            return
        n = relative_links(final)
        print(f"rvtorch: {final.name}: {n} absolute symlinks made relative", file=sys.stderr)
        m[LINKS_KEY] = "relative"
        m["relinked"] = n
        tmp = manifest_path(final).with_name(manifest_path(final).name + ".tmp")
        tmp.write_text(json.dumps(m, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, manifest_path(final))


def ensure_rootfs(arch: str, with_torch: bool = False, *, mirror: str | None = None) -> Path:
    """The path of a complete rootfs for ``arch`` (a targets.toml arch or ``host``).

    Made once and cached; an incomplete or outdated one is deleted and made again. Every
    symlink in it is relative (:func:`relative_links`), also in one made by an older rvtorch.
    """
    resolve(arch)  # unknown arch: usage error before touching anything
    final = rootfs_path(arch, with_torch)
    if is_complete(final, arch, with_torch):
        if (read_manifest(final) or {}).get(LINKS_KEY) != "relative":
            if not is_root():
                raise UsageError(f"the {final.name} rootfs has absolute symlinks to fix "
                                 "(made by an older rvtorch)",
                                 hint=f"run `sudo rvtorch rootfs create --arch {arch}"
                                 + (" --with-torch" if with_torch else "") + "` once")
            _fix_links(final)
        return final
    if not is_root():
        raise UsageError(
            f"creating the {final.name} rootfs needs root (debootstrap, chroot)",
            hint=f"run `sudo rvtorch rootfs create --arch {arch}"
            + (" --with-torch" if with_torch else "") + "` once",
        )
    if not shutil.which("debootstrap"):
        raise UsageError("debootstrap not found", hint="apt-get install debootstrap")
    url = debian_mirror(mirror, suite=matrix().project.suite)
    with _locked(final.parent, final.name) as fd:
        if is_complete(final, arch, with_torch):  # made by whoever held the lock
            return final
        _clean_stale(final.parent, final.name)
        print(f"rvtorch: creating rootfs {final.name} from {url}", file=sys.stderr)
        _create(arch, with_torch, final, url, fd)
    return final


def ensure_many(specs: Sequence[tuple[str, bool]], *, jobs: int = 3,
                mirror: str | None = None) -> dict[tuple[str, bool], Path]:
    """``ensure_rootfs`` for several (arch, with_torch) at once, ``jobs`` in parallel.

    Emulated maintainer scripts are single-threaded, so two arches built side by side use both
    cores of a small CI machine; the per-rootfs locks keep callers from colliding.
    """
    for arch, _ in specs:
        resolve(arch)
    if jobs <= 1 or len(specs) <= 1:
        return {spec: ensure_rootfs(spec[0], spec[1], mirror=mirror) for spec in specs}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {spec: pool.submit(ensure_rootfs, spec[0], spec[1], mirror=mirror)
                   for spec in specs}
        return {spec: f.result() for spec, f in futures.items()}


def remove_rootfs(arch: str, with_torch: bool = False) -> bool:
    final = rootfs_path(arch, with_torch)
    with _locked(final.parent, final.name):
        existed = final.exists() or manifest_path(final).exists()
        manifest_path(final).unlink(missing_ok=True)
        _remove_tree(final)
        _clean_stale(final.parent, final.name)
    return existed


def list_rootfs() -> list[dict[str, Any]]:
    root = rootfs_root(create=False)
    out = []
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if d.is_dir() and not d.name.startswith("."):
                m = read_manifest(d) or {}
                out.append({"name": d.name, "path": str(d), "complete": bool(m),
                            "arch": m.get("arch"), "torch": m.get("torch"),
                            "created": m.get("created"), "seconds": m.get("seconds")})
    return out
