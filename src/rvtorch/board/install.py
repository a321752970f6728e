"""Install a wheel on a board as its user would: a venv, pip, ``--no-index`` (docs/board.md).

Steps, each over SSH (:class:`rvtorch.board.remote.Remote`):

1. **Probe** the board with a POSIX shell script: machine, glibc, every ``python3.X`` and whether
   its ``venv`` module works, free disk where the venv goes.
2. **Check** it against the wheel *before anything is copied*: the wheel's platform tag names the
   board's arch, its manylinux tag a glibc the board has, its ``cpXY`` tag a Python the board has;
   the disk holds the unpacked wheel and its dependencies. Each mismatch is one usage error
   (exit 2). An XuanTie C9xx (vendor T-Head) core is noted: its vector unit is RVV 0.7.1, which
   RVV 1.0 code cannot use — OpenBLAS picks its scalar kernels there.
3. **Copy** the wheel and the pinned wheelhouse (:func:`rvtorch.wheelhouse.gather`) to
   ``~/.cache/rvtorch-board/files``; files already there with the same sha256 are not sent again.
4. **Install** with the wheelhouse's own commands (:func:`rvtorch.wheelhouse.install_commands`)
   into ``VENV.tmp-<id>`` beside the venv; ``import torch`` must work there. Only then is the old
   venv replaced (scripts' ``#!`` lines and ``activate`` rewritten for the final path); any
   failure removes the temporary venv, so a board never holds a half-installed one.
5. **Report** what the board is (ISA, V and VLEN, T-Head or not) and what torch found there
   (version, ``torch.__config__.show()``, the OpenBLAS kernel picked).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from .. import wheelhouse
from ..errors import BuildError, UsageError, ValidationError
from ..sources import sha256_file
from ..targets import Target, matrix
from ..wheel import arch_of_wheel
from .remote import Remote

STAGE = ".cache/rvtorch-board/files"  # under the board user's home
# Space beyond the unpacked files: pip's temporary copy of the wheel, .pyc files written later.
DISK_MARGIN = 512 << 20
# pip unpacks a 65 MB torch wheel: minutes on an emulated board, seconds on a real one.
INSTALL_TIMEOUT = 3600.0
THEAD_MVENDORID = 0x5B7
UNAME_ARCH = {"riscv64": "riscv64", "aarch64": "aarch64"}

# The board as a POSIX shell sees it (every board has sh; Python may be missing).
PROBE_SH = r"""
echo "machine=$(uname -m)"
echo "kernel=$(uname -r)"
echo "glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null)"
echo "home=$HOME"
for py in python3.15 python3.14 python3.13 python3.12 python3.11 python3.10 python3; do
  p=$(command -v "$py" 2>/dev/null) || continue
  v=$("$p" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || continue
  if "$p" -c 'import venv' 2>/dev/null; then venv=yes; else venv=no; fi
  echo "python=$p:$v:$venv"
done
d="$1"
case "$d" in "~"*) d="$HOME${d#\~}";; esac
while [ ! -d "$d" ]; do d=$(dirname "$d"); done
echo "free_kib=$(df -Pk "$d" | awk 'NR==2 {print $4}')"
echo "free_dir=$d"
"""


@dataclass(frozen=True, kw_only=True)
class WheelNeeds:
    """What a wheel asks of a board, read from its file name and zip directory."""

    path: Path
    arch: str
    python: str                 # "3.13"
    glibc: tuple[int, int] | None
    unpacked_bytes: int

    @classmethod
    def read(cls, wheel: Path) -> WheelNeeds:
        if not wheel.is_file():
            raise UsageError(f"wheel {wheel} not found")
        try:
            _, _, _, tags = parse_wheel_filename(wheel.name)
        except InvalidWheelFilename as exc:
            raise UsageError(f"{wheel.name} is not a wheel file name ({exc})") from exc
        arch = arch_of_wheel(wheel)
        pythons = sorted({t.interpreter for t in tags if t.interpreter.startswith("cp")})
        if len(pythons) != 1:
            raise UsageError(f"{wheel.name}: expected one CPython tag, found {pythons or 'none'}")
        py = pythons[0][2:]
        glibc = None
        for tag in tags:
            m = re.match(r"manylinux_(\d+)_(\d+)_", tag.platform)
            if m:
                glibc = (int(m.group(1)), int(m.group(2)))
        try:
            with zipfile.ZipFile(wheel) as zf:
                size = sum(i.file_size for i in zf.infolist())
        except (OSError, zipfile.BadZipFile) as exc:
            raise UsageError(f"cannot read {wheel}: {exc}") from exc
        return cls(path=wheel, arch=arch, python=f"{py[0]}.{py[1:]}", glibc=glibc,
                   unpacked_bytes=size)


@dataclass(kw_only=True)
class BoardProbe:
    machine: str
    kernel: str
    glibc: tuple[int, int] | None
    home: str
    pythons: list[tuple[str, str, bool]]   # (path, "3.13", venv module works)
    free_bytes: int | None
    free_dir: str

    @classmethod
    def parse(cls, text: str) -> BoardProbe:
        values: dict[str, list[str]] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values.setdefault(key.strip(), []).append(value.strip())

        def one(key: str) -> str:
            return (values.get(key) or [""])[0]

        m = re.search(r"(\d+)\.(\d+)", one("glibc"))
        pythons = []
        seen = set()
        for item in values.get("python", []):
            path, _, rest = item.partition(":")
            version, _, venv = rest.partition(":")
            real = (version, path)
            if real in seen:
                continue
            seen.add(real)
            pythons.append((path, version, venv == "yes"))
        free = one("free_kib")
        return cls(machine=one("machine"), kernel=one("kernel"),
                   glibc=(int(m.group(1)), int(m.group(2))) if m else None, home=one("home"),
                   pythons=pythons, free_bytes=int(free) * 1024 if free.isdigit() else None,
                   free_dir=one("free_dir"))


def pick_python(probe: BoardProbe, needs: WheelNeeds, board: str) -> str:
    """The board's interpreter for the wheel's ``cpXY`` tag, or a usage error naming why not."""
    matching = [p for p in probe.pythons if p[1] == needs.python]
    if not matching:
        found = ", ".join(sorted({f"{v} ({p})" for p, v, _ in probe.pythons})) or "none"
        raise UsageError(
            f"{board} has no Python {needs.python} for {needs.path.name} (found: {found})",
            hint=f"install python{needs.python} (Debian trixie, Ubuntu 24.10+) or use a wheel "
            "built for the board's Python")
    usable = [p for p in matching if p[2]]
    if not usable:
        raise UsageError(f"{board}: python{needs.python}'s venv module does not work",
                         hint=f"install python{needs.python}-venv on the board")
    return usable[0][0]


def check_board(probe: BoardProbe, needs: WheelNeeds, board: str, extra_bytes: int) -> None:
    """Usage errors for a board that cannot take the wheel (arch, glibc, disk)."""
    want = UNAME_ARCH[needs.arch]
    if probe.machine != want:
        raise UsageError(f"{board} is {probe.machine or 'unknown'}, {needs.path.name} is for "
                         f"{want}", hint=f"use the {probe.machine} wheel for this board")
    if needs.glibc is not None:
        if probe.glibc is None:
            raise UsageError(f"{board}: no glibc found; {needs.path.name} needs glibc "
                             f">= {needs.glibc[0]}.{needs.glibc[1]} (musl is not supported)")
        if probe.glibc < needs.glibc:
            have = f"{probe.glibc[0]}.{probe.glibc[1]}"
            raise UsageError(f"{board} has glibc {have}, {needs.path.name} needs >= "
                             f"{needs.glibc[0]}.{needs.glibc[1]}",
                             hint="upgrade the board's OS (Debian trixie, Ubuntu 24.04+)")
    need = needs.unpacked_bytes + extra_bytes + DISK_MARGIN
    if probe.free_bytes is not None and probe.free_bytes < need:
        raise UsageError(f"{board}: only {probe.free_bytes >> 20} MiB free in "
                         f"{probe.free_dir}, the install needs about {need >> 20} MiB",
                         hint="free disk space on the board or pass another --venv")


def cpu_notes(cpu: dict[str, Any]) -> list[str]:
    """What a user should know about the board's CPU before trusting speed numbers."""
    notes = []
    vendor = cpu.get("mvendorid")
    try:
        vendor_id = int(str(vendor), 0) if vendor else None
    except ValueError:
        vendor_id = None
    isa = str(cpu.get("isa") or "")
    if vendor_id == THEAD_MVENDORID and ("xtheadvector" in isa or not cpu.get("vector")):
        notes.append("XuanTie (T-Head) core: its vector unit implements RVV 0.7.1, not RVV 1.0; "
                     "the wheel runs with OpenBLAS's scalar kernels here")
    if cpu.get("machine") == "riscv64" and not cpu.get("vector"):
        notes.append("no RVV 1.0 (V) extension: OpenBLAS uses its RISCV64_GENERIC kernels")
    return notes


