#!/usr/bin/env python3
"""What the RVV capability costs: build time of the second copy of the kernels, and wheel size.

    python benchmarks/bench_aten_rvv_cost.py                        # the recorded run
    python benchmarks/bench_aten_rvv_cost.py --limit 2 --out trial.json   # a trial

In one run:

1. **Build time.** Every file of ``aten/src/ATen/native/cpu`` (and the two other files ATen
   compiles per CPU capability, ``UfuncCPUKernel_add.cpp`` and ``QuantizedOpKernels.cpp``) has
   a ``<name>.cpp.DEFAULT.cpp.o`` copy (``-march=rv64gc``, what a build without the capability
   compiles too) in an ``--aten-rvv on`` tree; the files of ``rvtorch.build.RVV_KERNELS``
   (``USE_RVV_KERNELS``) also have a ``<name>.cpp.RVV.cpp.o`` copy (``-march=rv64gcv`` at
   ``-O2``, the extra cost); the others' DEFAULT code fills the RVV dispatch slot. Every copy in
   the tree is compiled once. The exact commands come from
   the tree's ``build/compile_commands.json`` (ninja's ``-MD`` dependency flags added back, its
   ccache launcher dropped and ``CCACHE_DISABLE=1``: every object is really compiled). They run
   in the toolchain image that built the tree, with the tree mounted read-only and the objects
   written to a scratch directory in the cache, ``--jobs`` compiles at a time at nice 10. Per
   object: CPU time of the compiler (user+sys from ``wait4``; robust to a loaded host, unlike
   wall time, which is recorded too) and the ELF sizes of the object (executable sections,
   ``.rodata*``, ``.eh_frame``). ``compile.DEFAULT`` sums over every measured DEFAULT copy
   (all kernel files), ``compile.RVV`` over the RVV copies only, so ``rvv_over_default`` is the
   extra compile time and code as a share of the DEFAULT build of the kernels;
   ``rvv_over_default_same_kernels`` compares the two copies of only the files that have both
   (what the RVV flags cost per file). ``kernels_in_tree`` counts the kernel files (DEFAULT
   copies), ``rvv_kernels_in_tree`` those with an RVV copy, ``kernels_without_rvv`` names the
   others; the flag difference is taken from the first measured file with both copies. The sums
   sit beside the compile time of the from-clean build, taken from ``full_build.json`` (an
   earlier record of ``bench_full_build.py``, not measured here).
2. **Wheel size.** The published wheels of ``bench_full_build.py`` without
   (``dist-riscv64``) and with (``dist-riscv64-aten-rvv-on``) the capability: size, the
   compressed and uncompressed size of ``torch/lib/libtorch_cpu.so``, its ELF sections (read with
   pyelftools), the ISA string of its ``.riscv.attributes`` and the ``features`` of the
   ``<wheel>.build-info.json`` beside it (and its ``recompress`` record, if the build
   recompressed the wheel). A build now recompresses the repaired wheel with advzip
   (``rvtorch.wheel.recompress_wheel``); an off wheel published before that is not, so a copy of
   it is recompressed the same way in the scratch directory (the published wheel is never
   touched) and recorded as ``wheels.off_recompressed``: ``wheels.growth`` gives the growth
   against both, the ``*_vs_off_recompressed`` keys being the capability's own share.
   ``wheels.budget`` holds the size budget (the off wheel as published) and whether the on
   wheel is within it (compared at the 0.1 MB the budget is stated in; ``headroom_bytes`` is
   exact). No on wheel or no advzip: exit 2 before anything is compiled.

Writes benchmarks/results/aten_rvv_cost.json (no machine paths) and prints a table.
``--limit N`` (the first N kernels) and ``--only REGEX`` make a trial run; a trial needs
``--out`` (it never replaces the full record) and may skip the wheels (``--no-wheels``).
An interrupted run resumes: the objects measured so far are kept in the scratch directory
(``$RVTORCH_CACHE/aten-rvv-cost``) until a record is written.

Exit codes: 0 written, 2 usage/environment (no wheel, no tree, no image), 4 a compile failed,
130 interrupted.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

# ---------------------------------------------------------------------------------------------
# The worker: runs inside the toolchain container (a copy of this file in the scratch directory),
# so this part uses the standard library only and comes before the imports of rvtorch.

WORKER_NICE = 10


def _compile_one(job: dict[str, Any], scratch: Path) -> dict[str, Any]:
    log = scratch / "logs" / (job["object"] + ".log")
    t0 = time.monotonic()
    with log.open("w") as fh:
        proc = subprocess.Popen(job["argv"], cwd=job["cwd"], stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        # wait4, not Popen.wait: its rusage covers the compiler driver and the cc1plus and as
        # it waited for, i.e. the CPU time of this one object even with other compiles running.
        _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    rec = {
        "object": job["object"], "kernel": job["kernel"], "capability": job["capability"],
        "argv_sha": job["argv_sha"], "rc": proc.returncode,
        "user_s": round(ru.ru_utime, 3), "sys_s": round(ru.ru_stime, 3),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 3), "wall_s": round(wall, 3),
        "maxrss_mib": round(ru.ru_maxrss / 1024, 1),
    }
    if proc.returncode != 0:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()]
        rec["error"] = (errors or lines or ["no output"])[0][:300]
    return rec


def _worker_main(argv: list[str]) -> int:
    """``_worker SCRATCH --jobs N``: compile SCRATCH/jobs.json, append to SCRATCH/results.jsonl."""
    ap = argparse.ArgumentParser(prog="bench_aten_rvv_cost.py _worker")
    ap.add_argument("scratch")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    scratch = Path(args.scratch)
    os.nice(max(0, WORKER_NICE - os.nice(0)))  # nice 10, also when started at nice 10
    jobs = json.loads((scratch / "jobs.json").read_text())
    (scratch / "obj").mkdir(exist_ok=True)
    (scratch / "logs").mkdir(exist_ok=True)
    results = scratch / "results.jsonl"
    done = set()
    if results.exists():
        for line in results.read_text().splitlines():
            r = json.loads(line)
            if r["rc"] == 0 and (scratch / "obj" / r["object"]).exists():
                done.add((r["object"], r["argv_sha"]))
    todo = [j for j in jobs if (j["object"], j["argv_sha"]) not in done]
    compiler = subprocess.run([jobs[0]["argv"][0], "--version"], capture_output=True, text=True,
                              check=False).stdout.splitlines()[:1]
    src = jobs[0]["cwd"]
    (scratch / "worker.json").write_text(json.dumps({
        "compiler": compiler[0] if compiler else "unknown",
        # the tree must be read-only in here: a compile that wrote into it would be a bug
        "tree_read_only": not os.access(src, os.W_OK),
        "nice": os.nice(0),
        "ccache_disable": os.environ.get("CCACHE_DISABLE", ""),
    }) + "\n")
    print(f"worker: {len(todo)} to compile, {len(jobs) - len(todo)} measured before, "
          f"{args.jobs} at a time", flush=True)
    lock = threading.Lock()
    failed = 0
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool, results.open("a") as out:
        futures = [pool.submit(_compile_one, j, scratch) for j in todo]
        for i, fut in enumerate(concurrent.futures.as_completed(futures), 1):
            rec = fut.result()
            with lock:
                out.write(json.dumps(rec) + "\n")
                out.flush()
            failed += rec["rc"] != 0
            print(f"[{i}/{len(todo)}] {rec['object']}: rc {rec['rc']}, cpu {rec['cpu_s']:.1f} s, "
                  f"wall {rec['wall_s']:.1f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__" and sys.argv[1:2] == ["_worker"]:
    sys.exit(_worker_main(sys.argv[2:]))

# ---------------------------------------------------------------------------------------------
# The host side.

import datetime as dt  # noqa: E402
import hashlib  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import zipfile  # noqa: E402
from collections.abc import Iterable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from elftools.common.exceptions import ELFError  # noqa: E402
from elftools.elf.elffile import ELFFile  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from rvtorch.errors import BuildError, RvtorchError, UsageError  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "aten_rvv_cost.json"
FULL_BUILD = ROOT / "benchmarks" / "results" / "full_build.json"
ARCH = "riscv64"
CTR_SRC = "/rvtorch/src"
CTR_SCRATCH = "/rvtorch/scratch"
LIB = "torch/lib/libtorch_cpu.so"
CAPS = ("DEFAULT", "RVV")
# A file ATen compiles once per CPU capability: every file of aten/src/ATen/native/cpu, and two
# more (the generated UfuncCPUKernel_*.cpp, native/quantized/cpu/kernels/QuantizedOpKernels.cpp).
_KERNEL = re.compile(r"/([^/]+)\.cpp\.(DEFAULT|RVV)\.cpp\.o$")
_LAUNCHERS = {"ccache", "sccache"}
# The sections the wheel comparison names (absent ones are left out).
SECTIONS = (".text", ".rodata", ".eh_frame", ".eh_frame_hdr", ".gcc_except_table", ".rela.dyn",
            ".data.rel.ro", ".dynsym", ".dynstr")
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4


def section_key(name: str) -> str:
    """A section's key in the results: ``.rela.dyn`` -> ``rela_dyn`` (doc_numbers reads dotted
    key paths, so a key holds no dot)."""
    return name.lstrip(".").replace(".", "_")


@dataclass(frozen=True)
class Job:
    object: str  # the object's file name, e.g. SoftMaxKernel.cpp.RVV.cpp.o
    kernel: str
    capability: str
    argv: tuple[str, ...]
    cwd: str

    def to_json(self) -> dict[str, Any]:
        sha = hashlib.sha256("\0".join(self.argv).encode()).hexdigest()[:16]
        return {"object": self.object, "kernel": self.kernel, "capability": self.capability,
                "argv": list(self.argv), "cwd": self.cwd, "argv_sha": sha}


def _iso(ts: float | None = None) -> str:
    return dt.datetime.fromtimestamp(ts or time.time(), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _compile_argv(command: str, output: str, scratch: str) -> tuple[str, ...]:
    """Ninja's command for one object, from its compile_commands.json entry: the launcher
    dropped, ``-MD -MT -MF`` added back as ninja's rule has them, the object and its
    dependency file in ``scratch/obj``."""
    argv = shlex.split(command)
    while argv and Path(argv[0]).name in _LAUNCHERS:
        argv.pop(0)
    if "-o" not in argv:
        raise UsageError(f"no -o in the compile command of {output}")
    i = argv.index("-o")
    obj = f"{scratch}/obj/{Path(output).name}"
    return (*argv[:i], "-MD", "-MT", obj, "-MF", obj + ".d", "-o", obj, *argv[i + 2:])


def kernel_jobs(entries: Iterable[dict[str, Any]], *, scratch: str, only: str | None = None,
                limit: int | None = None) -> list[Job]:
    """The DEFAULT and (where the file has one) RVV compiles of every per-capability kernel
    file, kernel by kernel (the two copies of one kernel next to each other, so both meet the
    same load)."""
    found: dict[str, dict[str, Job]] = {}
    for e in entries:
        out = e.get("output") or ""
        m = _KERNEL.search("/" + out)
        if not m:
            continue
        kernel, cap = m.group(1), m.group(2)
        found.setdefault(kernel, {})[cap] = Job(
            Path(out).name, kernel, cap, _compile_argv(e["command"], out, scratch), e["directory"])
    if found and not any("RVV" in caps for caps in found.values()):
        raise UsageError("the tree has no RVV copy of any kernel file",
                         hint="measure an --aten-rvv on tree")
    kernels = sorted(k for k in found if not only or re.search(only, k))
    if limit is not None:
        kernels = kernels[:limit]
    if not kernels:
        raise UsageError(f"no per-capability kernel file matches {only or 'anything'} in the "
                         "compile commands")
    if not any("RVV" in found[k] for k in kernels):
        # refused before compiling: the record compares the two copies
        raise UsageError(f"none of the {len(kernels)} selected kernel files has an RVV copy",
                         hint="select one of rvtorch.build.RVV_KERNELS with --only")
    return [found[k][c] for k in kernels for c in CAPS if c in found[k]]


def kernel_copies(entries: Iterable[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Every per-capability kernel file of the compile commands: its entry per capability."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for e in entries:
        m = _KERNEL.search("/" + (e.get("output") or ""))
        if m:
            found.setdefault(m.group(1), {})[m.group(2)] = e
    return found


def kernel_census(entries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """How many kernel files the tree has (DEFAULT copies), how many of them have an RVV copy
    (only ``rvtorch.build.RVV_KERNELS`` since USE_RVV_KERNELS), and which have none."""
    found = kernel_copies(entries)
    return {"kernels_in_tree": sum("DEFAULT" in c for c in found.values()),
            "rvv_kernels_in_tree": sum("RVV" in c for c in found.values()),
            "kernels_without_rvv": sorted(k for k, c in found.items()
                                          if "DEFAULT" in c and "RVV" not in c)}


def flag_pair(entries: Iterable[dict[str, Any]],
              kernels: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The DEFAULT and RVV compile entries of the first of ``kernels`` that has both copies
    (else of the first such file in the tree): the pair whose flags are compared."""
    found = kernel_copies(entries)
    both = [k for k in kernels if {"DEFAULT", "RVV"} <= set(found.get(k, {}))]
    both = both or sorted(k for k, c in found.items() if {"DEFAULT", "RVV"} <= set(c))
    if not both:
        raise UsageError("no kernel file has both a DEFAULT and an RVV copy",
                         hint="measure an --aten-rvv on tree")
    return found[both[0]]["DEFAULT"], found[both[0]]["RVV"]


