"""Running target programs under QEMU user emulation, with a clean guest environment.

Two ways to run a target binary from a target root filesystem (see docs/emulation.md):

* **binfmt** — binfmt_misc has an entry for the target's ELF whose interpreter works inside the
  rootfs (the ``F`` flag opens it at registration time): ``chroot ROOTFS CMD`` then runs target
  code transparently, including child processes. The CPU model reaches the interpreter through
  ``QEMU_CPU`` in the environment (qemu-user reads it). Needs root (chroot).
* **qemu** — no usable binfmt entry (or not root): ``qemu-<arch>-static -L ROOTFS -cpu MODEL
  ROOTFS/usr/bin/python3.13 ...``. A guest cannot start target programs in this mode: QEMU
  does not apply -L to execve, so a child is the *host's* program of that path (or fails):
  launch each process from the host.

The arch ``host`` is the native reference rootfs (amd64 on this machine): plain ``chroot``.

QEMU hands its own environment to the guest, so the guest environment is built from nothing:
host-only variables such as ``OPENBLAS_CORETYPE=Haswell`` (FACTS: a riscv64 OpenBLAS then prints
"Core not found" and falls back to the generic kernel) never reach it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError
from .paths import StagingDir
from .proc import die_with_parent, echo
from .targets import CpuModel, Target, matrix, suggest

HOST_ARCH = "host"
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
# Entries we register carry this prefix; teardown removes only those.
OWN_PREFIX = "rvtorch-"
MODE_ENV = "RVTORCH_EMULATION"
MODES = ("auto", "binfmt", "qemu")

GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# ELF e_machine numbers for the names used in targets.toml (from the ELF specification; the same
# values pyelftools' ENUM_E_MACHINE carries).
_E_MACHINE = {"EM_RISCV": 243, "EM_AARCH64": 183, "EM_X86_64": 62}


# --------------------------------------------------------------------------------------------
# Arch resolution
# --------------------------------------------------------------------------------------------


def all_arches() -> tuple[str, ...]:
    return (*matrix().arches, HOST_ARCH)


def resolve(arch: str) -> Target | None:
    """The target for ``arch``; ``None`` for the native ``host`` reference."""
    if arch == HOST_ARCH:
        return None
    if arch not in matrix().arches:
        raise UsageError(f"unknown arch {arch!r}", hint=suggest(arch, all_arches()))
    return matrix().target(arch)


def cpu_model(arch: str, cpu: str | None) -> CpuModel | None:
    """The CPU model to emulate: ``cpu`` by name (or exact -cpu string), else the first listed."""
    t = resolve(arch)
    if t is None:
        if cpu:
            raise UsageError(f"--cpu {cpu!r} makes no sense for the native host rootfs")
        return None
    return t.cpu_model(cpu) if cpu else t.cpu[0]


# --------------------------------------------------------------------------------------------
# binfmt_misc
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BinfmtEntry:
    """One ``/proc/sys/fs/binfmt_misc/NAME`` entry."""

    name: str
    enabled: bool
    interpreter: str
    flags: str
    offset: int = 0
    magic: bytes = b""
    mask: bytes = b""
    extension: str = ""

    def matches(self, header: bytes) -> bool:
        """Would the kernel hand a file starting with ``header`` to this entry?"""
        if not self.magic:
            return False
        chunk = header[self.offset : self.offset + len(self.magic)]
        if len(chunk) < len(self.magic):
            return False
        mask = self.mask or b"\xff" * len(self.magic)
        return all((c & m) == (g & m) for c, m, g in zip(chunk, mask, self.magic, strict=True))

    @property
    def fix_binary(self) -> bool:
        return "F" in self.flags

    @property
    def ours(self) -> bool:
        return self.name.startswith(OWN_PREFIX)


def parse_binfmt_entry(name: str, text: str) -> BinfmtEntry:
    """Parse the text the kernel shows for one entry (``enabled``, ``interpreter``, ``flags:``)."""
    enabled = False
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line in ("enabled", "disabled"):
            enabled = line == "enabled"
            continue
        key, _, value = line.partition(" ")
        fields[key.rstrip(":")] = value.strip()
    return BinfmtEntry(
        name=name,
        enabled=enabled,
        interpreter=fields.get("interpreter", ""),
        flags=fields.get("flags", ""),
        offset=int(fields.get("offset", "0") or 0),
        magic=bytes.fromhex(fields.get("magic", "")),
        mask=bytes.fromhex(fields.get("mask", "")),
        extension=fields.get("extension", ""),
    )


def binfmt_mounted(root: Path = BINFMT_DIR) -> bool:
    return (root / "register").exists()


def binfmt_entries(root: Path = BINFMT_DIR) -> list[BinfmtEntry]:
    if not binfmt_mounted(root):
        return []
    out = []
    for f in sorted(root.iterdir()):
        if f.name in ("register", "status"):
            continue
        try:
            out.append(parse_binfmt_entry(f.name, f.read_text()))
        except OSError:  # removed while we read the directory
            continue
    return out


def binfmt_enabled_globally(root: Path = BINFMT_DIR) -> bool:
    try:
        return (root / "status").read_text().strip() == "enabled"
    except OSError:
        return False


def elf_header(t: Target) -> bytes:
    """The first 20 bytes of a little-endian ELF64 executable for ``t`` (e_ident..e_machine)."""
    try:
        machine = _E_MACHINE[t.elf_machine]
    except KeyError as exc:
        raise UsageError(
            f"{t.arch}: unknown elf_machine {t.elf_machine!r} in targets.toml",
            hint=suggest(t.elf_machine, tuple(_E_MACHINE)),
        ) from exc
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # ELFCLASS64, LSB, version 1, SYSV
    return ident + (2).to_bytes(2, "little") + machine.to_bytes(2, "little")  # ET_EXEC


def binfmt_magic_mask(t: Target) -> tuple[bytes, bytes]:
    """Magic and mask that match executables and shared objects (ET_EXEC, ET_DYN) of ``t``."""
    magic = elf_header(t)
    # Ignore the OS/ABI byte (index 7) and the low bit of e_type (EXEC=2 vs DYN=3), like QEMU's
    # own qemu-binfmt-conf.sh does.
    mask = b"\xff" * 7 + b"\x00" + b"\xff" * 8 + b"\xfe\xff" + b"\xff\xff"
    return magic, mask


def matching_entries(t: Target, entries: list[BinfmtEntry] | None = None) -> list[BinfmtEntry]:
    header = elf_header(t)
    if entries is None:
        entries = binfmt_entries()
    return [e for e in entries if e.matches(header)]


@dataclass(frozen=True, kw_only=True)
class BinfmtState:
    mounted: bool
    enabled: bool
    entries: tuple[BinfmtEntry, ...]  # enabled entries that match the target's ELF

    def usable_in(self, rootfs: Path | None) -> bool:
        """Would ``chroot rootfs <target binary>`` run? Every matching entry must work there."""
        if not (self.mounted and self.enabled and self.entries):
            return False
        for e in self.entries:
            if e.fix_binary:
                continue
            if rootfs is None or not (rootfs / e.interpreter.lstrip("/")).exists():
                return False
        return True

    def describe(self) -> str:
        if not self.mounted:
            return "binfmt_misc not mounted"
        if not self.enabled:
            return "binfmt_misc disabled globally"
        if not self.entries:
            return "no binfmt entry"
        return "; ".join(f"{e.name}: {e.interpreter} flags={e.flags or '-'}" for e in self.entries)


def binfmt_state(t: Target, root: Path = BINFMT_DIR) -> BinfmtState:
    entries = [e for e in matching_entries(t, binfmt_entries(root)) if e.enabled]
    return BinfmtState(
        mounted=binfmt_mounted(root), enabled=binfmt_enabled_globally(root), entries=tuple(entries)
    )


def is_root() -> bool:
    return os.geteuid() == 0


def _require_root(what: str) -> None:
    if not is_root():
        raise UsageError(f"{what} needs root", hint=f"run `sudo rvtorch {what}`")


def mount_binfmt(root: Path = BINFMT_DIR) -> None:
    if binfmt_mounted(root):
        return
    proc = subprocess.run(
        ["mount", "-t", "binfmt_misc", "binfmt_misc", str(root)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0 or not binfmt_mounted(root):
        raise UsageError(
            f"cannot mount binfmt_misc on {root}: {proc.stderr.strip() or 'not allowed'}",
            hint="run on a host (or privileged container) that allows binfmt_misc, "
            "or run without binfmt (rvtorch falls back to explicit qemu -L)",
        )


def own_entry_name(t: Target) -> str:
    return f"{OWN_PREFIX}{t.arch}"


def register(t: Target, interpreter: str, root: Path = BINFMT_DIR) -> str:
    """Register ``interpreter`` for ``t`` with the F flag under our own name; returns the name."""
    magic, mask = binfmt_magic_mask(t)

    def esc(b: bytes) -> str:
        return "".join(f"\\x{x:02x}" for x in b)

    name = own_entry_name(t)
    line = f":{name}:M::{esc(magic)}:{esc(mask)}:{interpreter}:F"
    try:
        (root / "register").write_text(line)
    except OSError as exc:
        raise UsageError(
            f"cannot register binfmt entry {name}: {exc.strerror}",
            hint="needs root on a host that allows binfmt_misc",
        ) from exc
    return name


def unregister(name: str, root: Path = BINFMT_DIR) -> None:
    with contextlib.suppress(FileNotFoundError):
        (root / name).write_text("-1")


def set_entry_enabled(name: str, enabled: bool, root: Path = BINFMT_DIR) -> None:
    (root / name).write_text("1" if enabled else "0")


def setup(arches: Sequence[str]) -> list[str]:
    """``rvtorch emulator setup``: register qemu for every arch that has no usable F entry."""
    _require_root("emulator setup")
    mount_binfmt()
    if not binfmt_enabled_globally():
        raise UsageError(
            "binfmt_misc is disabled globally",
            hint=f"echo 1 > {BINFMT_DIR}/status",
        )
    done = []
    for arch in arches:
        t = resolve(arch)
        if t is None:
            continue
        state = binfmt_state(t)
        # What setup registers (or finds) stays: a process that registered the entry for the
        # time being must not remove it when it is done.
        _binfmt_use_files(t)[1].unlink(missing_ok=True)
        if state.entries and all(e.fix_binary for e in state.entries):
            print(f"{arch}: already registered ({state.describe()})")
            continue
        if (BINFMT_DIR / own_entry_name(t)).exists():
            unregister(own_entry_name(t))
        q = qemu_binary(t)
        name = register(t, q)
        # An older non-F entry for the same magic would still shadow ours inside a chroot.
        print(f"{arch}: registered {name} -> {q} (flags F)")
        done.append(name)
        if not binfmt_state(t).usable_in(None):
            others = [e.name for e in binfmt_state(t).entries if not e.fix_binary]
            print(f"{arch}: note: entries without the F flag also match: {', '.join(others)} "
                  f"(disable them: echo 0 > {BINFMT_DIR}/<name>)")
    return done


def teardown(arches: Sequence[str] | None = None, root: Path = BINFMT_DIR) -> list[str]:
    """``rvtorch emulator teardown``: remove the entries we registered, and only those."""
    if not binfmt_mounted(root):
        return []
    wanted = None if arches is None else {f"{OWN_PREFIX}{a}" for a in arches}
    removed = []
    for e in binfmt_entries(root):
        if e.ours and (wanted is None or e.name in wanted):
            _require_root("emulator teardown")
            unregister(e.name, root)
            removed.append(e.name)
    return removed


def _binfmt_use_files(t: Target) -> tuple[Path, Path]:
    """The lock every user of a temporary entry holds shared, and the marker saying the entry
    was registered for the time being (not by ``emulator setup``)."""
    from .paths import cache_dir

    d = cache_dir() / "locks"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"binfmt-{t.arch}.lock", d / f"binfmt-{t.arch}.temporary"


def _binfmt_lock(t: Target) -> tuple[int, Path]:
    """An open descriptor of the users' lock (not locked yet) and the temporary marker."""
    lock_path, temporary = _binfmt_use_files(t)
    return os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644), temporary


