#!/usr/bin/env python3
"""Cross vs emulated-native compile time of a fixed sample of PyTorch 2.6.0 translation units.

Why: the project cross-compiles instead of building inside QEMU. This measures how much that buys
on this machine, with the same compiler release both ways (Debian trixie's GCC 14.2):

* cross: ``<triple>-g++-14`` from trixie's ``g++-14-<triple>`` package in a trixie amd64 root
  (the same package the toolchain image carries), run natively through ``chroot``;
* emulated: the target's own ``g++-14`` in a trixie target root, run through ``chroot`` with a
  binfmt_misc entry for ``qemu-<arch>-static`` (registered under its own name, removed at exit).

Both sides get the same source tree, include directories and flags (``-O2 -std=gnu++17 -fPIC``
plus the target's ``-march``/``-mabi``); each TU is timed from the host as one compiler process,
cross and emulated interleaved TU by TU so the load of other jobs hits both sides alike.

Prints per-TU times and the ratio, writes ``benchmarks/results/cross_vs_emulated.json``.
Needs root (debootstrap, chroot, binfmt_misc). Run it in the background, niced:
``nice -n 10 .venv/bin/python benchmarks/bench_cross_vs_emulated.py > bench.log 2>&1 &``
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from rvtorch.aptsource import debian_mirror
from rvtorch.errors import RvtorchError, SourceError, UsageError
from rvtorch.paths import cache_dir, repo_root
from rvtorch.proc import run, which
from rvtorch.targets import Target, matrix

TARBALL = "pytorch_2.6.0+dfsg.orig.tar.xz"
TARBALL_SHA256 = "099a9601bc40d67656e75735c44abedb0fbe92d08817852ab7472eebb7e6ddff"
TARBALL_POOL = "pool/main/p/pytorch"
TOP = "pytorch-v2.6.0"

# The fixed sample: c10 core/util and ATen files that need no torchgen output, only the two
# configure-time headers written by `write_generated_headers`. Never change it silently: results
# are only comparable for the same list.
SAMPLE = (
    "c10/core/TensorImpl.cpp",
    "c10/core/DispatchKeySet.cpp",
    "c10/core/DispatchKey.cpp",
    "c10/core/ScalarType.cpp",
    "c10/core/Scalar.cpp",
    "c10/core/SymInt.cpp",
    "c10/core/Storage.cpp",
    "c10/core/TensorOptions.cpp",
    "c10/util/Logging.cpp",
    "c10/util/Exception.cpp",
    "c10/util/typeid.cpp",
    "c10/util/Half.cpp",
    "c10/util/SmallVector.cpp",
    "c10/util/ThreadLocalDebugInfo.cpp",
    "aten/src/ATen/Context.cpp",
    "aten/src/ATen/Dispatch.cpp",
    "aten/src/ATen/EmptyTensor.cpp",
    "aten/src/ATen/MemoryOverlap.cpp",
    "aten/src/ATen/ParallelCommon.cpp",
    "aten/src/ATen/TensorGeometry.cpp",
    "aten/src/ATen/TensorMeta.cpp",
    "aten/src/ATen/SavedTensorHooks.cpp",
    "aten/src/ATen/core/Dimname.cpp",
    "aten/src/ATen/core/NamedTensor.cpp",
)

# Paths as both compilers see them: the tree is bind-copied to the same place in both roots.
GUEST_SRC = "/bench/src"
# Object files go to the guest's /dev/null: only the compile time matters, not the output.
BASE_FLAGS = ("-O2", "-std=gnu++17", "-fPIC", "-DNDEBUG", "-fopenmp")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_tarball(mirror: str, work: Path) -> Path:
    """The dfsg orig tarball, verified: reuse the source cache's copy when its hash matches."""
    for cached in (cache_dir() / "sources" / "debian" / TARBALL, work / TARBALL):
        if cached.is_file() and sha256(cached) == TARBALL_SHA256:
            return cached
    dest = work / TARBALL
    part = dest.with_suffix(".part")
    url = f"{mirror}/{TARBALL_POOL}/{TARBALL}"
    print(f"fetching {url}", file=sys.stderr)
    with urllib.request.urlopen(url, timeout=120) as resp, part.open("wb") as out:
        shutil.copyfileobj(resp, out)
    got = sha256(part)
    if got != TARBALL_SHA256:
        part.unlink()
        raise SourceError(f"{TARBALL}: sha256 {got} != pinned {TARBALL_SHA256}; file deleted")
    part.rename(dest)
    return dest


def write_generated_headers(gen: Path) -> None:
    """The two configure-time headers the sample needs, fixed so every run compiles the same."""
    (gen / "c10" / "macros").mkdir(parents=True, exist_ok=True)
    (gen / "c10" / "macros" / "cmake_macros.h").write_text(
        "#ifndef C10_MACROS_CMAKE_MACROS_H_\n#define C10_MACROS_CMAKE_MACROS_H_\n"
        "#define C10_BUILD_SHARED_LIBS\n#endif\n"
    )
    (gen / "ATen").mkdir(parents=True, exist_ok=True)