def kernel_dirs(entries: Iterable[dict[str, Any]], kernels: set[str]) -> dict[str, int]:
    """How many of ``kernels`` come from each source directory (relative to the source tree)."""
    out: dict[str, int] = {}
    for e in entries:
        m = _KERNEL.search("/" + (e.get("output") or ""))
        if m and m.group(2) == "DEFAULT" and m.group(1) in kernels:
            d = str(Path(e["file"]).parent)
            d = re.sub(r"^.*?/(aten/src/)", r"\1", d)
            out[d] = out.get(d, 0) + 1
    return dict(sorted(out.items()))


def flag_difference(a: str, b: str) -> tuple[list[str], list[str]]:
    """The flags of command ``b`` that ``a`` lacks, and those of ``a`` that ``b`` lacks (paths of
    the source and the object are no flags)."""
    fa = {t for t in shlex.split(a) if t.startswith("-")}
    fb = {t for t in shlex.split(b) if t.startswith("-")}
    return sorted(fb - fa), sorted(fa - fb)


def worker_argv(scratch: str, *, jobs: int) -> list[str]:
    return ["python3", f"{scratch}/{Path(__file__).name}", "_worker", scratch, "--jobs", str(jobs)]


# ---------------------------------------------------------------------------------------------
# ELF


def arch_string(attributes: bytes) -> str | None:
    """The ISA string (``Tag_RISCV_arch``) of a ``.riscv.attributes`` section."""
    m = re.search(rb"rv(?:32|64)[a-z][a-z0-9_]*", attributes)
    return m.group(0).decode() if m else None


