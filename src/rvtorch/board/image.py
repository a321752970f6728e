"""What a virtual board boots, and the QEMU that boots it; both made once and cached.

**The board image** (``cache/board/images/<suite>-<debian_arch>-board``): the same pinned base
rootfs as ``rvtorch rootfs create`` (:func:`rvtorch.rootfs.ensure_rootfs`: debootstrap minbase +
python3), copied, plus what a real board runs — Debian's kernel (``linux-image-<arch>``, 6.12 in
trixie) with an initrd made by initramfs-tools, systemd, sshd, python3-venv — installed by apt in
the copy under qemu-user. A user ``rvtorch`` gets the public half of an ed25519 key the toolkit
generates; sshd's host key is recorded so the client checks it (no trust-on-first-use). The tree
becomes an ext4 image with ``mkfs.ext4 -d`` (no loop mount); the kernel and initrd are copied
out for QEMU's ``-kernel``/``-initrd``.

**The QEMU** (``cache/board/qemu-<suite>-<host arch>``): qemu-system 10.0 from Debian trixie,
installed by apt into a trixie rootfs of the host's own arch and run through that rootfs' dynamic
loader (no chroot, no root needed once made). Why not the host's: Debian 12 ships qemu-system 7.2
while the qemu-user that every other validation here runs under is trixie's 10.0 — a board
running another QEMU than the rootfs validation would make the two incomparable, and 7.2 lacks
newer RVV CPU properties. A trixie ``.deb`` unpacked on the host would not run: trixie's QEMU
needs glibc 2.41, bookworm has 2.36; the rootfs brings its own. The firmware is Debian's too:
``opensbi`` (riscv64 ``-bios``); aarch64 ``-M virt`` boots ``-kernel`` directly.

Both are made in a temporary directory and renamed into place; a manifest written last is the
completion stamp and carries the recipe hash (a changed recipe remakes them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..emulate import binfmt_registered, is_root
from ..errors import BuildError, UsageError
from ..paths import cache_dir
from ..rootfs import (
    _installed_packages,
    _locked,
    _mounted_proc,
    _remove_tree,
    _run,
    _terminate_as_interrupt,
    _version_of,
    ensure_rootfs,
    host_debian_arch,
    recipe_hash,
)
from ..targets import Target, matrix

# Bump when the steps below change: cached images and QEMU trees are remade.
IMAGE_RECIPE = 1
QEMU_RECIPE = 1

# Installed into the board image (kernel package per arch is added by board_packages()).
# systemd-sysv + udev: a real init with device nodes; openssh-server: the way in;
# python3-venv: ensurepip for `python3 -m venv` (what a user needs on a real board too);
# initramfs-tools: Debian's kernel has virtio_blk/ext4 as modules, the initrd loads them.
# sudo: `board down` powers the board off cleanly, as its user would.
BOARD_PACKAGES = ("systemd-sysv", "udev", "openssh-server", "python3-venv", "initramfs-tools",
                  "kmod", "iproute2", "procps", "sudo")
KERNEL_PACKAGE = {"riscv64": "linux-image-riscv64", "arm64": "linux-image-arm64"}
# Modules the initrd must carry to find the root disk on `-M virt` (virtio-mmio transport).
INITRD_MODULES = ("virtio_mmio", "virtio_pci", "virtio_blk", "virtio_net", "virtio_rng", "ext4")
# The host-side QEMU: the system emulators for both targets, qemu-img, and Debian's OpenSBI.
QEMU_PACKAGES = ("qemu-system-misc", "qemu-system-arm", "qemu-utils", "opensbi")
QEMU_SYSTEM = {"riscv64": "qemu-system-riscv64", "aarch64": "qemu-system-aarch64"}

BOARD_USER = "rvtorch"
# Sparse ext4 image: the rootfs (~0.7 GiB) plus a torch venv, wheelhouse and validation files.
DISK_BYTES = 8 << 30
MIN_FREE_BYTES = 3 << 30


@dataclass(frozen=True, kw_only=True)
class BoardImage:
    """A complete board image: files QEMU boots plus the key that logs in."""

    dir: Path
    arch: str
    disk: Path
    kernel: Path
    initrd: Path
    key: Path            # private key (public half in the image's authorized_keys)
    host_key: str        # sshd's public host key line ("ssh-ed25519 AAAA...")
    manifest: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class QemuTree:
    """trixie's qemu-system in a rootfs of the host arch, run through that rootfs' loader."""

    root: Path
    version: str

    def loader(self) -> Path:
        found = sorted((self.root / "usr/lib").glob("*/ld-linux-*.so.*")) + sorted(
            (self.root / "usr/lib64").glob("ld-linux-*.so.*"))
        if not found:
            raise BuildError(f"no dynamic loader in {self.root}", hint="rerun to remake it")
        return found[0]

    def library_path(self) -> str:
        # Only the host's own multiarch dir (the one with libc): opensbi also ships riscv dirs.
        dirs = [d for d in (self.root / "usr/lib").glob("*-linux-gnu*")
                if (d / "libc.so.6").exists()]
        return ":".join(str(d) for d in sorted(dirs))

    def command(self, program: str) -> list[str]:
        """argv prefix running ``program`` (e.g. qemu-img) from the tree on this host."""
        exe = self.root / "usr/bin" / program
        if not exe.is_file():
            raise BuildError(f"{program} missing in {self.root}", hint="rerun to remake it")
        return [str(self.loader()), "--library-path", self.library_path(), str(exe)]

    def env(self) -> dict[str, str]:
        # QEMU's loadable modules live under the tree, not the host's /usr/lib.
        mods = sorted((self.root / "usr/lib").glob("*/qemu"))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        if mods:
            env["QEMU_MODULE_DIR"] = str(mods[0])
        return env

    @property
    def data_dir(self) -> Path:
        return self.root / "usr/share/qemu"

    def opensbi(self) -> Path:
        found = sorted(self.root.glob("usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin"))
        if not found:
            raise BuildError(f"Debian's OpenSBI firmware is missing in {self.root}")
        return found[0]


def board_root(create: bool = True) -> Path:
    root = cache_dir(create=create) / "board"
    if create:
        root.mkdir(parents=True, exist_ok=True)
    return root


def board_packages(t: Target) -> tuple[str, ...]:
    return (KERNEL_PACKAGE[t.debian_arch], *BOARD_PACKAGES)


def image_name(t: Target) -> str:
    return f"{matrix().project.suite}-{t.debian_arch}-board"


def image_recipe_hash(t: Target) -> str:
    spec = {"recipe": IMAGE_RECIPE, "base": recipe_hash(t.arch, False),
            "packages": board_packages(t), "initrd_modules": INITRD_MODULES,
            "user": BOARD_USER, "disk_bytes": DISK_BYTES}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def qemu_recipe_hash() -> str:
    spec = {"recipe": QEMU_RECIPE, "base": recipe_hash("host", False), "packages": QEMU_PACKAGES}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _manifest(d: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _need_root(what: str, cmd: str) -> None:
    if not is_root():
        raise UsageError(f"making {what} needs root (debootstrap, chroot, apt under qemu-user)",
                         hint=f"run `sudo {cmd}` once")


def _check_free(root: Path, need: int) -> None:
    free = shutil.disk_usage(root).free
    if free < need:
        raise UsageError(f"only {free >> 20} MiB free in {root}; need about {need >> 30} GiB",
                         hint="free space or point RVTORCH_CACHE elsewhere")


@contextlib.contextmanager
def _resolv_conf(tmp: Path):  # type: ignore[no-untyped-def]
    """The host's resolver inside the tree for apt, removed again (a board has its own)."""
    resolv = tmp / "etc/resolv.conf"
    had = resolv.exists() or resolv.is_symlink()
    if not had and Path("/etc/resolv.conf").exists():
        shutil.copy("/etc/resolv.conf", resolv)
    try:
        yield
    finally:
        if not had:
            resolv.unlink(missing_ok=True)