@contextlib.contextmanager
def binfmt_registered(t: Target) -> Iterator[bool]:
    """Make sure target binaries run via binfmt for the duration (rootfs creation).

    Yields True if this call registered an entry. Several toolkit processes may need the entry
    at once (a build's rootfs and a benchmark's), so every user holds a shared lock for the
    duration, and the last one out removes a temporary entry: never the entry under another
    process's feet, never one that ``emulator setup`` made permanent. Without binfmt and
    without root: a usage error saying exactly what to do.
    """
    import fcntl

    fd, temporary = _binfmt_lock(t)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        registered = False
        if not binfmt_state(t).usable_in(None):
            if not is_root():
                raise UsageError(
                    f"running {t.arch} binaries during rootfs creation needs binfmt_misc with "
                    "the F flag",
                    hint=f"run `sudo rvtorch emulator setup --arch {t.arch}` once, then retry",
                )
            fcntl.flock(fd, fcntl.LOCK_EX)  # check-and-register is one step among users
            if not binfmt_state(t).usable_in(None):
                mount_binfmt()
                temporary.write_text(f"{os.getpid()}\n")
                register(t, qemu_binary(t))
                registered = True
            fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            yield registered
        finally:
            _release_binfmt(t, fd, temporary)
    finally:
        os.close(fd)