def has_vector(arch: str | None) -> bool:
    """Whether an ISA string names the V extension (``..._v1p0_...``)."""
    return bool(arch) and any(re.fullmatch(r"v\d+p\d+", t) for t in (arch or "").split("_")[1:])


def elf_sizes(path: Path) -> dict[str, Any]:
    """Section sizes of an ELF file: the named ``SECTIONS`` (by ``section_key``), the executable
    ones together (``text``),
    ``.rodata*``, ``.eh_frame*``, everything loaded (``alloc``), and the ISA string."""
    try:
        with path.open("rb") as fh:
            elf = ELFFile(fh)
            named: dict[str, int] = {}
            text = rodata = eh = alloc = 0
            arch = None
            for s in elf.iter_sections():
                size, flags = int(s["sh_size"]), int(s["sh_flags"])
                if s.name in SECTIONS:
                    key = section_key(s.name)
                    named[key] = named.get(key, 0) + size
                if s.name == ".riscv.attributes":
                    arch = arch_string(s.data())
                if not flags & SHF_ALLOC or s["sh_type"] == "SHT_NOBITS":
                    continue
                alloc += size
                if flags & SHF_EXECINSTR:
                    text += size
                elif s.name.startswith(".rodata"):
                    rodata += size
                elif s.name.startswith(".eh_frame"):
                    eh += size
    except (ELFError, OSError) as exc:
        raise BuildError(f"cannot read the ELF file {path.name}: {exc}") from exc
    return {"sections": named, "text": text, "rodata": rodata, "eh_frame": eh, "alloc": alloc,
            "arch": arch}


# ---------------------------------------------------------------------------------------------
# aggregation


