"""The main command's host set-up on a fresh Debian 12: a debootstrapped bookworm root (minbase:
no Python, no container engine, no QEMU) stands in for a new machine.

``ensure_host_packages`` (scripts/lib.sh) is what ``build_torch.sh``, ``rvtorch.sh`` and
``test.sh`` run first. As another user it must stop with exit 2 and one line naming the exact
install command; as root it must install every package of the one list, after which a second
run changes nothing. Cost: debootstrap (about a minute) plus the apt install (a few minutes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rvtorch.aptsource import debian_mirror
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

SUITE = "bookworm"


def _chroot(root: Path, script: str, *, user: str | None = None,
            timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    prefix = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] if user else []
    return subprocess.run(
        ["chroot", str(root), *prefix, "/bin/bash", "-c", script],
        capture_output=True, text=True, timeout=timeout,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"},
    )


@pytest.fixture(scope="module")
def fresh_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        pytest.fail("needs root and debootstrap (scripts/test.sh installs it)")
    root = tmp_path_factory.mktemp("fresh") / "root"
    mirror = debian_mirror(suite=SUITE)
    r = subprocess.run(["debootstrap", "--variant=minbase", SUITE, str(root), mirror],
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    # Only what lib.sh reads: the scripts and the target matrix.
    (root / "rvtorch/toolchains").mkdir(parents=True)
    shutil.copytree(ROOT / "scripts", root / "rvtorch/scripts")
    shutil.copy(ROOT / "toolchains/targets.toml", root / "rvtorch/toolchains/targets.toml")
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root / "proc")], check=False)
        shutil.rmtree(root, ignore_errors=True)


SETUP = "source /rvtorch/scripts/lib.sh && ensure_host_packages"


def _wanted(root: Path) -> list[str]:
    r = _chroot(root, "source /rvtorch/scripts/lib.sh && host_packages")
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def _installed(root: Path, names: list[str]) -> set[str]:
    r = _chroot(root, "dpkg-query -W -f='${Package} ${Status}\\n' " + " ".join(names) + " || true")
    return {ln.split()[0] for ln in r.stdout.splitlines() if "install ok installed" in ln}


def test_host_setup_on_a_fresh_debian_12(fresh_root: Path) -> None:
    wanted = _wanted(fresh_root)
    assert {"buildah", "debootstrap", "qemu-user-static", "python3", "python3-venv",
            "binutils-riscv64-linux-gnu", "binutils-aarch64-linux-gnu"} <= set(wanted)
    before = _installed(fresh_root, wanted)
    missing = [p for p in wanted if p not in before]
    assert {"buildah", "qemu-user-static", "python3"} <= set(missing)  # really a fresh machine
    # Not root: nothing installed, exit 2, the exact command (the missing ones) on the first line.
    r = _chroot(fresh_root, SETUP, user="65534")
    assert r.returncode == 2, r.stdout + r.stderr
    first = r.stderr.splitlines()[0]
    assert first == ("rvtorch: error: missing host packages; run: sudo apt-get install -y "
                     "--no-install-recommends " + " ".join(missing))
    assert _installed(fresh_root, wanted) == before
    # Root: installs the whole list.
    r = _chroot(fresh_root, SETUP)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert _installed(fresh_root, wanted) == set(wanted)
    # What the next steps of the main command need is now there.
    r = _chroot(fresh_root, "python3 -m venv /tmp/v && /tmp/v/bin/python -c 'import venv' && "
                "command -v buildah debootstrap qemu-riscv64-static riscv64-linux-gnu-strip")
    assert r.returncode == 0, r.stderr
    # A second run is a no-op: no apt, no output.
    r = _chroot(fresh_root, SETUP)
    assert r.returncode == 0 and r.stderr == "", r.stderr
