"""The virtual board: ``qemu-system-<arch> -M virt`` booting the board image (docs/board.md).

One board per arch, its files under ``cache/board/vms/<arch>/``:

* ``disk.qcow2`` — a copy-on-write overlay on the cached image: the board keeps its state
  (venvs, wheels) across ``down``/``up`` like a real board's SD card; ``down --discard`` drops it.
  ``disk.json`` names the image it was made on (recipe hash and creation time): an overlay on a
  remade image would read its blocks against another file system, so it is made afresh.
* ``console.log`` — the serial console (kernel and systemd messages), kept after a failed boot.
* ``state.json`` — pid, SSH port, CPU model, the image's recipe hash; ``ready`` once SSH works.
* ``known_hosts`` — the image's sshd host key for the forwarded 127.0.0.1 port.

``up`` reuses a running board with the same settings. A boot that dies (QEMU exits, the kernel
panics) or hangs (no SSH login before ``--timeout``) is a build error (exit 4) naming the last
console line; QEMU is stopped and the console log kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import BuildError, UsageError
from ..proc import echo
from ..rootfs import _terminate_as_interrupt
from ..targets import CpuModel, Target
from .image import (
    QEMU_SYSTEM,
    BoardImage,
    QemuTree,
    board_root,
    ensure_image,
    ensure_qemu,
    image_recipe_hash,
)
from .remote import Remote

DEFAULT_SMP = 2
DEFAULT_MEM_MIB = 4096
DEFAULT_BOOT_TIMEOUT = 900.0
# What a dying kernel prints: stop waiting for SSH at once.
# An initramfs that mounted a root without a usable init drops to its "(initramfs)" shell and
# would sit there until --timeout.
PANIC_MARKERS = ("Kernel panic", "end Kernel panic", "Unable to mount root fs",
                 "Gave up waiting for root file system", "No init found",
                 "Target filesystem doesn't have requested")
CONSOLE = {"riscv64": "ttyS0", "aarch64": "ttyAMA0"}
# systemd's 90 s start and device timeouts are guest time, which runs on while a TCG vCPU waits
# for a busy host core: on a loaded 2-core host, networkd and udev devices then "time out" and
# the board never gets a network. Hangs are caught by `up --timeout` instead.
BOOT_ARGS = ("systemd.show_status=1 systemd.default_timeout_start_sec=1800 "
             "systemd.default_device_timeout_sec=1800")


@dataclass(frozen=True, kw_only=True)
class BoardConfig:
    """What ``up`` was asked for; a running board with another config is not reused."""

    arch: str
    cpu: str          # CPU model name from targets.toml
    qemu_cpu: str
    smp: int
    mem_mib: int

    @classmethod
    def make(cls, t: Target, cpu: str | None, smp: int | None, mem: str | None) -> BoardConfig:
        model: CpuModel = t.cpu_model(cpu) if cpu else t.cpu[0]
        n = DEFAULT_SMP if smp is None else smp
        if not 1 <= n <= 8:
            raise UsageError(f"--smp {n}: give 1 to 8 virtual CPUs")
        return cls(arch=t.arch, cpu=model.name, qemu_cpu=model.qemu_cpu, smp=n,
                   mem_mib=parse_mem(mem) if mem else DEFAULT_MEM_MIB)


def parse_mem(text: str) -> int:
    """``4G``, ``2048M`` or ``2048`` (MiB) -> MiB; at least 1 GiB (torch needs it)."""
    s = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = 1
    if s.endswith("G"):
        scale, s = 1024, s[:-1]
    elif s.endswith("M"):
        s = s[:-1]
    try:
        mib = int(float(s) * scale)
    except ValueError:
        raise UsageError(f"--mem {text!r} is not a size", hint="e.g. 4G or 3072M") from None
    if mib < 1024:
        raise UsageError(f"--mem {text}: a board needs at least 1G to import torch")
    return mib


@dataclass(kw_only=True)
class BoardState:
    config: BoardConfig
    pid: int
    port: int
    image_hash: str
    started: float
    ready: bool = False
    boot_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BoardState:
        cfg = BoardConfig(**d["config"])
        return cls(config=cfg, pid=int(d["pid"]), port=int(d["port"]),
                   image_hash=str(d["image_hash"]), started=float(d["started"]),
                   ready=bool(d.get("ready")), boot_seconds=d.get("boot_seconds"))


@dataclass(frozen=True)
class BoardFiles:
    dir: Path

    @property
    def disk(self) -> Path:
        return self.dir / "disk.qcow2"

    @property
    def console(self) -> Path:
        return self.dir / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.dir / "qemu.log"

    @property
    def state(self) -> Path:
        return self.dir / "state.json"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def disk_stamp(self) -> Path:
        return self.dir / "disk.json"


def board_files(arch: str) -> BoardFiles:
    d = board_root() / "vms" / arch
    d.mkdir(parents=True, exist_ok=True)
    return BoardFiles(d)


def read_state(files: BoardFiles) -> BoardState | None:
    try:
        return BoardState.from_json(json.loads(files.state.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_state(files: BoardFiles, state: BoardState) -> None:
    tmp = files.state.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=1) + "\n")
    os.replace(tmp, files.state)


def qemu_alive(pid: int, files: BoardFiles) -> bool:
    """The pid is a live QEMU running this board's disk (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return any(str(files.disk).encode() in arg for arg in cmdline)