def prepare_tree(tarball: Path, work: Path) -> Path:
    """Unpack c10/ and aten/src/ATen/ once (atomic: temp dir + rename)."""
    tree = work / "src"
    if (tree / ".complete").is_file():
        return tree
    tmp = work / "src.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    wanted = (f"{TOP}/c10/", f"{TOP}/aten/src/ATen/")
    with tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(wanted)]
        for m in members:
            m.name = m.name[len(TOP) + 1 :]
        tar.extractall(tmp, members=members, filter="data")
    config_in = (tmp / "aten/src/ATen/Config.h.in").read_text()
    enabled = {"AT_BUILD_WITH_BLAS", "AT_BUILD_WITH_LAPACK", "AT_PARALLEL_OPENMP",
               "AT_BLAS_USE_CBLAS_DOT"}
    config = re.sub(r"@(\w+)@", lambda m: "1" if m.group(1) in enabled else "0", config_in)
    gen = tmp / "gen"
    write_generated_headers(gen)
    (gen / "ATen" / "Config.h").write_text(config)
    (tmp / ".complete").write_text("")
    shutil.rmtree(tree, ignore_errors=True)
    tmp.rename(tree)
    return tree


def ensure_root(root: Path, *, arch: str, packages: list[str], mirror: str, suite: str) -> Path:
    """A minbase trixie root with ``packages`` (debootstrap; reused when its stamp matches)."""
    stamp_text = json.dumps({"arch": arch, "suite": suite, "packages": sorted(packages)})
    stamp = root / ".rvtorch-bench-root"
    if stamp.is_file() and stamp.read_text() == stamp_text:
        return root
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    run([which("debootstrap", hint="apt-get install debootstrap"), f"--arch={arch}",
         "--variant=minbase", "--include=" + ",".join(packages), suite, tmp, mirror],
        what=f"debootstrap {arch} root")
    (tmp / stamp.name).write_text(stamp_text)
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