def _release_binfmt(t: Target, fd: int, temporary: Path) -> None:
    """Leave the entry; the last user of a temporary one removes it."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another process still runs target binaries through it
    if temporary.exists():
        unregister(own_entry_name(t))
        temporary.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# QEMU
# --------------------------------------------------------------------------------------------


# The QEMU of explicit runs for an arch, when a caller names one (qemu_override): a wheel with
# ATen's RVV capability is validated on the vector CPU models under QEMU 10 (validation.py).
_QEMU_OVERRIDE: dict[str, str] = {}


@contextlib.contextmanager
def qemu_override(arch: str, binary: str | Path | None) -> Iterator[None]:
    """Run explicit ``qemu -L`` commands for ``arch`` with ``binary`` (None: the default) for the
    duration; guest paths are those of explicit mode either way, so a venv made under one QEMU
    runs under the other."""
    old = _QEMU_OVERRIDE.get(arch)
    if binary is None:
        _QEMU_OVERRIDE.pop(arch, None)
    else:
        _QEMU_OVERRIDE[arch] = str(binary)
    try:
        yield
    finally:
        if old is None:
            _QEMU_OVERRIDE.pop(arch, None)
        else:
            _QEMU_OVERRIDE[arch] = old


@contextlib.contextmanager
def explicit_mode(on: bool = True) -> Iterator[None]:
    """Explicit ``qemu -L`` (``MODE_ENV=qemu``) for the duration when ``on``: for runs that swap
    the QEMU (qemu_override, the counting QEMU), which a binfmt entry would bypass."""
    old = os.environ.get(MODE_ENV)
    if on:
        os.environ[MODE_ENV] = "qemu"
    try:
        yield
    finally:
        if on:
            if old is None:
                os.environ.pop(MODE_ENV, None)
            else:
                os.environ[MODE_ENV] = old


def qemu_binary(t: Target) -> str:
    if t.arch in _QEMU_OVERRIDE:
        return _QEMU_OVERRIDE[t.arch]
    found = shutil.which(t.qemu_binary)
    if not found:
        raise UsageError(
            f"{t.qemu_binary} not found",
            hint="apt-get install qemu-user-static (bookworm's 7.2 runs torch 3x faster than 10.0)",
        )
    return found


def qemu_version(binary: str) -> str | None:
    try:
        proc = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    except OSError:
        return None
    m = re.search(r"version (\d+\.\d+(?:\.\d+)?)", proc.stdout)
    return m.group(1) if m else None


@functools.cache
def _checked_cpu(binary: str, qemu_cpu: str, rootfs: Path) -> str | None:
    return probe_cpu(binary, qemu_cpu, rootfs)


def check_cpu(t: Target, model: CpuModel, binary: str, rootfs: Path) -> None:
    """A usage error (exit 2) when the QEMU that will run the guest rejects the model."""
    err = _checked_cpu(binary, model.qemu_cpu, rootfs)
    if err:
        raise UsageError(
            f"{binary} (qemu {qemu_version(binary) or '?'}) cannot emulate {t.arch} CPU model "
            f"{model.name!r} (-cpu {model.qemu_cpu}): {err}",
            hint="install a qemu-user-static that knows it, or pick another --cpu "
            f"({', '.join(t.cpu_names)})",
        )


def probe_cpu(binary: str, qemu_cpu: str, rootfs: Path | None = None) -> str | None:
    """None if ``binary`` accepts ``-cpu qemu_cpu``, else QEMU's one-line complaint.

    With a rootfs the target's ``/usr/bin/true`` is run. Without one a host executable is
    loaded: QEMU creates the CPU before it checks the ELF, so "Invalid ELF image" means the
    model and all its properties were accepted.
    """
    if rootfs is not None and (rootfs / "usr/bin/true").exists():
        cmd = [binary, "-L", str(rootfs), "-cpu", qemu_cpu, str(rootfs / "usr/bin/true")]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={}, check=False)
        return None if proc.returncode == 0 else (proc.stderr.strip() or f"exit {proc.returncode}")
    host_exe = shutil.which("true") or "/bin/true"
    proc = subprocess.run(
        [binary, "-cpu", qemu_cpu, host_exe], capture_output=True, text=True, env={}, check=False
    )
    err = proc.stderr.strip()
    if "Invalid ELF image" in err or proc.returncode == 0:
        return None
    return err.splitlines()[-1].split(": ", 1)[-1] if err else f"exit {proc.returncode}"


# --------------------------------------------------------------------------------------------
# The guest command
# --------------------------------------------------------------------------------------------


def guest_env(extra: Mapping[str, str] | None = None, *, tmpdir: str = "/tmp") -> dict[str, str]:
    """The guest's whole environment: a fixed base plus what the caller passes explicitly."""
    env = {
        "PATH": GUEST_PATH,
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "TMPDIR": tmpdir,
    }
    if extra:
        env.update(extra)
    return env


