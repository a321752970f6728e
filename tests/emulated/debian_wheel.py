"""A real torch wheel the toolkit makes without a two-hour build: Debian's binaries, repaired.

Debian's riscv64/arm64 python3-torch 2.6.0 (the target torch rootfs) is packed as a
``torch-2.6.0+<arch>-cp313-cp313-linux_<arch>.whl`` the way a cross build leaves it (the Python
package, ``torch/lib/`` with the six torch libraries, torch's ``Requires-Dist``) and handed to
``rvtorch.wheel.repair_wheel`` with the rootfs as sysroot: the same repair + check as the build,
bundling OpenBLAS (Debian's ``libblas.so.3`` alternative), protobuf, gloo, sleef and the rest into
``torch.libs/``. It stands in for our own wheel in the emulated tier (docs/validation.md).

The result is cached per content (rootfs packages, the repair code, this file) in the cache's
``test-wheels/``: made once per machine (about 5 minutes on 2 cores), reused by later runs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from rvtorch import wheel as wheel_mod
from rvtorch.emulate import resolve_in_rootfs
from rvtorch.paths import cache_dir
from rvtorch.rootfs import ensure_rootfs, read_manifest
from rvtorch.targets import matrix
from tests.wheelkit import make_wheel

# torch 2.6.0's setup.py install_requires, as a wheel built from its source records them.
REQUIRES = ("filelock", "typing-extensions>=4.10.0", 'setuptools; python_version >= "3.12"',
            'sympy==1.13.1; python_version >= "3.9"', "networkx", "jinja2", "fsspec")
PACKAGES = ("torch", "torchgen", "functorch")
# Not runtime: torch/lib is added below; headers, CMake files and test data are libtorch-dev's.
SKIP = ("torch/lib/", "torch/include/", "torch/share/", "torch/test/")


def _soname(lib: Path) -> str:
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    with lib.open("rb") as fh:
        for sec in ELFFile(fh).iter_sections():
            if isinstance(sec, DynamicSection):
                for tag in sec.iter_tags("DT_SONAME"):
                    return str(tag.soname)
    raise AssertionError(f"{lib} has no DT_SONAME")


def _key(arch: str, rootfs: Path) -> str:
    h = hashlib.sha256()
    h.update(json.dumps((read_manifest(rootfs) or {}).get("packages"), sort_keys=True).encode())
    for mod in (wheel_mod.__file__, Path(wheel_mod.__file__).with_name("wheelcheck.py"),
                __file__):
        h.update(Path(str(mod)).read_bytes())
    return f"{arch}-{h.hexdigest()[:12]}"


def debian_torch_wheel(arch: str) -> Path:
    """The repaired wheel (made once per content key, then reused)."""
    t = matrix().target(arch)
    rootfs = ensure_rootfs(arch, with_torch=True)
    store = cache_dir() / "test-wheels" / f"debian-{_key(arch, rootfs)}"
    done = sorted(store.glob("torch-*.whl"))
    if done:
        return done[0]
    store.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{store.name}-", dir=store.parent))
    try:
        site = rootfs / "usr/lib/python3/dist-packages"
        files: dict[str, str | Path] = {}
        for pkg in PACKAGES:
            for f in sorted((site / pkg).rglob("*")):
                rel = f.relative_to(site).as_posix()
                if "__pycache__" in rel or rel.startswith(SKIP):
                    continue
                real = resolve_in_rootfs(rootfs, "/" + f.relative_to(rootfs).as_posix())
                # Links into packages this rootfs lacks (libtorch-dev's headers) dangle: skip.
                if real.is_file():
                    files[rel] = real
        # torch/lib: Debian links them to /usr/lib/<triple>; the wheel carries the files, under
        # the names the loader asks for (soname) and torch/__init__ opens (libtorch_global_deps.so).
        libdir = work / "lib"
        libdir.mkdir()
        for link in sorted((site / "torch/lib").iterdir()):
            real = resolve_in_rootfs(rootfs, "/" + link.relative_to(rootfs).as_posix())
            # The soname (libtorch_cpu.so.2.6) is what the loader asks for; torch/__init__
            # opens lib/libtorch_global_deps.so by that name.
            name = link.name if "global_deps" in link.name else _soname(real)
            dest = libdir / name
            shutil.copy2(real, dest)
            # Each finds its siblings in torch/lib (as upstream's wheels do), so repair does not
            # bundle a second copy from the sysroot.
            subprocess.run([wheel_mod.patchelf_tool(), "--set-rpath", "$ORIGIN", str(dest)],
                           check=True)
            files[f"torch/lib/{name}"] = dest
        version = f"2.6.0+{arch}"
        meta = (f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n"
                "Requires-Python: >=3.9.0\n" + "".join(f"Requires-Dist: {r}\n" for r in REQUIRES))
        files[f"torch-{version}.dist-info/METADATA"] = meta
        raw = make_wheel(work / "raw", files, version=version,
                         tag=f"cp313-cp313-linux_{wheel_mod.wheel_arch_suffix(t)}")
        repaired = wheel_mod.repair_wheel(
            raw, t, work / "out", lib_path=[rootfs / "usr/lib" / t.triple, rootfs / "usr/lib"],
            sysroot=rootfs)
        shutil.rmtree(work / "raw")
        shutil.rmtree(libdir)
        (work / "out" / repaired.name).rename(work / repaired.name)
        shutil.rmtree(work / "out")
        work.rename(store)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return store / repaired.name