def remote_for(image: BoardImage, files: BoardFiles, port: int) -> Remote:
    files.known_hosts.write_text(f"[127.0.0.1]:{port} {image.host_key}\n")
    # An emulated board busy with pip takes long to fork sshd: allow a slow banner.
    return Remote(user=str(image.manifest["user"]), host="127.0.0.1", port=port, key=image.key,
                  known_hosts=files.known_hosts, connect_timeout=60)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def qemu_command(t: Target, cfg: BoardConfig, tree: QemuTree, image: BoardImage,
                 files: BoardFiles, port: int) -> list[str]:
    """The whole qemu-system argv (machine, CPU model, firmware, kernel, disk, network)."""
    argv = [*tree.command(QEMU_SYSTEM[t.arch]), "-L", str(tree.data_dir),
            "-M", "virt", "-cpu", cfg.qemu_cpu, "-smp", str(cfg.smp), "-m", str(cfg.mem_mib),
            "-nodefaults", "-display", "none", "-monitor", "none",
            "-serial", f"file:{files.console}"]
    if t.arch == "riscv64":
        argv += ["-bios", str(tree.opensbi())]
    argv += [
        "-kernel", str(image.kernel), "-initrd", str(image.initrd),
        "-append", f"root=/dev/vda rw console={CONSOLE[t.arch]} {BOOT_ARGS}",
        "-drive", f"file={files.disk},format=qcow2,if=none,id=hd0,cache=unsafe",
        "-device", "virtio-blk-device,drive=hd0",
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device", "virtio-net-device,netdev=net0",
        "-object", "rng-random,filename=/dev/urandom,id=rng0",
        "-device", "virtio-rng-device,rng=rng0",
    ]
    return argv


def image_identity(image: BoardImage) -> dict[str, str]:
    """What tells one made image from another (a remake has the same path and may have the same
    recipe hash, e.g. after its manifest was removed)."""
    return {"recipe_hash": str(image.manifest.get("recipe_hash")),
            "created": str(image.manifest.get("created"))}


def disk_matches(files: BoardFiles, image: BoardImage) -> bool:
    """The overlay exists and was made on this very image (``disk.json``)."""
    try:
        stamp = json.loads(files.disk_stamp.read_text())
    except (OSError, ValueError):
        return False
    return files.disk.exists() and stamp == image_identity(image)


def _prepare_disk(tree: QemuTree, image: BoardImage, files: BoardFiles, fresh: bool) -> None:
    if not fresh and disk_matches(files, image):
        return
    if files.disk.exists():
        print(f"rvtorch: a fresh board disk on the image made {image.manifest.get('created')}"
              f" (the old overlay {files.disk} belongs to another image)", file=sys.stderr)
    files.disk.unlink(missing_ok=True)
    files.disk_stamp.unlink(missing_ok=True)
    tmp = files.disk.with_suffix(".tmp")
    cmd = [*tree.command("qemu-img"), "create", "-q", "-f", "qcow2", "-F", "raw",
           "-b", str(image.disk), str(tmp)]
    echo(cmd)
    proc = subprocess.run(cmd, env=tree.env(), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"qemu-img create failed: {proc.stderr.strip()[:200]}")
    os.replace(tmp, files.disk)
    # Written after the disk: a disk without its stamp is made again, never trusted.
    stamp = files.disk_stamp.with_suffix(".tmp")
    stamp.write_text(json.dumps(image_identity(image)) + "\n")
    os.replace(stamp, files.disk_stamp)