@dataclass(frozen=True, kw_only=True)
class BoardRef:
    """Where to install: the remote, and a name for messages."""

    remote: Remote
    label: str
    virtual: bool


def resolve_board(*, vm: bool, host: str | None, arch: str | None, port: int | None,
                  key: Path | None, wheel: Path | None = None,
                  known_hosts: Path | None = None) -> BoardRef:
    if vm:
        if port is not None or key is not None or known_hosts is not None:
            raise UsageError("--port/--key/--known-hosts are for --host; the virtual board "
                             "has its own")
        from .vm import running_board

        if arch is None:
            if wheel is None:
                raise UsageError("--vm needs --arch")
            arch = WheelNeeds.read(wheel).arch
        t = matrix().target(arch)
        board = running_board(t)
        return BoardRef(remote=board.remote, label=f"the {t.arch} virtual board "
                        f"({board.config.cpu})", virtual=True)
    if host is None:
        raise UsageError("give --vm or --host USER@HOST")
    if arch is not None:
        raise UsageError("--arch is for --vm; a real board's arch is probed")
    remote = Remote.parse(host, port=port, key=key)
    if known_hosts is not None:
        if not known_hosts.is_file():
            raise UsageError(f"--known-hosts {known_hosts} not found")
        remote = dataclasses.replace(remote, known_hosts=known_hosts)
    return BoardRef(remote=remote, label=remote.name, virtual=False)


