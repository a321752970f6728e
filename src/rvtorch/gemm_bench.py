"""GEMM benchmark: our OpenBLAS against Debian's reference BLAS and Debian's OpenBLAS.

Under QEMU (default), in one run: for every CPU model of the target (targets.toml) and every
library, ``gemm_target.py`` runs in the target rootfs with a clean guest environment
(``rvtorch.emulate``), one thread, sgemm and dgemm for each size. The host wrote the inputs
with numpy and checks every product the guest wrote back against numpy (float64 reference).
The kernel set each OpenBLAS reports must be the one targets.toml names for the CPU model.
The RVV instructions in each library (``rvv_count.py`` with the cross objdump in the toolchain
image) show that vector code is there at all. Under QEMU, GFLOPS compare libraries within the
run; RVV speed-ups are only real on a board: ``--native`` runs the same target script there.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UsageError, ValidationError
from .paths import cache_dir, repo_root
from .targets import Target, target

SIZES = (64, 128, 256, 512)
TYPES = ("s", "d")
# Relative max error against the float64 product (sgemm accumulates in float32).
TOLERANCE = {"s": 1e-4, "d": 1e-11}
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True, kw_only=True)
class Library:
    """A BLAS to measure: ``host_path`` is where the host can read it (for objdump)."""

    name: str
    guest_path: str
    host_path: Path
    openblas: bool
    note: str


def debian_openblas(t: Target, root: Path) -> Library:
    """Debian's OpenBLAS (pthread flavour) as installed in the torch rootfs."""
    rel = f"/usr/lib/{t.triple}/openblas-pthread/libopenblas.so.0"
    host = root / rel.lstrip("/")
    if not host.exists():
        raise UsageError(f"{host} missing: the rootfs needs libopenblas0-pthread",
                         hint="the torch rootfs (`rvtorch rootfs create --torch`) has it")
    return Library(name="debian-openblas", guest_path=rel, host_path=host.resolve(),
                   openblas=True, note="Debian libopenblas0-pthread")


def reference_blas(t: Target) -> tuple[Path, dict[str, str]]:
    """Debian's reference BLAS (libblas3) for the target, cached under cache_dir()/bench.

    The torch rootfs points libblas.so.3 at OpenBLAS and has no libblas3, so the package is
    fetched with apt in the toolchain image (apt checks it against the signed archive index)
    and unpacked with dpkg-deb; its name and sha256 go into the results.
    """
    import hashlib
    import tempfile

    from .engine import detect_engine
    from .image import ensure_image

    dest = cache_dir() / "bench" / t.arch / "libblas3"
    lib, meta_path = dest / "libblas.so.3", dest / "package.json"
    if lib.is_file() and meta_path.is_file():
        return lib, dict(json.loads(meta_path.read_text()))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".libblas3-"))
    try:
        engine = detect_engine()
        image = ensure_image(t.arch, engine=engine)
        with engine.container(image, mounts={str(tmp): "/out"}) as ctr:
            ctr.call(["apt-get", "update", "-qq"])
            ctr.call(["sh", "-c", f"cd /out && apt-get download -qq libblas3:{t.debian_arch} "
                      "&& dpkg-deb -x libblas3_*.deb root"])
        deb = next(tmp.glob("libblas3_*.deb"))
        real = (tmp / "root" / "usr" / "lib" / t.triple / "blas" / "libblas.so.3").resolve()
        shutil.copy2(real, tmp / "libblas.so.3")
        meta = {"deb": deb.name, "sha256": hashlib.sha256(deb.read_bytes()).hexdigest(),
                "library": real.name}
        (tmp / "package.json").write_text(json.dumps(meta, indent=1) + "\n")
        shutil.rmtree(tmp / "root")
        deb.unlink()
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return lib, meta


def our_openblas(arch: str, lib: Path | None = None) -> Path:
    from .deps import deps_dir

    path = lib or deps_dir(arch) / "openblas" / "lib" / "libopenblas.so.0"
    if not path.exists():
        raise UsageError(f"our OpenBLAS {path} not found",
                         hint=f"run `rvtorch deps build --arch {arch}` (or pass --ours LIB)")
    return path.resolve()


def write_inputs(directory: Path, sizes: Sequence[int]) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(20261126)
    arrays: dict[str, Any] = {}
    for n in sizes:
        for p, dtype in (("s", np.float32), ("d", np.float64)):
            for m in ("a", "b"):
                x = (rng.random((n, n)) - 0.5).astype(dtype)
                x.tofile(directory / f"{p}_{m}_{n}.bin")
                arrays[f"{p}_{m}_{n}"] = x
    return arrays


def check_outputs(directory: Path, arrays: Mapping[str, Any], sizes: Sequence[int]
                  ) -> dict[str, float]:
    """Max relative error of each product against numpy; raises past the tolerance."""
    import numpy as np

    errors = {}
    for p, dtype in (("s", np.float32), ("d", np.float64)):
        for n in sizes:
            got = np.fromfile(directory / f"{p}_c_{n}.bin", dtype=dtype).reshape(n, n)
            ref = arrays[f"{p}_a_{n}"].astype(np.float64) @ arrays[f"{p}_b_{n}"].astype(
                np.float64)
            err = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
            errors[f"{p}gemm_{n}"] = err
            (directory / f"{p}_c_{n}.bin").unlink()
    return errors