def resolve_in_rootfs(rootfs: Path, guest_path: str) -> Path:
    """The host path of ``guest_path``, following symlinks as the guest would (root = rootfs)."""
    parts = [p for p in guest_path.split("/") if p]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        host = rootfs.joinpath(*resolved, part)
        if host.is_symlink():
            hops += 1
            if hops > 40:
                raise UsageError(f"too many symlinks resolving {guest_path} in {rootfs}")
            link = os.readlink(host)
            if link.startswith("/"):
                resolved = []
            parts = [p for p in link.split("/") if p] + parts
            continue
        resolved.append(part)
    return rootfs.joinpath(*resolved)


def qemu_path(rootfs: Path, guest_path: str) -> Path:
    """The host file explicit ``qemu -L rootfs`` opens for ``guest_path``.

    QEMU looks a path up under the rootfs first and falls back to the host's own path (this is
    how the guest reaches scratch directories given by their host path). A symlink met on the
    host side whose target is absolute is a guest path again, looked up the same way.
    """
    inside = rootfs / guest_path.lstrip("/")
    if inside.exists() or inside.is_symlink():
        return resolve_in_rootfs(rootfs, guest_path)
    host = Path(guest_path)
    for _ in range(40):
        if not host.is_symlink():
            return host
        link = os.readlink(host)
        if link.startswith("/"):
            return qemu_path(rootfs, link)
        host = Path(os.path.normpath(host.parent / link))
    raise UsageError(f"too many symlinks resolving {guest_path} for {rootfs}")