def probe_board(remote: Remote, where: str) -> BoardProbe:
    proc = remote.run(f"sh -s -- {where}", input=PROBE_SH, what="probing the board")
    return BoardProbe.parse(proc.stdout)


def run_probe_script(remote: Remote, python: str, *, torch: bool,
                     env: dict[str, str] | None = None) -> tuple[dict[str, Any], str]:
    """probe_target.py on the board: (its JSON, its stderr)."""
    script = (Path(__file__).with_name("probe_target.py")).read_text()
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    cmd = f"{'env ' + prefix + ' ' if prefix else ''}{shlex.quote(python)} - " + (
        "--torch" if torch else "")
    proc = remote.run(cmd, input=script, check=False, what="the board probe",
                      timeout=INSTALL_TIMEOUT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValidationError(f"the probe failed on {remote.name} (exit {proc.returncode}): "
                              f"{tail[:200]}")
    return json.loads(lines[-1]), proc.stderr



def _zip_size(path: Path) -> int:
    with zipfile.ZipFile(path) as zf:
        return sum(i.file_size for i in zf.infolist())


def stage_files(remote: Remote, files: list[Path], stage: str) -> tuple[int, float]:
    """Copy ``files`` into ``stage`` unless the same sha256 is already there: (sent, seconds)."""
    t0 = time.monotonic()
    remote.run(f"mkdir -p {shlex.quote(stage)}", what="mkdir the staging directory")
    names = " ".join(shlex.quote(f.name) for f in files)
    proc = remote.run(f"cd {shlex.quote(stage)} && sha256sum {names} 2>/dev/null", check=False,
                      what="sha256sum")
    have = {}
    for line in proc.stdout.splitlines():
        digest, _, name = line.partition("  ")
        have[name.strip()] = digest
    send = [f for f in files if have.get(f.name) != sha256_file(f)]
    if send:
        remote.copy_to(send, stage, timeout=INSTALL_TIMEOUT)
    return len(send), time.monotonic() - t0


@dataclass(kw_only=True)
class InstallResult:
    board: str
    venv: str
    python: str
    cpu: dict[str, Any]
    torch: dict[str, Any]
    openblas_core: str | None
    notes: list[str]
    timings: dict[str, float]
    packages: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"board": self.board, "venv": self.venv, "python": self.python, "cpu": self.cpu,
                "torch": self.torch, "openblas_core": self.openblas_core, "notes": self.notes,
                "timings": {k: round(v, 1) for k, v in self.timings.items()},
                "packages": self.packages}

    def summary(self) -> str:
        c = self.cpu
        vec = "yes" if c.get("vector") else "no"
        lines = [f"installed on {self.board}: {self.venv} ({self.python})",
                 f"  machine {c.get('machine')}, {c.get('cpus')} CPUs"
                 + (f", isa {c['isa']}" if c.get("isa") else "")
                 + (f", features {c['features']}" if c.get("features") else ""),
                 f"  vector extension: {vec}" + (f", VLEN {c['vlen']}" if c.get("vlen") else "")
                 + (f", mvendorid {c['mvendorid']}" if c.get("mvendorid") else ""),
                 f"  torch {self.torch.get('version')}, OpenBLAS kernel: "
                 f"{self.openblas_core or 'not reported'}"]
        lines += [f"  note: {n}" for n in self.notes]
        lines.append("  times: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.timings.items()))
        config = self.torch.get("config")
        lines.append("torch.__config__.show():")
        lines.append(config.rstrip() if config else "  (this torch has no __config__)")
        return "\n".join(lines)


def _abs(path: str, home: str) -> str:
    if path == "~" or path.startswith("~/"):
        return home + path[1:]
    if not path.startswith("/"):
        raise UsageError(f"--venv {path!r}: give an absolute path or one under ~")
    return path


def _relocate_script(tmp: str, final: str) -> str:
    """Shell run on the board: fix the venv's paths for ``final``, then swap it into place."""
    q_tmp, q_final = shlex.quote(tmp), shlex.quote(final)
    sed_expr = shlex.quote(f"s|{tmp}|{final}|g")
    return (
        "set -e\n"
        f"cd {q_tmp}/bin\n"
        # Only text files whose first line is our #! or that name the path (activate*).
        f"for f in *; do [ -f \"$f\" ] && [ ! -L \"$f\" ] && grep -Iq {q_tmp} \"$f\" && "
        f"sed -i {sed_expr} \"$f\"; done; true\n"
        f"cd /\n"
        f"rm -rf {q_final}.old\n"
        f"if [ -e {q_final} ]; then mv {q_final} {q_final}.old; fi\n"
        f"mv {q_tmp} {q_final}\n"
        f"rm -rf {q_final}.old\n"
    )


def install(board: BoardRef, wheel: Path, *, venv: str = "~/rvtorch-venv") -> InstallResult:
    """Check, copy, install, report (module docstring). Raises before copying on a bad board."""
    remote = board.remote
    needs = WheelNeeds.read(wheel.resolve())
    t: Target = matrix().target(needs.arch)
    wheelhouse.check_covers(needs.path, t)
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    probe = probe_board(remote, shlex.quote(venv))
    final = _abs(venv, probe.home)
    if probe.free_dir == "" or not final.startswith("/"):
        raise UsageError(f"cannot resolve --venv {venv} on {board.label}")
    deps = wheelhouse.gather(t)
    dep_bytes = sum(_zip_size(f) for f in deps) + sum(f.stat().st_size for f in deps)
    check_board(probe, needs, board.label, dep_bytes + needs.path.stat().st_size)
    python = pick_python(probe, needs, board.label)
    timings["probe"] = time.monotonic() - t0

    stage = f"{probe.home}/{STAGE}"
    sent, timings["copy"] = stage_files(remote, [needs.path, *deps], stage)
    print(f"rvtorch: {sent} file(s) sent to {board.label}", file=sys.stderr)

    tmp = f"{final}.tmp-{os.getpid()}"
    cmds = wheelhouse.install_commands(python, tmp, stage, f"{stage}/{needs.path.name}",
                                       pip_whl=f"{stage}/{wheelhouse.pip_wheel(deps).name}")
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in wheelhouse.PIP_ENV.items())
    t1 = time.monotonic()
    try:
        # Leftovers of a killed earlier run: never reused, never left behind.
        remote.run(f"rm -rf {shlex.quote(final)}.tmp-*", what="remove stale venvs")
        for argv in cmds:
            proc = remote.run(f"env {env} {shlex.join(argv)}", check=False,
                              timeout=INSTALL_TIMEOUT, what="pip install")
            if proc.returncode != 0:
                out = (proc.stderr.strip() or proc.stdout.strip()).splitlines() or ["?"]
                if any("No space left" in ln for ln in out):
                    raise UsageError(f"{board.label}: the disk filled up during the install",
                                     hint="free space on the board; nothing was left installed")
                raise BuildError(f"`{' '.join(argv[:3])} ...` failed on {board.label} "
                                 f"(exit {proc.returncode}): {out[-1][:200]}")
        timings["install"] = time.monotonic() - t1
        t2 = time.monotonic()
        report, stderr = run_probe_script(remote, f"{tmp}/bin/python3", torch=True,
                                          env={"OPENBLAS_VERBOSE": "2",
                                               "OPENBLAS_NUM_THREADS": "1"})
        timings["import"] = time.monotonic() - t2
        err = report.get("torch", {}).get("import_error")
        if err:
            raise ValidationError(f"import torch fails on {board.label}: {err[:200]}",
                                  hint="the venv was removed; see docs/board.md")
        remote.run(f"sh -c {shlex.quote(_relocate_script(tmp, final))}",
                   what="move the venv into place")
    except BaseException:
        remote.run(f"rm -rf {shlex.quote(tmp)}", check=False, what="remove the temporary venv")
        raise
    # The moved venv's own scripts must still work (their #! lines were rewritten).
    remote.run(f"{shlex.quote(final)}/bin/pip --version", what="the venv's pip after the move")
    pkgs = remote.run(f"{shlex.quote(final)}/bin/pip list --format=freeze",
                      what="pip list", quiet=True).stdout.split()
    m = re.search(r"^Core: (\S+)", stderr, re.M)
    return InstallResult(board=board.label, venv=final, python=python, cpu=report["cpu"],
                         torch=report.get("torch", {}), openblas_core=m.group(1) if m else None,
                         notes=cpu_notes(report["cpu"]), timings=timings, packages=pkgs)