def _parse(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    raise ValidationError("gemm_target.py printed no JSON result")


def _verbose_core(stderr: str) -> str | None:
    for line in stderr.splitlines():
        if line.strip().startswith("Core:"):
            return line.split(":", 1)[1].strip()
    return None


def count_vector_instructions(t: Target, libs: Mapping[str, Path]) -> dict[str, Any]:
    """Run rvv_count.py with the cross objdump inside the toolchain image."""
    from .engine import detect_engine
    from .image import ensure_image

    engine = detect_engine()
    image = ensure_image(t.arch, engine=engine)
    mounts = {str(p.parent): str(p.parent) for p in libs.values()}
    mounts[str(HERE)] = "/opt/rvtorch/bench"
    with engine.container(image, mounts=mounts) as ctr:
        proc = ctr.call(["python3", "/opt/rvtorch/bench/rvv_count.py", "--objdump",
                         f"{t.triple}-objdump", *map(str, libs.values())], capture=True)
    raw = json.loads(proc.stdout)
    return {name: raw[str(path)] for name, path in libs.items()}


def run_emulated(arch: str = "riscv64", *, sizes: Sequence[int] = SIZES, min_time: float = 0.3,
                 ours: Path | None = None, count_rvv: bool = True) -> dict[str, Any]:
    from .emulate import guest_tmpdir, run_guest
    from .rootfs import ensure_rootfs

    t = target(arch)
    rootfs = ensure_rootfs(arch, with_torch=True)
    ours_host = our_openblas(arch, ours)
    ref_host, ref_pkg = reference_blas(t)
    libs = [debian_openblas(t, rootfs)]
    from .rootfs import read_manifest

    pkgs = (read_manifest(rootfs) or {}).get("packages", {})
    version = pkgs.get(f"libopenblas0-pthread:{t.debian_arch}")
    if version:
        libs[0] = Library(**{**libs[0].__dict__, "note": f"{libs[0].note} {version}"})
    report: dict[str, Any] = {
        "meta": _meta(arch, sizes, min_time, mode="qemu"),
        "libraries": {},
        "models": {},
    }
    with guest_tmpdir(rootfs, arch) as (host_dir, guest_dir):
        shutil.copy2(HERE / "gemm_target.py", host_dir / "gemm_target.py")
        shutil.copy2(ours_host, host_dir / "libopenblas.so.0")
        shutil.copy2(ref_host, host_dir / "libblas.so.3")
        libs.insert(0, Library(name="ours", guest_path=f"{guest_dir}/libopenblas.so.0",
                               host_path=ours_host, openblas=True,
                               note=f"rvtorch deps build ({ours_host.name})"))
        libs.insert(1, Library(name="debian-reference", guest_path=f"{guest_dir}/libblas.so.3",
                               host_path=ref_host, openblas=False,
                               note=f"Debian {ref_pkg['deb']} sha256 {ref_pkg['sha256']}"))
        arrays = write_inputs(host_dir, sizes)
        for lib in libs:
            report["libraries"][lib.name] = {"path": lib.guest_path, "note": lib.note}
        for model in t.cpu:
            row: dict[str, Any] = {"qemu_cpu": model.qemu_cpu,
                                   "expected_core": model.openblas_core}
            for lib in libs:
                argv = ["python3", f"{guest_dir}/gemm_target.py", "--lib", lib.guest_path,
                        "--sizes", ",".join(map(str, sizes)), "--dir", guest_dir,
                        "--min-time", str(min_time)]
                env = {"OPENBLAS_NUM_THREADS": "1", "OPENBLAS_VERBOSE": "2"}
                proc = run_guest(arch, argv, cpu=model.name, rootfs=rootfs, env=env,
                                 timeout=1800)
                if proc.returncode != 0:
                    raise ValidationError(
                        f"gemm on {model.name} with {lib.name} failed (exit {proc.returncode}): "
                        + (proc.stderr.strip().splitlines() or ["no output"])[-1][:200])
                res = _parse(proc.stdout)
                res["errors"] = check_outputs(host_dir, arrays, sizes)
                res["verbose_core"] = _verbose_core(proc.stderr)
                if lib.openblas:
                    res["kernel_ok"] = (res.get("corename") or "").lower() == \
                        model.openblas_core.lower()
                row[lib.name] = res
                print(_line(model.name, lib.name, res), file=sys.stderr, flush=True)
            report["models"][model.name] = row
    if count_rvv:
        report["vector_instructions"] = count_vector_instructions(
            t, {lib.name: lib.host_path for lib in libs})
    report["meta"]["load_avg_end"] = round(os.getloadavg()[0], 1)
    _summarise(report, sizes)
    return report


def run_native(*, libs: Mapping[str, Path], sizes: Sequence[int] = SIZES,
               min_time: float = 0.5, objdump: str | None = None) -> dict[str, Any]:
    """On a board: the same target script, run directly, checked with numpy when present."""
    import tempfile

    report: dict[str, Any] = {"meta": _meta(platform.machine(), sizes, min_time, mode="native"),
                              "libraries": {k: {"path": str(v)} for k, v in libs.items()},
                              "models": {}}
    row: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="rvtorch-gemm-") as tmp:
        directory = Path(tmp)
        try:
            arrays: dict[str, Any] | None = write_inputs(directory, sizes)
        except ImportError:
            arrays = None  # no numpy on the board: the script makes its own inputs
        for name, path in libs.items():
            env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OPENBLAS_VERBOSE": "2"}
            env.pop("OPENBLAS_CORETYPE", None)
            proc = subprocess.run(
                [sys.executable, str(HERE / "gemm_target.py"), "--lib", str(path), "--sizes",
                 ",".join(map(str, sizes)), "--dir", tmp, "--min-time", str(min_time)],
                capture_output=True, text=True, env=env, check=False)
            if proc.returncode != 0:
                raise ValidationError(f"gemm with {name} failed: {proc.stderr.strip()[-200:]}")
            res = _parse(proc.stdout)
            if arrays is not None:
                res["errors"] = check_outputs(directory, arrays, sizes)
            res["verbose_core"] = _verbose_core(proc.stderr)
            row[name] = res
            print(_line("native", name, res), file=sys.stderr, flush=True)
    report["models"]["native"] = row
    report["meta"]["load_avg_end"] = round(os.getloadavg()[0], 1)
    if objdump:
        from .rvv_count import count

        report["vector_instructions"] = {k: count(str(v), objdump) for k, v in libs.items()}
    _summarise(report, sizes)
    return report