def _apt_install(tmp: Path, packages: tuple[str, ...], lock_fd: int, t: Target | None) -> None:
    guard = binfmt_registered(t) if t is not None else contextlib.nullcontext(False)
    with guard, _resolv_conf(tmp), _mounted_proc(tmp):
        _run(["chroot", tmp, "apt-get", "-q", "update"], lock_fd, "apt-get update", t)
        # confold: files _configure_guest wrote before the package existed are kept, not asked.
        _run(["chroot", tmp, "apt-get", "-q", "-y", "--no-install-recommends",
              "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
              "install", *packages], lock_fd, f"apt-get install {' '.join(packages)}", t)
        _run(["chroot", tmp, "apt-get", "clean"], lock_fd, "apt-get clean", t)
    for f in (tmp / "var/lib/apt/lists").glob("*_*"):
        f.unlink()


def _make_in_tmp(final: Path, lock_fd: int, build: Any) -> None:
    """Run ``build(tmp)`` in a sibling temp dir, then rename it into place (stamp last)."""
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        print(f"rvtorch: removing incomplete {stale}", file=sys.stderr)
        _remove_tree(stale)
    tmp.mkdir(parents=True)
    with _terminate_as_interrupt():
        try:
            manifest = build(tmp)
            _remove_tree(final)
            os.rename(tmp, final)
            stamp = final / "manifest.json.tmp"
            stamp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
            os.replace(stamp, final / "manifest.json")
        except BaseException:
            _remove_tree(tmp)
            raise