def _find_guest_program(rootfs: Path, name: str) -> str:
    """The guest path of ``name`` (searched on the guest PATH when it has no slash)."""
    if "/" in name:
        if not name.startswith("/"):
            raise UsageError(f"give the program as an absolute guest path or a name: {name!r}")
        return name
    for d in GUEST_PATH.split(":"):
        candidate = f"{d}/{name}"
        if resolve_in_rootfs(rootfs, candidate).is_file():
            return candidate
    raise UsageError(
        f"{name!r} not found on the guest PATH in {rootfs}",
        hint="install it in the rootfs or give an absolute guest path",
    )


def _shebang(host_file: Path) -> list[str] | None:
    try:
        with host_file.open("rb") as fh:
            first = fh.readline(256)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    return first[2:].decode(errors="replace").strip().split(None, 1)


def chroot_works(state: BinfmtState, rootfs: Path | None) -> bool:
    """Can ``chroot rootfs <target binary>`` run with this binfmt state?

    Decided from the entries when they say so; when an entry without the F flag also matches
    (Debian's binfmt-support registers ``qemu-<arch>`` with P only), which entry the kernel
    picks is not visible in /proc, so the answer comes from running ``/usr/bin/true`` once.
    """
    if state.usable_in(rootfs):
        return True
    if rootfs is None or not any(e.fix_binary for e in state.entries):
        return False
    return _chroot_true(rootfs, state)