def _meta(arch: str, sizes: Sequence[int], min_time: float, mode: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "arch": arch, "mode": mode, "sizes": list(sizes), "min_time_s": min_time,
        "threads": 1, "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%MZ"),
        "host": f"{platform.machine()} {os.cpu_count()} cpus",
        # Other work on the machine skews GFLOPS: the 1-minute load average, start and end.
        "load_avg_start": round(os.getloadavg()[0], 1),
    }
    if mode == "qemu":
        t = target(arch)
        qemu = shutil.which(t.qemu_binary)
        if qemu:
            out = subprocess.run([qemu, "--version"], capture_output=True, text=True,
                                 check=False).stdout
            meta["qemu"] = out.splitlines()[0] if out else None
    return meta


def _line(model: str, lib: str, res: Mapping[str, Any]) -> str:
    g = res["results"]
    parts = [f"{k} " + " ".join(f"{n}:{v['gflops']:.3f}" for n, v in g[k].items())
             for k in sorted(g)]
    core = res.get("corename") or "-"
    return f"  {model:<8} {lib:<17} core {core:<17} GFLOPS " + " | ".join(parts)


def _summarise(report: dict[str, Any], sizes: Sequence[int]) -> None:
    """Speed-up against the reference BLAS, worst numeric error, kernel checks, pass/fail."""
    summary: dict[str, Any] = {"speedup_vs_reference": {}, "max_error": {}, "kernel_ok": {}}
    worst_ok = True
    for model, row in report["models"].items():
        ref = row.get("debian-reference")
        for lib, res in row.items():
            if not isinstance(res, dict) or "results" not in res:
                continue
            errs = res.get("errors", {})
            for key, err in errs.items():
                if err > TOLERANCE[key[0]]:
                    worst_ok = False
            summary["max_error"].setdefault(lib, 0.0)
            summary["max_error"][lib] = max([summary["max_error"][lib], *errs.values()])
            if "kernel_ok" in res:
                summary["kernel_ok"][f"{model}/{lib}"] = res["kernel_ok"]
            if ref is not None and lib != "debian-reference":
                sp = summary["speedup_vs_reference"].setdefault(f"{model}/{lib}", {})
                for kind, by_size in res["results"].items():
                    for n in map(str, sizes):
                        sp[f"{kind}_{n}"] = round(
                            by_size[n]["gflops"] / ref["results"][kind][n]["gflops"], 2)
    ours_kernels = [ok for k, ok in summary["kernel_ok"].items() if k.endswith("/ours")]
    summary["numerics_ok"] = worst_ok
    summary["ours_kernels_ok"] = all(ours_kernels) if ours_kernels else None
    report["summary"] = summary


def results_path() -> Path:
    return repo_root() / "benchmarks" / "results" / "gemm.json"


def write_report(report: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def check(report: Mapping[str, Any]) -> None:
    """Validation failure (exit 5) when a product is wrong or our OpenBLAS picked a wrong kernel."""
    s = report["summary"]
    if not s["numerics_ok"]:
        raise ValidationError(f"GEMM results differ from numpy beyond tolerance: {s['max_error']}")
    if s["ours_kernels_ok"] is False:
        bad = [k for k, ok in s["kernel_ok"].items() if k.endswith("/ours") and not ok]
        raise ValidationError(f"our OpenBLAS picked the wrong kernel set on {', '.join(bad)}")


def default_cache_results() -> Path:
    return cache_dir() / "bench" / "gemm.json"