@contextlib.contextmanager
def binfmt(target: Target) -> Iterator[None]:
    """Register qemu-<arch>-static for the target's ELF magic under a private name, with the F
    flag (interpreter opened now, so chroots need no copy of it); unregister on exit."""
    misc = Path("/proc/sys/fs/binfmt_misc")
    if not (misc / "register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(misc)], what="mount binfmt_misc")
    qemu = which(target.qemu_binary, hint="apt-get install qemu-user-static")
    conf = Path("/usr/lib/binfmt.d") / (target.qemu_binary.removesuffix("-static") + ".conf")
    if not conf.is_file():
        raise UsageError(f"{conf} not found", hint="apt-get install qemu-user-static")
    fields = conf.read_text().strip().split(":")
    magic, mask = fields[4], fields[5]
    name = f"rvtorch-bench-{target.arch}"
    entry = misc / name
    if entry.exists():
        entry.write_text("-1")
    (misc / "register").write_text(f":{name}:M::{magic}:{mask}:{qemu}:F")
    try:
        yield
    finally:
        if entry.exists():
            entry.write_text("-1")


def stage_tree(tree: Path, root: Path) -> None:
    dest = root / GUEST_SRC.lstrip("/")
    if (dest / ".complete").is_file():
        return
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(tree, dest, symlinks=True)


def compile_cmd(compiler: str, tu: str, target: Target) -> list[str]:
    return [
        compiler, *BASE_FLAGS, *target.cflags.split(),
        f"-I{GUEST_SRC}", f"-I{GUEST_SRC}/gen", f"-I{GUEST_SRC}/aten/src",
        "-c", f"{GUEST_SRC}/{tu}", "-o", "/dev/null",
    ]


def time_compile(root: Path, cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one compiler run, CPU summed over all its processes.

    CPU time is the primary measure: on a shared 2-core machine the wall time of either side
    mostly measures the other jobs (load 15 was seen while this ran), while the CPU time a
    compile needs barely depends on them.
    """
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([which("chroot"), str(root), *cmd], env=env, capture_output=True,
                          text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RvtorchError(f"compile failed in {root.name}: {' '.join(cmd[-3:])}: "
                           + (proc.stderr.strip().splitlines() or ["?"])[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def version_of(root: Path, cmd: list[str]) -> str:
    out = subprocess.run([which("chroot"), str(root), *cmd], capture_output=True, text=True,
                         check=True, env={"PATH": "/usr/bin:/bin"})
    return out.stdout.splitlines()[0].strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="riscv64", help="a targets.toml arch (default riscv64)")
    ap.add_argument("--debian-mirror", help="Debian mirror URL (default: from apt sources)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N TUs (for a dry check)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per TU and side (min is kept)")
    ap.add_argument("--out", type=Path,
                    default=repo_root() / "benchmarks" / "results" / "cross_vs_emulated.json")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise UsageError("needs root (debootstrap, chroot, binfmt_misc)")
    m = matrix()
    target = m.target(args.arch)
    gcc = m.project.gcc
    suite = m.project.suite
    mirror = debian_mirror(args.debian_mirror, suite=m.project.suite)
    work = cache_dir() / "bench" / "cross-vs-emulated"
    work.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    tree = prepare_tree(fetch_tarball(mirror, work), work)
    cross_root = ensure_root(work / "root-cross", arch="amd64", suite=suite, mirror=mirror,
                             packages=[f"g++-{gcc}-{target.triple}"])
    cross_cxx = f"{target.triple}-g++-{gcc}"
    sample = list(SAMPLE[: args.limit] if args.limit else SAMPLE)
    results: list[dict[str, object]] = []
    with binfmt(target):
        native_root = ensure_root(work / f"root-{target.arch}", arch=target.debian_arch,
                                  suite=suite, mirror=mirror, packages=[f"g++-{gcc}"])
        setup_s = time.perf_counter() - t0
        for root in (cross_root, native_root):
            stage_tree(tree, root)
        cross_version = version_of(cross_root, [cross_cxx, "--version"])
        native_version = version_of(native_root, [f"g++-{gcc}", "--version"])
        qemu_version = subprocess.run([which(target.qemu_binary), "--version"],
                                      capture_output=True, text=True, check=True
                                      ).stdout.splitlines()[0]
        print(f"cross:    {cross_version}\nemulated: {native_version} under {qemu_version}")
        print(f"{'translation unit':<36} {'cross cpu':>9} {'emul cpu':>9} {'ratio':>6}"
              f" {'cross wall':>10} {'emul wall':>10}")
        for tu in sample:
            runs = []
            for _ in range(args.repeat):
                runs.append((time_compile(cross_root, compile_cmd(cross_cxx, tu, target)),
                             time_compile(native_root, compile_cmd(f"g++-{gcc}", tu, target))))
            cross_wall = min(r[0][0] for r in runs)
            cross_cpu = min(r[0][1] for r in runs)
            emul_wall = min(r[1][0] for r in runs)
            emul_cpu = min(r[1][1] for r in runs)
            results.append({"tu": tu, "cross_cpu_s": round(cross_cpu, 3),
                            "emulated_cpu_s": round(emul_cpu, 3),
                            "ratio_cpu": round(emul_cpu / cross_cpu, 2),
                            "cross_wall_s": round(cross_wall, 3),
                            "emulated_wall_s": round(emul_wall, 3),
                            "loadavg_1min": round(os.getloadavg()[0], 1)})
            print(f"{tu:<36} {cross_cpu:9.2f} {emul_cpu:9.2f} {emul_cpu / cross_cpu:6.1f}"
                  f" {cross_wall:10.2f} {emul_wall:10.2f}", flush=True)

    def total(key: str) -> float:
        return sum(float(r[key]) for r in results)  # type: ignore[arg-type]

    cross_cpu_total, emul_cpu_total = total("cross_cpu_s"), total("emulated_cpu_s")
    ratio = emul_cpu_total / cross_cpu_total
    ratios = [float(r["ratio_cpu"]) for r in results]  # type: ignore[arg-type]
    summary = {
        "benchmark": "cross_vs_emulated",
        "arch": target.arch,
        "torch_source": {"file": TARBALL, "sha256": TARBALL_SHA256},
        "flags": [*BASE_FLAGS, *target.cflags.split()],
        "cross_compiler": cross_version,
        "emulated_compiler": native_version,
        "emulator": qemu_version,
        "host": {"machine": platform.machine(), "cores": os.cpu_count(),
                 "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "tu_count": len(results),
        "repeat": args.repeat,
        "measure": "CPU seconds (user+sys) of the compiler and its children, min over repeats",
        "cross_cpu_total_s": round(cross_cpu_total, 2),
        "emulated_cpu_total_s": round(emul_cpu_total, 2),
        "ratio_total": round(ratio, 2),
        "ratio_median": round(statistics.median(ratios), 2),
        "ratio_min": min(ratios),
        "ratio_wall_total": round(total("emulated_wall_s") / total("cross_wall_s"), 2),
        "goal_ratio": 8.0,
        "goal_met": ratio >= 8.0,
        "setup_s": round(setup_s, 1),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "per_tu": results,
    }
    print(f"\n{len(results)} TUs: cross {cross_cpu_total:.1f} s, emulated {emul_cpu_total:.1f} s"
          " of CPU, "
          f"ratio {summary['ratio_total']}x (median per TU {summary['ratio_median']}x, "
          f"goal >= 8x: {'met' if summary['goal_met'] else 'NOT met'})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    tmp.rename(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RvtorchError as exc:
        print(f"bench_cross_vs_emulated: error: {exc.one_line()}", file=sys.stderr)
        sys.exit(exc.exit_code)