def aggregate(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Sums per capability (DEFAULT over every measured DEFAULT copy, RVV over the RVV copies,
    which only some kernel files have), RVV over DEFAULT, the same ratio over only the kernels
    measured with both copies, and the kernels by the cost of their RVV copy."""
    for r in records:
        if r["rc"] != 0:
            raise BuildError(f"{r['object']} did not compile (exit {r['rc']}): "
                             f"{r.get('error', 'see its log')}")
    out: dict[str, Any] = {}
    for cap in CAPS:
        rs = [r for r in records if r["capability"] == cap]
        if not rs:
            raise BuildError(f"no {cap} object measured")
        out[cap] = {
            "objects": len(rs),
            "cpu_s": round(sum(r["cpu_s"] for r in rs), 2),
            "user_s": round(sum(r["user_s"] for r in rs), 2),
            "sys_s": round(sum(r["sys_s"] for r in rs), 2),
            "wall_s": round(sum(r["wall_s"] for r in rs), 2),
            "max_maxrss_mib": max(r["maxrss_mib"] for r in rs),
            "text_bytes": sum(r["elf"]["text"] for r in rs),
            "rodata_bytes": sum(r["elf"]["rodata"] for r in rs),
            "eh_frame_bytes": sum(r["elf"]["eh_frame"] for r in rs),
            "alloc_bytes": sum(r["elf"]["alloc"] for r in rs),
        }
    d, v = out["DEFAULT"], out["RVV"]
    out["rvv_over_default"] = {
        k: round(v[f] / d[f], 3) if d[f] else None
        for k, f in (("cpu", "cpu_s"), ("wall", "wall_s"), ("text", "text_bytes"),
                     ("alloc", "alloc_bytes"))
    }
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for r in records:
        by.setdefault(r["kernel"], {})[r["capability"]] = r
    pairs = [caps for caps in by.values() if "DEFAULT" in caps and "RVV" in caps]
    same: dict[str, Any] = {}
    for cap in CAPS:
        same[f"{cap.lower()}_cpu_s"] = round(sum(c[cap]["cpu_s"] for c in pairs), 2)
        same[f"{cap.lower()}_text_bytes"] = sum(c[cap]["elf"]["text"] for c in pairs)
    out["rvv_over_default_same_kernels"] = {
        "kernels": len(pairs),
        **same,
        "cpu": round(same["rvv_cpu_s"] / same["default_cpu_s"], 3)
        if same["default_cpu_s"] else None,
        "text": round(same["rvv_text_bytes"] / same["default_text_bytes"], 3)
        if same["default_text_bytes"] else None,
    }
    kernels = [
        {"kernel": k,
         "default_cpu_s": caps["DEFAULT"]["cpu_s"] if "DEFAULT" in caps else None,
         "rvv_cpu_s": caps["RVV"]["cpu_s"] if "RVV" in caps else None,
         "default_text": caps["DEFAULT"]["elf"]["text"] if "DEFAULT" in caps else None,
         "rvv_text": caps["RVV"]["elf"]["text"] if "RVV" in caps else None}
        for k, caps in by.items()
    ]
    out["kernels"] = sorted(kernels, key=lambda p: -(p["rvv_cpu_s"] or 0.0))
    return out


def from_clean_record(data: dict[str, Any], arch: str) -> dict[str, Any] | None:
    """The latest from-clean build of ``arch`` in full_build.json (empty ccache, a finished
    compile step): the build time a capability adds to."""
    entries = [v for v in [*data.get("history", []), *data.values()] if isinstance(v, dict)]
    ok = [e for e in entries
          if e.get("arch") == arch and (e.get("start_state") or {}).get("from_clean")
          and "compile" in (e.get("step_durations_s") or {})]
    if not ok:
        return None
    e = max(ok, key=lambda x: x.get("started", ""))
    return {"file": FULL_BUILD.name, "started": e.get("started"),
            "compile_wall_s": e["step_durations_s"]["compile"], "jobs": e.get("jobs"),
            "ninja_targets": (e.get("ninja") or {}).get("total")}


# ---------------------------------------------------------------------------------------------
# wheels


def find_wheel(dist: Path, label: str) -> Path:
    """The newest torch wheel in ``dist``, which must have its ``.build-info.json`` beside it."""
    wheels = sorted(dist.glob("torch-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise UsageError(f"no {label} wheel in {dist}",
                         hint="its full build must publish one first: bench_full_build.py run"
                              + (" --aten-rvv on" if label == "on" else " --aten-rvv off"))
    info = Path(f"{wheels[-1]}.build-info.json")
    if not info.exists():
        raise UsageError(f"the {label} wheel {wheels[-1].name} has no build-info beside it",
                         hint="measure a wheel published by rvtorch build")
    return wheels[-1]


def build_info(wheel: Path) -> dict[str, Any]:
    return dict(json.loads(Path(f"{wheel}.build-info.json").read_text()))


def wheel_stats(wheel: Path, *, scratch: Path) -> dict[str, Any]:
    info = build_info(wheel)
    features = list(info.get("features") or (info.get("plan") or {}).get("features") or [])
    with zipfile.ZipFile(wheel) as z:
        zi = z.getinfo(LIB)
        fd, tmp = tempfile.mkstemp(prefix="libtorch_cpu-", dir=scratch)
        try:
            with os.fdopen(fd, "wb") as out, z.open(zi) as src:
                shutil.copyfileobj(src, out, 1 << 20)
            elf = elf_sizes(Path(tmp))
        finally:
            os.unlink(tmp)
    validation = info.get("validation") or {}
    return {
        "name": wheel.name,
        "sha256": info.get("sha256"),
        "size_bytes": wheel.stat().st_size,
        "size_mb": round(wheel.stat().st_size / 1e6, 1),
        "features": features,
        "tree": Path((info.get("plan") or {}).get("tree") or "").name or None,
        "capability_rvv": "aten-rvv" in features,
        "validation": validation.get("status") if isinstance(validation, dict) else None,
        # what rvtorch.wheel.recompress_wheel reported when the build recompressed the wheel
        # (None: published before the builds recompressed)
        "recompress": info.get("recompress"),
        "libtorch_cpu": {
            "compressed_bytes": zi.compress_size,
            "uncompressed_bytes": zi.file_size,
            **elf,
            "arch_has_v": has_vector(elf["arch"]),
        },
    }


def recompressed_stats(wheel: Path, *, scratch: Path) -> dict[str, Any]:
    """``wheel`` recompressed the way a build now does (``rvtorch.wheel.recompress_wheel``), on
    a copy in ``scratch`` (the published wheel is never touched): its size and that of
    libtorch_cpu in it. The copy is removed."""
    from rvtorch import wheel as wheel_mod

    work = scratch / "recompress"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    copy = work / wheel.name
    try:
        shutil.copyfile(wheel, copy)
        rec = wheel_mod.recompress_wheel(copy)
        size = copy.stat().st_size
        with zipfile.ZipFile(copy) as z:
            lib = z.getinfo(LIB)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"name": wheel.name, "size_bytes": size, "size_mb": round(size / 1e6, 1),
            "libtorch_cpu": {"compressed_bytes": lib.compress_size,
                             "uncompressed_bytes": lib.file_size},
            "tool": rec["tool"], "seconds": rec["seconds"],
            "bytes_before": rec["bytes_before"], "bytes_after": rec["bytes_after"]}


def wheel_budget(off: dict[str, Any], on: dict[str, Any]) -> dict[str, Any]:
    """The size budget of the on wheel: the off wheel as published (its size in MB, to the 0.1
    MB the budget is stated in)."""
    return {"size_mb": off["size_mb"], "on_size_mb": on["size_mb"],
            "on_within_budget": on["size_mb"] <= off["size_mb"],
            "headroom_bytes": off["size_bytes"] - on["size_bytes"]}


def wheel_growth(off: dict[str, Any], on: dict[str, Any], off_whl: Path, on_whl: Path,
                 top: int = 8, off_recompressed: dict[str, Any] | None = None) -> dict[str, Any]:
    """On minus off (as published); with ``off_recompressed`` also on minus the off wheel
    recompressed like the on one (the capability's growth without the recompression's gain)."""
    lo, ln = off["libtorch_cpu"], on["libtorch_cpu"]
    with zipfile.ZipFile(off_whl) as a, zipfile.ZipFile(on_whl) as b:
        sa = {i.filename: i.compress_size for i in a.infolist()}
        sb = {i.filename: i.compress_size for i in b.infolist()}
    files = sorted(((n, sb.get(n, 0) - sa.get(n, 0)) for n in set(sa) | set(sb)),
                   key=lambda x: -abs(x[1]))
    vs_rec: dict[str, Any] = {}
    if off_recompressed is not None:
        d = on["size_bytes"] - off_recompressed["size_bytes"]
        vs_rec = {"size_bytes_vs_off_recompressed": d,
                  "size_mb_vs_off_recompressed": round(d / 1e6, 2),
                  "libtorch_cpu_compressed_bytes_vs_off_recompressed":
                      ln["compressed_bytes"]
                      - off_recompressed["libtorch_cpu"]["compressed_bytes"]}
    return {
        **vs_rec,
        "size_bytes": on["size_bytes"] - off["size_bytes"],
        "size_mb": round((on["size_bytes"] - off["size_bytes"]) / 1e6, 2),
        "size_ratio": round(on["size_bytes"] / off["size_bytes"], 4),
        "on_within_off_size": on["size_mb"] <= off["size_mb"],
        "libtorch_cpu_compressed_bytes": ln["compressed_bytes"] - lo["compressed_bytes"],
        "libtorch_cpu_uncompressed_bytes": ln["uncompressed_bytes"] - lo["uncompressed_bytes"],
        "sections": {s: ln["sections"].get(s, 0) - lo["sections"].get(s, 0)
                     for s in sorted(set(lo["sections"]) | set(ln["sections"]))},
        "text_bytes": ln["text"] - lo["text"],
        "files_compressed_bytes": [{"file": n, "bytes": d} for n, d in files[:top] if d],
    }


# ---------------------------------------------------------------------------------------------
# the run


class LoadSampler(threading.Thread):
    """The host's 1-minute load average every ``period`` seconds while the compiles run."""

    def __init__(self, period: float = 15.0) -> None:
        super().__init__(daemon=True)
        self.period, self.samples, self.stop = period, [os.getloadavg()[0]], threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.period):
            self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict[str, Any]:
        return {"load1_min": round(min(self.samples), 2),
                "load1_mean": round(statistics.fmean(self.samples), 2),
                "load1_max": round(max(self.samples), 2), "samples": len(self.samples)}