@functools.cache
def _chroot_true(rootfs: Path, state: BinfmtState) -> bool:
    # ``state`` is part of the cache key: a changed registration is probed again.
    try:
        proc = subprocess.run(["chroot", str(rootfs), "/usr/bin/true"], env=guest_env(),
                              capture_output=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


# Modes fixed for a whole run by :func:`pinned_mode`: (arch, resolved rootfs) -> mode.
_PINNED: dict[tuple[str, str], str] = {}


def mode_for(arch: str, rootfs: Path | None) -> str:
    """``native`` (host), ``binfmt`` (chroot) or ``qemu`` (explicit -L); see the module doc."""
    pinned = _PINNED.get((arch, str(Path(rootfs).resolve()))) if rootfs is not None else None
    if pinned is not None:
        return pinned
    t = resolve(arch)
    forced = os.environ.get(MODE_ENV, "auto") or "auto"
    if forced not in MODES:
        raise UsageError(f"{MODE_ENV}={forced!r} is not a mode", hint=suggest(forced, MODES))
    if t is None:
        if not is_root():
            raise UsageError("running the host reference rootfs needs root (chroot)",
                             hint="run as root")
        return "native"
    usable = is_root() and chroot_works(binfmt_state(t), rootfs)
    if forced == "binfmt":
        if not usable:
            raise UsageError(
                f"{MODE_ENV}=binfmt but binfmt cannot run {arch} binaries in a chroot here",
                hint=f"run `sudo rvtorch emulator setup --arch {arch}` or unset {MODE_ENV}",
            )
        return "binfmt"
    if forced == "qemu" or not usable:
        return "qemu"
    return "binfmt"


@contextlib.contextmanager
def pinned_mode(arch: str, rootfs: Path) -> Iterator[str]:
    """Fix the emulation mode of ``rootfs`` for a whole run (a validation).

    Guest paths differ between the modes (chroot: ``/tmp/...``; explicit ``qemu -L``: the host
    path), so a venv made in one mode cannot be run in the other: a binfmt entry registered or
    removed by another process in the middle of a run must not switch the mode under it. In
    binfmt mode the run also counts as a user of the entry (see :func:`binfmt_registered`), so
    a toolkit process that registered it for the time being leaves it in place until this run
    is done.
    """
    key = (arch, str(Path(rootfs).resolve()))
    if key in _PINNED:
        yield _PINNED[key]
        return
    t = resolve(arch)
    fd: int | None = None
    if t is not None and is_root():
        import fcntl

        fd, _ = _binfmt_lock(t)
        fcntl.flock(fd, fcntl.LOCK_SH)  # not while another process registers or removes
    try:
        mode = mode_for(arch, rootfs)
        if mode != "binfmt" and fd is not None:
            os.close(fd)  # explicit qemu -L needs no entry: never hold up a registration
            fd = None
        _PINNED[key] = mode
        try:
            yield mode
        finally:
            _PINNED.pop(key, None)
            if fd is not None and t is not None:
                _release_binfmt(t, fd, _binfmt_use_files(t)[1])
    finally:
        if fd is not None:
            os.close(fd)


# Runs on the host: mounts /proc, /sys (a bind: a second sysfs mount fails where one is already
# mounted, e.g. during debootstrap) and a /dev/shm tmpfs inside the rootfs in a private mount
# namespace (they vanish with the guest, nothing leaks into the cache), then chroots. Without
# /proc torch's cpuinfo fails to parse the CPU; without /dev/shm Python's multiprocessing locks
# fail. "$0" is the rootfs; sh's own PWD must not reach the guest.
_CHROOT_SCRIPT = (
    'mount -t proc proc "$0/proc" && mount --bind /sys "$0/sys" && '
    'mount -t tmpfs -o mode=1777 shm "$0/dev/shm" && unset PWD OLDPWD && exec chroot "$0" "$@"'
)


def chroot_prefix(rootfs: Path) -> list[str]:
    """The host argv before ``ROOTFS CMD...`` for the chroot modes (see _CHROOT_SCRIPT)."""
    for d in ("proc", "sys", "dev/shm"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _CHROOT_SCRIPT]


def guest_command(
    arch: str,
    argv: Sequence[str],
    *,
    cpu: str | None = None,
    rootfs: Path,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The host argv and the (clean) environment that run guest ``argv`` in ``rootfs``.

    ``env`` adds variables to the guest environment explicitly; nothing else from the host
    passes. ``cwd`` is a guest directory (default ``/``).
    """
    if not argv:
        raise UsageError("no command to run", hint="rvtorch run --arch ARCH -- CMD ...")
    model = cpu_model(arch, cpu)
    rootfs = Path(rootfs).resolve()
    if not (rootfs / "usr").is_dir():
        raise UsageError(f"{rootfs} is not a root filesystem",
                         hint=f"create one with `rvtorch rootfs create --arch {arch}`")
    mode = mode_for(arch, rootfs)
    t = resolve(arch)
    if mode in ("native", "binfmt"):
        extra = dict(env or {})
        if t is not None and model is not None:
            interp = binfmt_state(t).entries[0].interpreter
            check_cpu(t, model, interp if Path(interp).exists() else qemu_binary(t), rootfs)
            extra["QEMU_CPU"] = model.qemu_cpu
        cmd = [*chroot_prefix(rootfs), str(rootfs)]
        if cwd:
            cmd += ["/usr/bin/env", f"--chdir={cwd}"]
        return [*cmd, *argv], guest_env(extra)
    assert t is not None and model is not None
    check_cpu(t, model, qemu_binary(t), rootfs)
    program = _find_guest_program(rootfs, argv[0])
    host_exe = qemu_path(rootfs, program)
    args = list(argv[1:])
    shebang = _shebang(host_exe)
    if shebang:
        # QEMU loads ELF only: run the script's interpreter with the script as argument.
        args = [*shebang[1:], program, *args]
        program = shebang[0]
        host_exe = qemu_path(rootfs, program)
    # Paths the guest opens are looked up under -L first; files that do not exist there yet
    # (new files in TMPDIR) would land on the host's /tmp, so TMPDIR is the rootfs's tmp by its
    # host path, which the guest reaches unchanged.
    genv = guest_env(env, tmpdir=str(rootfs / "tmp"))
    # -0: the guest's argv[0] is the path it asked for, not the host file QEMU loads. A Python
    # finds its venv (pyvenv.cfg) and its prefix from argv[0]; with the resolved host path a
    # venv's python would be the bare system one.
    cmd = [qemu_binary(t), "-L", str(rootfs), "-cpu", model.qemu_cpu, "-0", program,
           str(host_exe), *args]
    if cwd:
        cmd = ["env", f"--chdir={qemu_path(rootfs, cwd)}", *cmd]
    return cmd, genv


def _default_rootfs(arch: str) -> Path:
    from .rootfs import ensure_rootfs  # rootfs imports this module

    return ensure_rootfs(arch)


def run_guest(
    arch: str,
    argv: Sequence[str],
    *,
    cpu: str | None = None,
    rootfs: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    capture: bool = True,
    cwd: str | None = None,
    quiet: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run guest ``argv`` and return the CompletedProcess (whatever its exit status).

    ``rootfs`` defaults to the arch's cached base rootfs (created if missing). A timeout raises
    ``subprocess.TimeoutExpired`` after the process was killed.
    """
    if rootfs is None:
        rootfs = _default_rootfs(arch)
    cmd, genv = guest_command(arch, argv, cpu=cpu, rootfs=rootfs, env=env, cwd=cwd)
    if not quiet:
        echo(cmd)
    try:
        return subprocess.run(
            cmd, env=genv, text=True, capture_output=capture, timeout=timeout, check=False,
            preexec_fn=die_with_parent(),  # a killed rvtorch leaves no guest running on
        )
    except FileNotFoundError as exc:
        raise UsageError(f"{cmd[0]} not found", hint="see `rvtorch doctor`") from exc


def _rootfs_arch(rootfs: Path) -> str | None:
    manifest = rootfs.with_name(rootfs.name + ".json")
    try:
        return str(json.loads(manifest.read_text())["arch"])
    except (OSError, ValueError, KeyError):
        return None


@contextlib.contextmanager
def guest_tmpdir(rootfs: Path, arch: str | None = None) -> Iterator[tuple[Path, str]]:
    """A fresh directory inside ``rootfs`` as (host path, guest path); removed on exit.

    The guest path depends on how the guest runs: a ``rvtorch-XXXX`` directory in the guest's
    temp dir under chroot, the host path itself under explicit ``qemu -L`` (new files there must
    not fall through to the host's temp dir). ``arch`` defaults to the one recorded in the
    rootfs's manifest.
    """
    rootfs = Path(rootfs).resolve()
    arch = arch or _rootfs_arch(rootfs)
    if arch is None:
        raise UsageError(f"{rootfs} has no manifest naming its arch", hint="pass arch=")
    # Owner-locked (rvtorch.paths.StagingDir): a run killed with SIGKILL leaves a directory the
    # next run removes; the rootfs's /tmp is shared, so only dead owners' directories go.
    staged = StagingDir(rootfs / "tmp", "rvtorch", orphans=False)
    host = staged.path
    host.chmod(0o1777)
    try:
        if mode_for(arch, rootfs) == "qemu":
            yield host, str(host)
        else:
            yield host, "/tmp/" + host.name
    finally:
        staged.release()
