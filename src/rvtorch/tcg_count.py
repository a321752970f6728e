"""Executed-instruction counts under QEMU: a plugin-enabled qemu-riscv64 and our TCG plugin.

Debian ships qemu-user only as static binaries built with ``--disable-plugins`` (trixie's
``debian/rules``), so the counting QEMU is built here: from Debian's pinned qemu source (the
``+ds`` orig tarball, sha256 from the package's ``.dsc``), linux-user riscv64 only, with
``--enable-plugins`` and nothing else, on the host (it must run beside the host's rootfs tools).
The plugin (``tcg/insn_count.c``) is compiled against that tree's ``qemu-plugin.h``.

Everything lands in ``cache_dir()/qemu-tcg`` (never in git). A build holds a lock; the
binary is copied in under a temporary name and renamed, and its stamp is written last, so a
killed build leaves no half-installed QEMU (a rerun resumes: ninja keeps what it compiled).

The plugin's output format is in ``tcg/insn_count.c``; :func:`parse_output` reads it and
:func:`region` turns two markers into the instructions executed between them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import BuildError, UsageError, ValidationError
from .paths import cache_dir, wait_lock
from .torchspec import PinnedFile

HERE = Path(__file__).resolve().parent
PLUGIN_SOURCE = HERE / "tcg" / "insn_count.c"
# The marker system call: unused by Linux (riscv64 numbers end below 500); QEMU answers ENOSYS.
MARKER_NR = 0x5256

# Debian trixie's qemu source package 1:10.0.13+ds-0+deb13u1 (pool/main/q/qemu); the orig
# tarball's size and sha256 as its .dsc lists them. Debian's own patches concern system
# emulation, firmware and the static binfmt build of qemu-user: not applied.
QEMU_DEBIAN_VERSION = "1:10.0.13+ds-0+deb13u1"
QEMU_POOL = "pool/main/q/qemu"
QEMU_ORIG = PinnedFile(name="qemu_10.0.13+ds.orig.tar.xz", size=40010016,
                       sha256="6a0888e806c2ffc0c5f0733e974f9aea55491950d3c47c98669c8b236dde59ae")
QEMU_TREE = "qemu-10.0.13"
# QEMU 10.0 configures with meson >= 1.5; the +ds tarball drops the bundled wheels and bookworm
# has meson 1.0: these two pure-Python wheels (the versions qemu's pythondeps.toml installs)
# come from PyPI with pip, pinned by hash.
BUILD_REQUIREMENTS = (
    "meson==1.5.0 --hash=sha256:52b34f4903b882df52ad0d533146d4b992c018ea77399f825579737672ae7b20",
    "pycotap==1.3.1 --hash=sha256:1c3a25b3ff89e48f4e00f1f71dbbc1642b4f65c65d416524d07e73492fff25ea",
)
CONFIGURE = (
    "--target-list=riscv64-linux-user", "--enable-plugins", "--disable-system",
    "--disable-tools", "--disable-docs", "--disable-werror", "--disable-debug-info",
    "--disable-download", "--disable-install-blobs", "--without-default-features",
)
HOST_PACKAGES = "gcc ninja-build pkg-config libglib2.0-dev python3-venv"
BUILD_TIMEOUT = 4 * 3600.0


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


def qemu_dir() -> Path:
    """The cache directory of this QEMU version and configuration."""
    key = _digest(QEMU_ORIG.sha256, *CONFIGURE, *BUILD_REQUIREMENTS)
    return cache_dir() / "qemu-tcg" / f"{QEMU_TREE}-{key}"


def plugin_sha256() -> str:
    return hashlib.sha256(PLUGIN_SOURCE.read_bytes()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class CountingQemu:
    """A built plugin-enabled qemu-riscv64 and our plugin."""

    qemu: Path
    plugin: Path
    version: str
    build: dict[str, object]

    def command(self, out: Path, *, nr: int = MARKER_NR) -> list[str]:
        """``qemu-riscv64 -plugin ...``: the argv head that counts into ``out``."""
        return [str(self.qemu), "-plugin", f"{self.plugin},out={out},nr={nr}"]

    def to_json(self) -> dict[str, object]:
        try:  # a cache path, not this machine's home directory
            where = f"$RVTORCH_CACHE/{self.qemu.relative_to(cache_dir())}"
        except ValueError:
            where = str(self.qemu)
        return {"qemu": where, "qemu_version": self.version,
                "qemu_source": f"Debian qemu {QEMU_DEBIAN_VERSION} ({QEMU_ORIG.name} sha256 "
                               f"{QEMU_ORIG.sha256})",
                "configure": list(CONFIGURE), "plugin_source": "src/rvtorch/tcg/insn_count.c",
                "plugin_sha256": plugin_sha256(), "build": self.build}


# ----------------------------------------------------------------------------------- building
def check_host_tools() -> None:
    """A usage error (exit 2) naming the packages when the host cannot build QEMU."""
    missing = [t for t in ("cc", "ninja", "pkg-config", "python3", "tar") if not shutil.which(t)]
    if not missing and subprocess.run(["pkg-config", "--exists", "glib-2.0"],
                                      check=False).returncode != 0:
        missing.append("glib-2.0 (pkg-config)")
    if not missing and subprocess.run(["python3", "-c", "import venv, ensurepip"],
                                      capture_output=True, check=False).returncode != 0:
        missing.append("python3 venv/ensurepip")
    if missing:
        raise UsageError(f"building the counting QEMU needs {', '.join(missing)} on the host",
                         hint=f"apt-get install {HOST_PACKAGES}")


def _run(argv: Sequence[str | Path], log: Path, what: str, cwd: Path | None = None) -> None:
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(map(str, argv))}\n")
        fh.flush()
        proc = subprocess.run(list(map(str, argv)), stdout=fh, stderr=subprocess.STDOUT,
                              cwd=cwd, check=False, timeout=BUILD_TIMEOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise BuildError(f"{what} failed (exit {proc.returncode}); log {log}: "
                         + " | ".join(tail)[-400:])


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.chmod(mode)
    os.replace(tmp, path)


def _unpack(d: Path, mirror: str | None, log: Path) -> Path:
    from .sources import _extract, debian_mirror, download, sources_dir, staging

    src = d / "src"
    if (src / ".rvtorch-complete").is_file():
        return src
    out = sources_dir() / "debian"
    out.mkdir(parents=True, exist_ok=True)
    archive = download(f"{debian_mirror(mirror)}/{QEMU_POOL}/{QEMU_ORIG.name}",
                       out / QEMU_ORIG.name, QEMU_ORIG)
    with staging(src) as tmp:
        _extract(archive, tmp)
        top = tmp / QEMU_TREE
        if not top.is_dir():
            from .errors import SourceError

            raise SourceError(f"{QEMU_ORIG.name} has no top directory {QEMU_TREE}/")
        for entry in top.iterdir():
            entry.rename(tmp / entry.name)
        top.rmdir()
        (tmp / ".rvtorch-complete").write_text(QEMU_ORIG.sha256 + "\n")
    with log.open("a") as fh:
        fh.write(f"unpacked {archive}\n")
    return src


def _build_python(d: Path, log: Path) -> Path:
    env = d / "pyenv"
    stamp = env / ".rvtorch-complete"
    want = "\n".join(BUILD_REQUIREMENTS)
    if stamp.is_file() and stamp.read_text() == want:
        return env / "bin" / "python3"
    shutil.rmtree(env, ignore_errors=True)
    _run(["python3", "-m", "venv", env], log, "python3 -m venv")
    req = d / "requirements.txt"
    req.write_text(want + "\n")
    _run([env / "bin" / "pip", "install", "--quiet", "--disable-pip-version-check",
          "--require-hashes", "-r", req], log, "pip install meson (hash-pinned)")
    stamp.write_text(want)
    return env / "bin" / "python3"


def ensure_qemu(*, mirror: str | None = None,
                jobs: int | None = None) -> tuple[Path, dict[str, object]]:
    """The plugin-enabled ``qemu-riscv64`` (built once; then reused) and its build record."""
    d = qemu_dir()
    binary = d / "bin" / "qemu-riscv64"
    stamp = d / "bin" / "qemu-riscv64.json"
    if binary.is_file() and stamp.is_file():
        return binary, dict(json.loads(stamp.read_text()))
    check_host_tools()
    with wait_lock(d / "build.lock", f"waiting for another build of {d.name}"):
        if binary.is_file() and stamp.is_file():
            return binary, dict(json.loads(stamp.read_text()))
        log = d / "build.log"
        print(f"rvtorch: building a plugin-enabled qemu-riscv64 ({QEMU_TREE}, Debian "
              f"{QEMU_DEBIAN_VERSION}); log {log}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        src = _unpack(d, mirror, log)
        python = _build_python(d, log)
        build = d / "build"
        configured = build / ".rvtorch-configured"
        # A build killed midway is resumed (ninja keeps its objects): its times are partial.
        resumed = configured.is_file()
        if not resumed:
            shutil.rmtree(build, ignore_errors=True)
            build.mkdir(parents=True)
            _run([src / "configure", f"--python={python}", *CONFIGURE], log,
                 "qemu configure", cwd=build)
            configured.write_text("\n".join(CONFIGURE) + "\n")
        t1 = time.monotonic()
        _run(["ninja", "-C", build, f"-j{jobs or os.cpu_count() or 1}", "qemu-riscv64"], log,
             "qemu build (ninja)")
        t2 = time.monotonic()
        (d / "bin").mkdir(exist_ok=True)
        _atomic_write(binary, (build / "qemu-riscv64").read_bytes(), 0o755)
        record: dict[str, object] = {
            "debian_version": QEMU_DEBIAN_VERSION, "orig": QEMU_ORIG.name,
            "orig_sha256": QEMU_ORIG.sha256, "configure": list(CONFIGURE),
            "setup_s": round(t1 - t0, 1), "ninja_s": round(t2 - t1, 1), "resumed": resumed,
            "host_cpus": os.cpu_count(), "load_avg": round(os.getloadavg()[0], 1)}
        _atomic_write(stamp, (json.dumps(record, indent=1) + "\n").encode())
        return binary, record


def build_plugin(*, mirror: str | None = None) -> Path:
    """``insn_count.so`` compiled against the counting QEMU's own ``qemu-plugin.h``."""
    d = qemu_dir()
    header_dir = d / "src" / "include" / "qemu"
    if not (header_dir / "qemu-plugin.h").is_file():
        ensure_qemu(mirror=mirror)
    out = d / "plugins" / f"insn_count-{plugin_sha256()[:12]}.so"
    if out.is_file():
        return out
    check_host_tools()
    out.parent.mkdir(parents=True, exist_ok=True)
    cflags = subprocess.run(["pkg-config", "--cflags", "glib-2.0"], capture_output=True,
                            text=True, check=True).stdout.split()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    proc = subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror",
                           "-Wno-unused-parameter", *cflags, f"-I{header_dir}",
                           str(PLUGIN_SOURCE), "-o", str(tmp)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"compiling {PLUGIN_SOURCE.name} failed: "
                         + (proc.stderr.strip().splitlines() or ["?"])[-1])
    os.replace(tmp, out)
    return out