def _tree_record(tree: Path) -> dict[str, Any]:
    prepared = tree / ".rvtorch-prepared"
    info = tree / "build" / "rvtorch-build-info.json"
    feats = (json.loads(info.read_text()).get("plan") or {}).get("features") if info.exists() \
        else None
    return {"name": tree.name,
            "prepared_sha256": hashlib.sha256(prepared.read_bytes()).hexdigest()
            if prepared.exists() else None,
            "features": feats}


# What the kernel objects are compiled from: sources, headers, the generated wrappers and headers.
KERNEL_INPUT_DIRS = ("aten/src", "c10", "build/aten/src/ATen")


def tree_differences(a: Path, b: Path, dirs: Sequence[str] = KERNEL_INPUT_DIRS) -> list[str]:
    """The files under ``dirs`` that differ between two trees (or exist in one only): when the
    kernels were measured in another tree than the on wheel's, none of them may be an input of
    a kernel object."""
    import filecmp

    out = []
    for d in dirs:
        files = [{p.relative_to(t) for p in (t / d).rglob("*") if p.is_file()} for t in (a, b)]
        for rel in sorted(files[0] ^ files[1]):
            out.append(str(rel))
        for rel in sorted(files[0] & files[1]):
            if not filecmp.cmp(a / rel, b / rel, shallow=False):
                out.append(str(rel))
    return sorted(out)


def _commit() -> dict[str, Any]:
    def git(*a: str) -> str:
        r = subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True,
                           check=False)
        return r.stdout.strip()

    rel = str(Path(__file__).resolve().relative_to(ROOT))
    return {"sha": git("rev-parse", "HEAD"), "script_modified": bool(git("status", "--porcelain",
                                                                          "--", rel))}


def _default_tree(features: tuple[str, ...]) -> Path:
    from rvtorch import build

    return Path(build.make_plan(ARCH, provider="debian", features=features).tree)


def _pick_tree(explicit: str | None, wheel: Path | None, features: tuple[str, ...]) -> Path:
    if explicit:
        tree = Path(explicit)
    elif wheel is not None and (build_info(wheel).get("plan") or {}).get("tree"):
        tree = Path(build_info(wheel)["plan"]["tree"])
    else:
        tree = _default_tree(features)
    if not (tree / "build" / "compile_commands.json").exists():
        raise UsageError(f"{tree} has no configured build (build/compile_commands.json)",
                         hint="configure or build it first, or name one with --tree")
    return tree