# --------------------------------------------------------------------------------------------
# QEMU from trixie
# --------------------------------------------------------------------------------------------


def qemu_tree_path() -> Path:
    return board_root() / f"qemu-{matrix().project.suite}-{host_debian_arch()}"


def _load_qemu(root: Path) -> QemuTree | None:
    m = _manifest(root)
    if m is None or m.get("recipe_hash") != qemu_recipe_hash():
        return None
    return QemuTree(root=root / "rootfs", version=str(m.get("qemu_version")))


def ensure_qemu() -> QemuTree:
    final = qemu_tree_path()
    tree = _load_qemu(final)
    if tree is not None:
        return tree
    _need_root("the trixie qemu-system tree", "rvtorch board up")
    with _locked(final.parent, final.name) as fd:
        tree = _load_qemu(final)
        if tree is not None:
            return tree
        base = ensure_rootfs("host", False)
        _check_free(final.parent, 2 << 30)
        print(f"rvtorch: installing {' '.join(QEMU_PACKAGES)} into {final}", file=sys.stderr)

        def build(tmp: Path) -> dict[str, Any]:
            start = time.monotonic()
            _run(["cp", "-a", "--reflink=auto", base, tmp / "rootfs"], fd, "copy the host rootfs")
            _apt_install(tmp / "rootfs", QEMU_PACKAGES, fd, None)
            pkgs = _installed_packages(tmp / "rootfs")
            return {"recipe_hash": qemu_recipe_hash(), "packages": pkgs,
                    "qemu_version": _version_of(pkgs, "qemu-system-misc"),
                    "opensbi": _version_of(pkgs, "opensbi"),
                    "seconds": round(time.monotonic() - start, 1),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

        _make_in_tmp(final, fd, build)
    tree = _load_qemu(final)
    assert tree is not None
    return tree


# --------------------------------------------------------------------------------------------
# The board image
# --------------------------------------------------------------------------------------------


def image_path(t: Target) -> Path:
    return board_root() / "images" / image_name(t)


def _load_image(d: Path, t: Target) -> BoardImage | None:
    m = _manifest(d)
    if m is None or m.get("recipe_hash") != image_recipe_hash(t):
        return None
    return BoardImage(dir=d, arch=t.arch, disk=d / "disk.raw", kernel=d / "vmlinuz",
                      initrd=d / "initrd.img", key=d / "id_ed25519",
                      host_key=str(m["host_key"]), manifest=m)


def _configure_guest(root: Path, pubkey: str) -> None:
    """Files a freshly flashed board would get from its installer: fstab, network, a user."""
    (root / "etc/fstab").write_text("/dev/vda / ext4 defaults,noatime 0 1\n")
    (root / "etc/hostname").write_text("rvtorch-board\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\trvtorch-board\n"
                                    "::1\tlocalhost ip6-localhost ip6-loopback\n")
    # systemd-networkd (part of systemd) takes a DHCP lease from QEMU's user-mode network.
    net = root / "etc/systemd/network/20-wired.network"
    net.parent.mkdir(parents=True, exist_ok=True)
    net.write_text("[Match]\nName=e* en*\n\n[Network]\nDHCP=ipv4\n")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "systemd-networkd.service"
    if not link.is_symlink():
        link.symlink_to("/usr/lib/systemd/system/systemd-networkd.service")
    # The serial console needs no login; sshd is the only way in, as on a headless board.
    # Loaded by the initrd at boot (initramfs-tools' default MODULES=most carries them).
    modules = root / "etc/initramfs-tools/modules"
    modules.parent.mkdir(parents=True, exist_ok=True)
    modules.write_text("\n".join(INITRD_MODULES) + "\n")
    # No DNS on the board and no password: keep sshd from waiting on reverse lookups.
    conf = root / "etc/ssh/sshd_config.d/rvtorch.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text("UseDNS no\nPasswordAuthentication no\n")


def _add_user(root: Path, pubkey: str, lock_fd: int, t: Target) -> None:
    with binfmt_registered(t):
        _run(["chroot", root, "useradd", "--create-home", "--shell", "/bin/bash", BOARD_USER],
             lock_fd, "useradd", t)
    ssh_dir = root / "home" / BOARD_USER / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(pubkey.strip() + "\n")
    (ssh_dir / "authorized_keys").chmod(0o600)
    home = root / "home" / BOARD_USER
    uid_gid = next(line.split(":")[2:4] for line in (root / "etc/passwd").read_text().splitlines()
                   if line.startswith(BOARD_USER + ":"))
    for p in (home, ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(p, int(uid_gid[0]), int(uid_gid[1]))
    sudoers = root / "etc/sudoers.d/rvtorch"
    sudoers.write_text(f"{BOARD_USER} ALL=(ALL) NOPASSWD:ALL\n")
    sudoers.chmod(0o440)


def _kernel_files(root: Path) -> tuple[Path, Path]:
    kernels = sorted((root / "boot").glob("vmlinu[xz]-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise BuildError(f"no kernel/initrd in {root / 'boot'} after installing the kernel")
    return kernels[-1], initrds[-1]


def _build_image(t: Target, tmp: Path, base: Path, lock_fd: int) -> dict[str, Any]:
    start = time.monotonic()
    root = tmp / "rootfs"
    _run(["cp", "-a", "--reflink=auto", base, root], lock_fd, "copy the base rootfs")
    key = tmp / "id_ed25519"
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rvtorch-board", "-f", key],
         lock_fd, "ssh-keygen")
    pubkey = key.with_suffix(".pub").read_text()
    _configure_guest(root, pubkey)
    # initramfs-tools reads the module list while the kernel's postinst runs: configure first.
    _apt_install(root, board_packages(t), lock_fd, t)
    _add_user(root, pubkey, lock_fd, t)
    host_keys = sorted((root / "etc/ssh").glob("ssh_host_ed25519_key.pub"))
    if not host_keys:
        raise BuildError("openssh-server left no ed25519 host key in the image")
    host_key = " ".join(host_keys[0].read_text().split()[:2])
    kernel, initrd = _kernel_files(root)
    shutil.copy(kernel, tmp / "vmlinuz")
    shutil.copy(initrd, tmp / "initrd.img")
    pkgs = _installed_packages(root)
    # ext4 straight from the directory tree: no loop device, ownership kept (we are root).
    _run(["mkfs.ext4", "-q", "-F", "-L", "rvtorch-root", "-d", root, tmp / "disk.raw",
          f"{DISK_BYTES >> 20}M"], lock_fd, "mkfs.ext4 -d (the board disk image)")
    _remove_tree(root)
    return {"recipe_hash": image_recipe_hash(t), "arch": t.arch, "debian_arch": t.debian_arch,
            "suite": matrix().project.suite, "host_key": host_key, "user": BOARD_USER,
            "kernel": kernel.name, "initrd": initrd.name,
            "kernel_package": _version_of(pkgs, KERNEL_PACKAGE[t.debian_arch]),
            "python3": _version_of(pkgs, "python3"), "openssh": _version_of(pkgs,
                                                                             "openssh-server"),
            "packages": pkgs, "seconds": round(time.monotonic() - start, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def ensure_image(t: Target) -> BoardImage:
    """The board image for ``t``, made once (root needed only then)."""
    final = image_path(t)
    img = _load_image(final, t)
    if img is not None:
        return img
    _need_root(f"the {t.arch} board image", f"rvtorch board up --arch {t.arch}")
    for tool in ("mkfs.ext4", "ssh-keygen"):
        if not shutil.which(tool):
            raise UsageError(f"{tool} not found", hint="apt-get install e2fsprogs openssh-client")
    final.parent.mkdir(parents=True, exist_ok=True)
    with _locked(final.parent, final.name) as fd:
        img = _load_image(final, t)
        if img is not None:
            return img
        base = ensure_rootfs(t.arch, False)
        _check_free(final.parent, MIN_FREE_BYTES)
        print(f"rvtorch: making the {t.arch} board image {final}", file=sys.stderr)
        _make_in_tmp(final, fd, lambda tmp: _build_image(t, tmp, base, fd))
    img = _load_image(final, t)
    assert img is not None
    return img


def qemu_img_version(tree: QemuTree) -> str:
    proc = subprocess.run([*tree.command("qemu-img"), "--version"], capture_output=True,
                          text=True, env=tree.env(), check=False)
    return proc.stdout.splitlines()[0] if proc.returncode == 0 and proc.stdout else "?"