def qemu_version(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                         check=False).stdout
    return (out.splitlines() or ["?"])[0]


def ensure(*, mirror: str | None = None) -> CountingQemu:
    """Build (or reuse) the counting QEMU and the plugin."""
    qemu, record = ensure_qemu(mirror=mirror)
    plugin = build_plugin(mirror=mirror)
    return CountingQemu(qemu=qemu, plugin=plugin, version=qemu_version(qemu), build=record)


# ------------------------------------------------------------------------------------ reading
@dataclass(frozen=True, kw_only=True)
class Mark:
    tag: int
    vcpu: int
    insns: int       # all vCPUs so far
    vector: int
    vcpu_insns: int  # the marking thread's own
    vcpu_vector: int


@dataclass(frozen=True, kw_only=True)
class Trace:
    nr: int
    marks: tuple[Mark, ...]
    exit: tuple[int, int] | None  # (insns, vector) at exit; None if QEMU died first

    def mark(self, tag: int) -> Mark:
        found = [m for m in self.marks if m.tag == tag]
        if len(found) != 1:
            raise ValidationError(f"instruction counts: marker {tag} seen {len(found)} times "
                                  "(expected once)")
        return found[0]


def parse_output(text: str) -> Trace:
    """Read the plugin's file; a malformed line is a validation error naming it."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("insn_count 1 nr="):
        raise ValidationError("instruction counts: not an insn_count 1 file (plugin not loaded?)")
    try:
        nr = int(lines[0].split("nr=", 1)[1])
    except ValueError:
        raise ValidationError(f"instruction counts: bad header {lines[0]!r}") from None
    marks: list[Mark] = []
    exit_: tuple[int, int] | None = None
    for i, line in enumerate(lines[1:], start=2):
        parts = line.split()
        try:
            if parts and parts[0] == "mark" and len(parts) == 7:
                v = [int(p) for p in parts[1:]]
                marks.append(Mark(tag=v[0], vcpu=v[1], insns=v[2], vector=v[3],
                                  vcpu_insns=v[4], vcpu_vector=v[5]))
                continue
            if parts and parts[0] == "exit" and len(parts) == 3 and exit_ is None:
                exit_ = (int(parts[1]), int(parts[2]))
                continue
        except ValueError:
            pass
        raise ValidationError(f"instruction counts: line {i} malformed: {line[:80]!r}")
    for a, b in itertools.pairwise(marks):
        if b.insns < a.insns or b.vector < a.vector:
            raise ValidationError(f"instruction counts: counters went backwards between markers "
                                  f"{a.tag} and {b.tag}")
    return Trace(nr=nr, marks=tuple(marks), exit=exit_)


@dataclass(frozen=True, kw_only=True)
class Region:
    insns: int
    vector: int


def region(trace: Trace, start: int, end: int) -> Region:
    """Instructions executed from marker ``start`` to marker ``end`` (including the second
    marker's own system call sequence: subtract an empty region for the net count)."""
    a, b = trace.mark(start), trace.mark(end)
    if b.insns < a.insns:
        raise ValidationError(f"instruction counts: marker {end} precedes marker {start}")
    return Region(insns=b.insns - a.insns, vector=b.vector - a.vector)