def _image(explicit: str | None, tree: Path, wheel: Path | None) -> str:
    """The image that built the on wheel (else the one that last built the tree)."""
    if explicit:
        return explicit
    if wheel is not None and build_info(wheel).get("image"):
        return str(build_info(wheel)["image"])
    info = tree / "build" / "rvtorch-build-info.json"
    if info.exists() and json.loads(info.read_text()).get("image"):
        return str(json.loads(info.read_text())["image"])
    raise UsageError(f"no build image recorded for {tree.name}", hint="name one with --image")


def _scratch_dir(tree: Path, image_id: str, jobs: int, trial: bool) -> Path:
    from rvtorch.paths import cache_dir

    key = f"{'trial-' if trial else ''}{tree.name}-{image_id[:12]}-j{jobs}"
    d = cache_dir() / "aten-rvv-cost" / key
    d.mkdir(parents=True, exist_ok=True)
    return d


def _lock(scratch: Path) -> IO[str]:
    """One run per scratch directory: two would compile the same objects into it."""
    from rvtorch.paths import try_lock

    return try_lock(scratch / ".lock", f"another run is measuring in {scratch}",
                    hint="wait for it; a rerun then resumes from its objects")


def marked_pids(marker: str, proc_dir: Path = Path("/proc")) -> list[int]:
    """The processes whose environment holds ``marker`` (``NAME=value``): the worker and the
    compiles of this run, which the container engine starts as host processes."""
    want = marker.encode()
    pids = []
    for d in proc_dir.iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if want in env:
            pids.append(int(d.name))
    return sorted(pids)


