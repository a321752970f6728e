"""A repaired wheel loads on the target: its extension finds the bundled libraries under QEMU.

The wheel is unpacked into a guest directory of the shared base rootfs (python3 only, no
OpenBLAS) and its extension loaded by the target's Python; ``dlopen(RTLD_NOLOAD)`` by soname
then tells which copies the guest's loader mapped: the hashed ones from torch.libs/, never the
system's. (/proc/self/maps cannot say: qemu-user builds it from the host's /proc, which a chroot
without /proc mounted does not have.)
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest

from rvtorch import emulate
from rvtorch.rootfs import ensure_rootfs
from rvtorch.targets import Target, matrix
from rvtorch.wheel import expected_soabi, repair_wheel, wheel_arch_suffix
from tests.integration.debs import zstd_root
from tests.wheelkit import make_wheel

pytestmark = [
    pytest.mark.emulated,
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="rootfs creation needs root"),
]

LOAD = """
import ctypes, importlib.machinery, importlib.util, os, sys
name, path, libs = sys.argv[1:4]
loader = importlib.machinery.ExtensionFileLoader(name, path)
mod = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
loader.exec_module(mod)
print("RESULT", *{probe})
def loaded(soname):
    try:
        ctypes.CDLL(soname, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        return True
    except OSError:
        return False
print("LOADED", *sorted(f for f in os.listdir(libs) if loaded(f)))
print("SYSTEM", *sorted(s for s in sys.argv[4:] if loaded(s)))
"""


def need_strip(t: Target) -> None:
    if not shutil.which(f"{t.triple}-strip"):
        pytest.skip(f"apt-get install binutils-{t.triple}")


def run_in_guest(t: Target, wheel: Path, module: str, member: str, probe: str,
                 system_sonames: list[str]) -> dict[str, str]:
    """Load ``member`` of the unpacked wheel in the guest; RESULT is ``probe`` evaluated, LOADED
    the torch.libs files the guest loader mapped, SYSTEM which of ``system_sonames`` it mapped."""
    rootfs = ensure_rootfs(t.arch)
    with emulate.guest_tmpdir(rootfs, t.arch) as (host_dir, guest_dir):
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(host_dir)
        (host_dir / "load.py").write_text(LOAD.format(probe=probe))
        proc = emulate.run_guest(
            t.arch, ["python3", f"{guest_dir}/load.py", module, f"{guest_dir}/{member}",
                     f"{guest_dir}/torch.libs", *system_sonames], rootfs=rootfs, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        lines[key] = value
    return lines


@pytest.mark.parametrize("arch", matrix().arches)
def test_bundled_library_is_the_one_loaded(arch: str, tmp_path: Path) -> None:
    t = matrix().target(arch)
    need_strip(t)
    root = zstd_root(t.debian_arch, tmp_path / "root")
    ext = next((root / "usr/lib/python3/dist-packages").glob("zstd.cpython-313-*.so"))
    member = f"torch/_C.{expected_soabi(t)}.so"
    wheel = make_wheel(tmp_path / "in", {"torch/__init__.py": "", member: ext},
                       version=f"2.6.0+{arch}", tag=f"cp313-cp313-linux_{wheel_arch_suffix(t)}")
    repaired = repair_wheel(wheel, t, tmp_path / "dist", lib_path=[root / "usr/lib" / t.triple])
    # The Debian module's init function is PyInit_zstd, so it loads under that name.
    out = run_in_guest(t, repaired, "zstd", member,
                       "[mod.decompress(mod.compress(b'rvtorch' * 64)) == b'rvtorch' * 64]",
                       ["libzstd.so.1"])
    assert out["RESULT"] == "True"
    assert out["LOADED"].startswith("libzstd-"), out
    assert out["SYSTEM"] == "", out


@pytest.mark.parametrize("arch", matrix().arches)
def test_cross_built_torch_c_imports_with_bundled_openblas(arch: str, tmp_path: Path) -> None:
    from tests.integration.cross_ext import build_crossenv_wheel

    t = matrix().target(arch)
    need_strip(t)
    repaired = repair_wheel(build_crossenv_wheel(t, tmp_path / "build"), t, tmp_path / "dist")
    out = run_in_guest(t, repaired, "torch._C", f"torch/_C.{expected_soabi(t)}.so",
                       "[mod.dot(), mod.blas_core()]", ["libopenblas.so.0"])
    dot, core = out["RESULT"].split()
    assert dot == "32.0" and core, out
    assert "libopenblas" in out["LOADED"], out
    assert out["SYSTEM"] == "", out