def last_console_line(files: BoardFiles) -> str:
    try:
        data = files.console.read_bytes()[-8192:].decode(errors="replace")
    except OSError:
        return "(no console output)"
    lines = [ln.strip() for ln in data.replace("\r", "\n").splitlines() if ln.strip()]
    return lines[-1][:160] if lines else "(no console output)"


def _console_panic(files: BoardFiles) -> str | None:
    try:
        text = files.console.read_bytes().decode(errors="replace")
    except OSError:
        return None
    for marker in PANIC_MARKERS:
        i = text.find(marker)
        if i >= 0:
            return text[i:].splitlines()[0][:160]
    return None


def _stop_pid(pid: int, files: BoardFiles, grace: float = 10.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        end = time.monotonic() + grace
        while time.monotonic() < end:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not qemu_alive(pid, files):
                return
            time.sleep(0.2)


def _cpu_rejected(log: str) -> str | None:
    for line in log.splitlines():
        if "-cpu" in line or "property" in line.lower() or "CPU model" in line:
            return line.strip()[:200]
    return None


@dataclass(frozen=True, kw_only=True)
class Board:
    """A running virtual board, ready for SSH."""

    config: BoardConfig
    remote: Remote
    files: BoardFiles
    pid: int
    reused: bool
    boot_seconds: float | None
    image: BoardImage


def up(t: Target, cfg: BoardConfig, *, timeout: float = DEFAULT_BOOT_TIMEOUT,
       port: int | None = None) -> Board:
    """Boot the board (or reuse the running one with the same config) and wait for SSH."""
    files = board_files(t.arch)
    state = read_state(files)
    if state is not None and qemu_alive(state.pid, files):
        if state.config != cfg:
            raise UsageError(
                f"the {t.arch} board already runs with cpu={state.config.cpu} "
                f"smp={state.config.smp} mem={state.config.mem_mib}M",
                hint=f"`rvtorch board down --arch {t.arch}` first, or ask for the same settings")
        image = ensure_image(t)
        remote = remote_for(image, files, state.port)
        if not state.ready:
            _wait_ready(t, files, remote, state, None, timeout)
        ok, cause = remote.reachable(timeout=180)
        if not ok:
            raise BuildError(f"the running {t.arch} board does not answer on SSH: {cause}",
                             hint=f"`rvtorch board down --arch {t.arch}` and up again; "
                             f"console log {files.console}")
        return Board(config=cfg, remote=remote, files=files, pid=state.pid, reused=True,
                     boot_seconds=state.boot_seconds, image=image)
    tree = ensure_qemu()
    image = ensure_image(t)
    fresh = state is not None and state.image_hash != image_recipe_hash(t)
    _prepare_disk(tree, image, files, fresh)
    port = port or free_port()
    argv = qemu_command(t, cfg, tree, image, files, port)
    files.console.unlink(missing_ok=True)
    echo(argv)
    with files.qemu_log.open("w") as log:
        # Own session: the board outlives this command and is not hit by the shell's Ctrl-C.
        proc = subprocess.Popen(argv, env=tree.env(), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    state = BoardState(config=cfg, pid=proc.pid, port=port, image_hash=image_recipe_hash(t),
                       started=time.time())
    write_state(files, state)
    remote = remote_for(image, files, port)
    try:
        # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C: QEMU is stopped, not orphaned.
        with _terminate_as_interrupt():
            _wait_ready(t, files, remote, state, proc, timeout)
    except BaseException:
        _stop_pid(proc.pid, files)
        files.state.unlink(missing_ok=True)
        raise
    return Board(config=cfg, remote=remote, files=files, pid=proc.pid, reused=False,
                 boot_seconds=state.boot_seconds, image=image)


def _wait_ready(t: Target, files: BoardFiles, remote: Remote, state: BoardState,
                proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    start = time.monotonic()
    deadline = start + timeout
    print(f"rvtorch: booting the {t.arch} board ({state.config.cpu}, {state.config.smp} CPUs, "
          f"{state.config.mem_mib} MiB); console: {files.console}", file=sys.stderr)
    last_note = start
    while True:
        code = proc.poll() if proc is not None else (
            None if qemu_alive(state.pid, files) else -1)
        if code is not None:
            log = files.qemu_log.read_text(errors="replace") if files.qemu_log.exists() else ""
            no_console = not files.console.exists() or files.console.stat().st_size == 0
            rejected = _cpu_rejected(log) if no_console else None
            if rejected:
                raise UsageError(f"QEMU rejected the {t.arch} CPU model {state.config.cpu!r}: "
                                 f"{rejected}")
            last = last_console_line(files) if not no_console else (
                log.strip().splitlines()[-1][:160] if log.strip() else "no output")
            raise BuildError(
                f"the {t.arch} board died while booting (qemu exit {code}): {last}",
                hint=f"console log kept: {files.console}; qemu log: {files.qemu_log}")
        panic = _console_panic(files)
        if panic:
            raise BuildError(f"the {t.arch} board crashed while booting: {panic}",
                             hint=f"console log kept: {files.console}")
        ok, cause = remote.reachable(timeout=30)
        if ok:
            state.ready = True
            state.boot_seconds = round(time.time() - state.started, 1)
            write_state(files, state)
            print(f"rvtorch: {t.arch} board up in {state.boot_seconds:.0f} s, ssh {remote.name}",
                  file=sys.stderr)
            return
        now = time.monotonic()
        if now >= deadline:
            raise BuildError(
                f"the {t.arch} board hung: no SSH login within {timeout:.0f} s ({cause}; "
                f"last console line: {last_console_line(files)})",
                hint=f"console log kept: {files.console}; raise --timeout on a busy host")
        if now - last_note > 60:
            print(f"rvtorch: still booting ({now - start:.0f} s): {last_console_line(files)}",
                  file=sys.stderr)
            last_note = now
        time.sleep(3)


def status(t: Target) -> dict[str, Any]:
    files = board_files(t.arch)
    state = read_state(files)
    out: dict[str, Any] = {"arch": t.arch, "dir": str(files.dir), "console": str(files.console)}
    if state is None or not qemu_alive(state.pid, files):
        out["running"] = False
        out["disk"] = str(files.disk) if files.disk.exists() else None
        return out
    out.update({"running": True, "pid": state.pid, "port": state.port, "ready": state.ready,
                "cpu": state.config.cpu, "qemu_cpu": state.config.qemu_cpu,
                "smp": state.config.smp, "mem_mib": state.config.mem_mib,
                "boot_seconds": state.boot_seconds,
                "uptime_s": round(time.time() - state.started, 1)})
    image = ensure_image(t)
    remote = remote_for(image, files, state.port)
    ok, cause = remote.reachable(timeout=180)
    out["ssh"] = f"ssh -i {image.key} -p {state.port} {remote.user}@127.0.0.1"
    out["ssh_ok"] = ok
    if not ok:
        out["ssh_problem"] = cause
    return out


def running_board(t: Target) -> Board:
    """The running, ready board of ``t``, or a usage error telling how to start it."""
    files = board_files(t.arch)
    state = read_state(files)
    if state is None or not qemu_alive(state.pid, files) or not state.ready:
        raise UsageError(f"no {t.arch} virtual board is running",
                         hint=f"`rvtorch board up --arch {t.arch}` first")
    image = ensure_image(t)
    return Board(config=state.config, remote=remote_for(image, files, state.port), files=files,
                 pid=state.pid, reused=True, boot_seconds=state.boot_seconds, image=image)


def down(t: Target, *, discard: bool = False, grace: float = 120.0) -> bool:
    """Power the board off (cleanly over SSH, else by signal). True if one was running."""
    files = board_files(t.arch)
    state = read_state(files)
    was = state is not None and qemu_alive(state.pid, files)
    if state is not None and was:
        if state.ready:
            image = ensure_image(t)
            remote = remote_for(image, files, state.port)
            # The connection drops as the board powers off: its exit status says nothing.
            with contextlib.suppress(UsageError):
                remote.run("sudo -n systemctl poweroff", check=False, timeout=30,
                           what="poweroff")
            end = time.monotonic() + grace
            while time.monotonic() < end and qemu_alive(state.pid, files):
                time.sleep(1)
        if qemu_alive(state.pid, files):
            _stop_pid(state.pid, files)
    files.state.unlink(missing_ok=True)
    if discard:
        files.disk.unlink(missing_ok=True)
        files.disk_stamp.unlink(missing_ok=True)
    return was