def _run_worker(ctr: Any, n_jobs: int, marker: str) -> int:
    """The worker in the container. An interrupted run must stop its compiles: the engine
    kills the worker, but cc1plus (a child of the compiler driver) would go on; every process
    of the run carries ``marker`` in its environment, and only those are killed, by pid."""
    import signal

    argv = ctr.engine.exec_argv(ctr.handle, worker_argv(CTR_SCRATCH, jobs=n_jobs),
                                {**ctr.env, **dict([marker.split("=", 1)])}, ctr.workdir)
    print("+ " + shlex.join(argv), file=sys.stderr, flush=True)
    proc = subprocess.Popen(argv, stdout=sys.stderr)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        for pid in marked_pids(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


def compile_kernels(jobs: list[Job], *, tree: Path, image: str, engine_name: str | None,
                    scratch: Path, n_jobs: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run the compiles in the image (tree read-only); the records of ``jobs``, with ELF sizes."""
    from rvtorch.engine import detect_engine

    payload = [j.to_json() for j in jobs]
    (scratch / "jobs.json").write_text(json.dumps(payload, indent=1) + "\n")
    shutil.copy(Path(__file__), scratch / Path(__file__).name)
    want = {(p["object"], p["argv_sha"]) for p in payload}
    results = scratch / "results.jsonl"

    def measured() -> dict[str, dict[str, Any]]:
        latest: dict[str, dict[str, Any]] = {}
        for line in results.read_text().splitlines() if results.exists() else []:
            r = json.loads(line)
            if (r["object"], r["argv_sha"]) in want:
                latest[r["object"]] = r
        return latest

    before = sum(r["rc"] == 0 for r in measured().values())
    engine = detect_engine(engine_name)
    sampler = LoadSampler()
    sampler.start()
    t0 = time.monotonic()
    # ":ro" rides on the container path: every engine's -v takes host:ctr[:options].
    mounts = {str(tree): f"{CTR_SRC}:ro", str(scratch): CTR_SCRATCH}
    with engine.container(image, mounts=mounts, env={"CCACHE_DISABLE": "1"},
                          workdir=CTR_SCRATCH) as ctr:
        marker = f"RVTORCH_ATEN_RVV_COST_RUN={os.getpid()}-{time.time_ns()}"
        rc = _run_worker(ctr, n_jobs, marker)
    pool_wall = time.monotonic() - t0
    sampler.stop.set()
    sampler.join()
    latest = measured()
    missing = [p["object"] for p in payload if p["object"] not in latest]
    if missing:
        raise BuildError(f"{len(missing)} objects were not compiled (first: {missing[0]}; "
                         f"the container's worker exited {rc})",
                         hint="rerun to resume")
    records = [latest[p["object"]] for p in payload]
    for r in records:
        if r["rc"] == 0:
            sizes = elf_sizes(scratch / "obj" / r["object"])
            r["elf"] = {k: sizes[k] for k in ("text", "rodata", "eh_frame", "alloc", "arch")}
    worker = json.loads((scratch / "worker.json").read_text())
    # objects measured by an interrupted earlier run of the same jobs (their CPU time stands;
    # pool_wall_s covers only this run's compiles)
    return records, {"pool_wall_s": round(pool_wall, 1), "load": sampler.summary(),
                     "worker": worker, "resumed_objects": before}


def run(args: argparse.Namespace) -> dict[str, Any]:
    trial = args.limit is not None or args.only is not None
    if (trial or args.no_wheels) and not args.out:
        raise UsageError("a trial run (--limit, --only, --no-wheels) needs --out",
                         hint="it must never replace the full record")
    off_whl = on_whl = None
    if not args.no_wheels:
        off_whl = find_wheel(Path(args.off_dist), "off")
        on_whl = find_wheel(Path(args.on_dist), "on")
        if "aten-rvv" not in ((build_info(on_whl).get("plan") or {}).get("features") or []):
            raise UsageError(f"the on wheel in {args.on_dist} was built without aten-rvv")
        if "aten-rvv" in ((build_info(off_whl).get("plan") or {}).get("features") or []):
            raise UsageError(f"the off wheel in {args.off_dist} was built with aten-rvv",
                             hint="name a wheel of --aten-rvv off with --off-dist")
        from rvtorch import wheel as wheel_mod

        # the off wheel is recompressed after the compiles: refuse now, not 25 minutes later
        if shutil.which(wheel_mod.RECOMPRESS_TOOL) is None:
            raise UsageError(f"{wheel_mod.RECOMPRESS_TOOL} not found: the off wheel is measured "
                             "recompressed too", hint=f"apt-get install "
                                                      f"{wheel_mod.RECOMPRESS_PACKAGE}")
    started = time.time()
    load_start = [round(x, 2) for x in os.getloadavg()]
    tree = _pick_tree(args.tree, on_whl, ("aten-rvv",))
    off_tree = _pick_tree(args.off_tree, off_whl, ())
    image = _image(args.image, tree, on_whl)
    from rvtorch.engine import detect_engine

    image_id = detect_engine(args.engine).image_id(image)
    if not image_id:
        raise UsageError(f"image {image} does not exist", hint="rvtorch image ensure")
    entries = json.loads((tree / "build" / "compile_commands.json").read_text())
    jobs = kernel_jobs(entries, scratch=CTR_SCRATCH, only=args.only, limit=args.limit)
    off_entries = {e["output"]: e for e in
                   json.loads((off_tree / "build" / "compile_commands.json").read_text())}
    first_default, first_rvv = flag_pair(entries, [j.kernel for j in jobs])
    census = kernel_census(entries)
    off_same = off_entries.get(first_default["output"])
    scratch = _scratch_dir(tree, image_id, args.jobs, trial)
    lock = _lock(scratch)
    print(f"bench_aten_rvv_cost: {len(jobs)} compiles of {tree.name} in {image}, "
          f"{args.jobs} at a time; scratch {scratch}", file=sys.stderr)
    records, meta = compile_kernels(jobs, tree=tree, image=image, engine_name=args.engine,
                                    scratch=scratch, n_jobs=args.jobs)
    agg = aggregate(records)
    rvv_added, rvv_removed = flag_difference(first_default["command"], first_rvv["command"])
    compile_rec: dict[str, Any] = {
        "objects": len(records),
        "kernels_measured": len({r["kernel"] for r in records}),
        "rvv_kernels_measured": len({r["kernel"] for r in records if r["capability"] == "RVV"}),
        **census,
        "kernel_dirs": kernel_dirs(entries, {r["kernel"] for r in records}),
        "jobs": args.jobs,
        "nice": meta["worker"]["nice"],
        "compiler": meta["worker"]["compiler"],
        "tree_read_only": meta["worker"]["tree_read_only"],
        "ccache": "disabled (no launcher, CCACHE_DISABLE=1)",
        "pool_wall_s": meta["pool_wall_s"],
        "resumed_objects": meta["resumed_objects"],
        **{k: agg[k] for k in ("DEFAULT", "RVV", "rvv_over_default",
                               "rvv_over_default_same_kernels")},
        "flag_pair_kernel": first_default["output"].rsplit("/", 1)[-1].split(".cpp.")[0],
        "arch": {cap: next(r["elf"]["arch"] for r in records if r["capability"] == cap)
                 for cap in CAPS},
        "rvv_flags_vs_default": {"added": rvv_added, "removed": rvv_removed},
        "kernels": agg["kernels"],
    }
    if off_same is not None:
        added, removed = flag_difference(off_same["command"], first_default["command"])
        compile_rec["default_flags_vs_off_tree"] = {"added": added, "removed": removed}
    full = json.loads(FULL_BUILD.read_text()) if FULL_BUILD.exists() else {}
    clean = from_clean_record(full, ARCH)
    result: dict[str, Any] = {
        "what": "the cost of the RVV capability: the per-capability kernel files (native/cpu and "
                "two more) compiled for DEFAULT and for RVV (CPU time and object sizes, measured "
                "here), and the published wheels without and with it",
        "trial": trial,
        "started": _iso(started),
        "recorded": _iso(),
        "commit": _commit(),
        "image": {"ref": image, "id": image_id},
        "trees": {"on": _tree_record(tree), "off": _tree_record(off_tree)},
        "compile": compile_rec,
        "machine": {"cores": os.cpu_count(),
                    "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                     / 2**30),
                    "loadavg_start": load_start,
                    "loadavg_end": [round(x, 2) for x in os.getloadavg()],
                    **meta["load"]},
    }
    if clean is not None:
        rvv_cpu = agg["RVV"]["cpu_s"]
        result["from_clean_build"] = {
            **clean,
            "note": "from the earlier record in full_build.json (bench_full_build.py), not "
                    "measured by this run; wall time of the whole compile step at its jobs",
        }
        result["estimate"] = {
            "note": "estimate: the RVV copies' CPU time spread over the from-clean build's jobs, "
                    "as a share of its compile wall time",
            "rvv_wall_s_at_build_jobs": round(rvv_cpu / (clean["jobs"] or 1), 1),
            "share_of_from_clean_compile": round(rvv_cpu / (clean["jobs"] or 1)
                                                 / clean["compile_wall_s"], 3),
        }
    wheel_tree = (build_info(on_whl).get("plan") or {}).get("tree") if on_whl else None
    if wheel_tree and Path(wheel_tree).name != tree.name:
        # Measured in another tree (--tree): say which inputs differ from the wheel's tree.
        diffs = tree_differences(tree, Path(wheel_tree)) if Path(wheel_tree).is_dir() else None
        compile_rec["wheel_tree"] = {
            "name": Path(wheel_tree).name,
            "differing_files": diffs[:40] if diffs is not None else "tree not found",
            "differing_count": len(diffs) if diffs is not None else None,
            "dirs_compared": list(KERNEL_INPUT_DIRS),
        }
    if off_whl is not None and on_whl is not None:
        off = wheel_stats(off_whl, scratch=scratch)
        on = wheel_stats(on_whl, scratch=scratch)
        off_rec = recompressed_stats(off_whl, scratch=scratch)
        result["wheels"] = {"off": off, "on": on, "off_recompressed": off_rec,
                            "budget": wheel_budget(off, on),
                            "growth": wheel_growth(off, on, off_whl, on_whl,
                                                   off_recompressed=off_rec)}
    if not args.keep_scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    lock.close()  # after the scratch is gone (an error exit releases it with the process)
    return result


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def table(res: dict[str, Any]) -> str:
    c = res["compile"]
    d, v, q = c["DEFAULT"], c["RVV"], c["rvv_over_default"]
    rows = [
        ("", "DEFAULT", "RVV", "RVV/DEFAULT"),
        ("kernel objects", str(d["objects"]), str(v["objects"]), ""),
        ("compile CPU s (user+sys)", f"{d['cpu_s']:.0f}", f"{v['cpu_s']:.0f}", f"{q['cpu']:.2f}"),
        ("compile wall s (summed)", f"{d['wall_s']:.0f}", f"{v['wall_s']:.0f}",
         f"{q['wall']:.2f}"),
        ("object text bytes", str(d["text_bytes"]), str(v["text_bytes"]), f"{q['text']:.2f}"),
    ]
    same = c.get("rvv_over_default_same_kernels")
    if same:
        rows.append((f"same {same['kernels']} kernels CPU s", f"{same['default_cpu_s']:.0f}",
                     f"{same['rvv_cpu_s']:.0f}", f"{same['cpu']:.2f}" if same["cpu"] else "-"))
    lines = [f"{a:<30} {b:>12} {e:>12} {f:>12}" for a, b, e, f in rows]
    if "from_clean_build" in res:
        fc, est = res["from_clean_build"], res["estimate"]
        lines.append(f"from-clean build compile wall (full_build.json, {fc['started']}): "
                     f"{fc['compile_wall_s']} s at -j{fc['jobs']}; RVV copies ~"
                     f"{est['rvv_wall_s_at_build_jobs']:.0f} s of it at -j{fc['jobs']} "
                     f"({100 * est['share_of_from_clean_compile']:.1f} %, estimate)")
    if "wheels" in res:
        w = res["wheels"]
        lines.append("")
        lines.append(f"{'wheel':<30} {'off':>12} {'on':>12} {'on-off':>12}")
        for label, key in (("wheel bytes", "size_bytes"),):
            lines.append(f"{label:<30} {w['off'][key]:>12} {w['on'][key]:>12} "
                         f"{w['on'][key] - w['off'][key]:>12}")
        if "off_recompressed" in w:
            r = w["off_recompressed"]
            lines.append(f"{'  off recompressed (' + r['tool'].split()[0] + ')':<30} "
                         f"{r['size_bytes']:>12} {w['on']['size_bytes']:>12} "
                         f"{w['growth']['size_bytes_vs_off_recompressed']:>12}")
        if "budget" in w:
            b = w["budget"]
            lines.append(f"{'budget (off as published) MB':<30} {b['size_mb']:>12} "
                         f"{b['on_size_mb']:>12} "
                         f"{'within' if b['on_within_budget'] else 'over':>12}")
        for label, key in (("libtorch_cpu compressed", "compressed_bytes"),
                           ("libtorch_cpu uncompressed", "uncompressed_bytes"),
                           ("libtorch_cpu exec sections", "text")):
            a, b = w["off"]["libtorch_cpu"][key], w["on"]["libtorch_cpu"][key]
            lines.append(f"{label:<30} {a:>12} {b:>12} {b - a:>12}")
        for s in SECTIONS[:7]:
            a = w["off"]["libtorch_cpu"]["sections"].get(section_key(s), 0)
            b = w["on"]["libtorch_cpu"]["sections"].get(section_key(s), 0)
            lines.append(f"{'  ' + s:<30} {a:>12} {b:>12} {b - a:>12}")
        lines.append(f"{'features':<30} {','.join(w['off']['features']) or '-':>12} "
                     f"{','.join(w['on']['features']) or '-':>12}")
        has_v = [str(w[k]["libtorch_cpu"]["arch_has_v"]) for k in ("off", "on")]
        lines.append(f"{'libtorch_cpu ISA has V':<30} {has_v[0]:>12} {has_v[1]:>12}")
    m = res["machine"]
    lines.append(f"host load (1 min) during the compiles: {m['load1_min']}..{m['load1_max']} "
                 f"(mean {m['load1_mean']}), {c['jobs']} compiles at a time")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from rvtorch.paths import cache_dir

    bench = cache_dir(create=False) / "bench"
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2, help="compiles at a time (default 2)")
    ap.add_argument("--limit", type=int, default=None, help="trial: the first N kernels only")
    ap.add_argument("--only", default=None, help="trial: kernels whose name matches REGEX")
    ap.add_argument("--out", default=None, help="write here instead of the results file")
    ap.add_argument("--results", default=str(RESULTS), help=argparse.SUPPRESS)
    ap.add_argument("--no-wheels", action="store_true", help="trial: skip the wheel comparison")
    # bench_full_build.py run --aten-rvv off publishes to dist-<arch>-aten-rvv-off; before the
    # capability became the default, a plain run published the wheel without it to dist-<arch>.
    off_default = next((d for d in (bench / f"dist-{ARCH}-aten-rvv-off", bench / f"dist-{ARCH}")
                        if any(d.glob("torch-*.whl"))), bench / f"dist-{ARCH}")
    ap.add_argument("--off-dist", default=str(off_default))
    ap.add_argument("--on-dist", default=str(bench / f"dist-{ARCH}-aten-rvv-on"))
    ap.add_argument("--tree", default=None, help="the --aten-rvv on tree (default: the on "
                                                  "wheel's, else the current recipe's)")
    ap.add_argument("--off-tree", default=None, help="the tree without the capability")
    ap.add_argument("--image", default=None, help="default: the image that built the tree")
    ap.add_argument("--engine", default=None)
    ap.add_argument("--keep-scratch", action="store_true")
    args = ap.parse_args(argv)
    if args.jobs < 1 or (args.limit is not None and args.limit < 1):
        ap.error("--jobs and --limit must be at least 1")
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM stops a run like Ctrl-C (exit 130); the measured objects stay for a rerun.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        res = run(args)
    except RvtorchError as exc:
        print(f"rvtorch: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("rvtorch: interrupted (a rerun resumes the compiles)", file=sys.stderr)
        return 130
    write_atomic(Path(args.out or args.results), res)
    print(table(res))
    print(f"wrote {args.out or args.results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
