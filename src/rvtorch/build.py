"""Plan and run the cross build of a PyTorch wheel inside the toolchain image.

The plan (:func:`make_plan`) resolves everything up front — image, source + sha256, patches, every
environment/CMake flag, jobs, cache — and is printed as JSON by ``rvtorch build --dry-run``. Flags
come from ``toolchains/torch.toml`` (see :mod:`rvtorch.torchspec` for the precedence chain); the
cross environment (compilers, toolchain file, target Python) is decided in :func:`cross_env`.

Target Python: the build runs setup.py with the image's build interpreter ``/usr/bin/python3.13``
and CPython's own cross-compilation hooks (``_PYTHON_SYSCONFIGDATA_NAME`` +
``_PYTHON_HOST_PLATFORM``) pointing at the target's sysconfigdata, which Debian's multiarch
``libpython3.13-stdlib:<arch>`` installs beside the build machine's. That is the mechanism crossenv
wraps; crossenv itself needs a runnable layout of the target interpreter, and installing
``python3.13:<arch>`` in the image would replace the build python (docs/facts.md). The result is the
same: ``torch._C`` is named ``_C.cpython-313-<triple>.so`` and links against the target headers.

Running: the patched tree (one per arch, series digest in its name), the ccache directory and an
output directory are bind-mounted from the cache; setup.py's ninja build directory lives in the
tree, so a killed build resumes where it stopped. The wheel is written to a temp dir, repaired
and checked (``rvtorch.wheel``), then validated with the code of ``rvtorch validate --wheel``
(default suites, every CPU model of the target, pip-installed into a clean target venv from the
wheelhouse): only a wheel that passes is moved into ``--out`` atomically, beside
``<wheel>.validation/`` (the report), a ``.sha256`` and a build-info JSON that records the verdict
(:func:`validate_and_publish`). A wheel that fails stays in the tree's ``build/rejected/`` with
its report (exit 5); ``--no-validate`` publishes without, and says so in build-info.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import io
import itertools
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .errors import BuildError, RvtorchError, UsageError
from .paths import cache_dir, data_dir, keeps_wheel_on_failure, repo_root, try_lock
from .sources import sha256_file
from .targets import Target, matrix
from .torchspec import TorchVersion, torch_version

STAGES = ("configure", "partial", "full")
CACHES = ("ccache", "sccache", "none")
# Which OpenBLAS the build links and the wheel bundles (`rvtorch build --openblas`):
#   sysroot   Debian's libopenblas-dev in the build image
#   recipe    recipes/openblas with the options `rvtorch deps build` uses by default; built first
#             (in the toolchain image) when the deployed one is missing or was built otherwise
#   deployed  whatever `rvtorch deps build` last deployed for the arch (any version/options);
#             never builds: a missing one is an error
OPENBLAS_CHOICES = ("sysroot", "recipe", "deployed")
# setup.py passes variables with these prefixes/suffixes and a few named ones on to CMake as -D
# options (tools/setup_helpers/cmake.py of 2.6); the plan lists them so a reader sees every CMake
# flag. Anything else in the environment is read by the build tools themselves (MAX_JOBS, CC,
# SLEEF_TARGET_EXEC_USE_QEMU, ...).
CMAKE_FORWARDED = ("BUILD_", "USE_", "CMAKE_")
CMAKE_FORWARDED_SUFFIXES = ("EXITCODE", "EXITCODE__TRYRUN_OUTPUT")
CMAKE_FORWARDED_NAMES = ("BLAS", "WITH_BLAS", "ONNX_ML", "ONNX_NAMESPACE", "ATEN_THREADING",
                         "WERROR", "UBSAN_FLAGS", "INSTALL_TEST", "OPENSSL_ROOT_DIR")
# Variables setup.py forwards under another CMake name (its ``additional_options``).
CMAKE_RENAMED = {"_GLIBCXX_USE_CXX11_ABI": "GLIBCXX_USE_CXX11_ABI"}
# Lines of a configure log that mean CMake could not run a target program (a try_run, or an
# execute_process of a freshly compiled probe such as cmake/CheckAbi.cmake) and went on with a
# guess. In a cross build each such guess is a latent link failure an hour later: the configure
# step fails on them instead (docs/build.md, *Target probes*).
CONFIGURE_PROBE_FAILURES = (
    re.compile(r"Could not run ABI Check"),
    re.compile(r"TRY_RUN\(\) invoked in cross-compiling mode"),
    re.compile(r"exec format error", re.I),
)
# Environment variables CMake reads itself during the configure (find modules), not as -D options:
# setup.py's configure-once logic cannot see them, so they are part of the configure digest.
# ``OpenBLAS_ROOT`` is the one that makes find_package(OpenBLAS) prefer a prefix (CMP0074) over
# the sysroot's copy; FindOpenBLAS.cmake searches ``$OpenBLAS_HOME`` only after the system paths.
CMAKE_ENV_READ = ("OpenBLAS_ROOT", "OpenBLAS_HOME", "OpenBLAS")
# Container paths of the bind mounts.
CTR_SRC = "/rvtorch/src"
CTR_CACHE = "/rvtorch/cache"
CTR_OUT = "/rvtorch/out"
BUILD_PYTHON = "/usr/bin/python3.13"
# A default partial build: c10 and a few ATen CPU kernels (enough to prove compile + link).
_ATEN_OBJ = "caffe2/CMakeFiles/torch_cpu.dir/__/aten/src/ATen"
# Optional patch groups (series.toml [[optional]]): the arches each is for, and the build flags
# it needs. aten-rvv: the RVV Vectorized and kernels capability (docs/aten-rvv.md).
FEATURE_ARCHES: dict[str, tuple[str, ...]] = {"aten-rvv": ("riscv64",)}
# The kernel files (aten/src/ATen/native/cpu and the generated ufunc ones, by base name) that get
# an RVV copy (patch aten-rvv/0002, USE_RVV_KERNELS); every other file runs its DEFAULT code in
# RVV processes too. Chosen for what vectors do for: elementwise math, activations, casts and
# copies, comparisons/where, reductions, softmax, the norms, the fused optimisers. Left out (the
# bulk of the second copy's size, docs/aten-rvv.md): grid sampling, flash attention, sorting,
# indexing, scatter/gather, padding, pooling, upsampling, sparse, quantized.
RVV_KERNELS: tuple[str, ...] = (
    "BinaryOpsKernel", "UnaryOpsKernel", "Activation", "CopyKernel", "FillKernel",
    "PointwiseOpsKernel", "PowKernel", "LerpKernel", "TensorCompareKernel", "ReduceOpsKernel",
    "ReduceAllOpsKernel", "SumKernel", "SoftMaxKernel", "layer_norm_kernel", "batch_norm_kernel",
    "group_norm_kernel", "UfuncCPUKernel_add", "FusedAdamKernel", "FusedSGDKernel",
)
FEATURE_ENV: dict[str, dict[str, str]] = {
    "aten-rvv": {"USE_RVV": "1", "USE_RVV_KERNELS": ",".join(RVV_KERNELS)}}
# The arches a build of which gets the feature unless told `--<feature> off`. aten-rvv: every
# riscv64 build since its full wheel passed the validation and the op-parity suite on rv64
# (DEFAULT chosen), rvv128 and rvv256 (RVV chosen) (docs/aten-rvv.md).
FEATURE_DEFAULT_ARCHES: dict[str, tuple[str, ...]] = {"aten-rvv": ("riscv64",)}


def resolve_features(arch: str, choices: Mapping[str, str | None]) -> tuple[str, ...]:
    """The optional patch groups of a build: ``choices`` maps a feature to "on", "off" or None
    (not given: on for the arches of FEATURE_DEFAULT_ARCHES). "on" for another arch stays "on"
    here; make_plan refuses it with a usage error."""
    out = []
    for feature, choice in choices.items():
        if choice == "on" or (choice is None and arch in FEATURE_DEFAULT_ARCHES.get(feature, ())):
            out.append(feature)
    return tuple(out)

DEFAULT_PARTIAL_TARGETS = (
    "c10",
    f"{_ATEN_OBJ}/native/cpu/FillKernel.cpp.DEFAULT.cpp.o",
    f"{_ATEN_OBJ}/native/cpu/RangeFactoriesKernel.cpp.DEFAULT.cpp.o",
    # The BLAS glue: with patch 0005 it calls OpenBLAS's cblas_*dot* wrappers.
    f"{_ATEN_OBJ}/native/BlasKernel.cpp.o",
    # Includes the flatbuffers header regenerated by the debian source's prepare step.
    "caffe2/CMakeFiles/torch_cpu.dir/__/torch/csrc/jit/mobile/flatbuffer_loader.cpp.o",
    # The vendored gloo (static, TCP transport only) and the header-only cpp-httplib user.
    "gloo",
    "caffe2/CMakeFiles/torch_cpu.dir/__/torch/csrc/distributed/c10d/control_plane/"
    "WorkerServer.cpp.o",
)
_NINJA = re.compile(r"^\[(\d+)/(\d+)\]")


# ------------------------------------------------------------------------------------------ plan
def default_jobs(cores: int | None = None, mem_bytes: int | None = None) -> int:
    """Parallel compile jobs: one per core, but at most one per 3 GiB of memory (the heaviest
    ATen translation units need ~2.5 GiB with gcc 14 -O2)."""
    cores = cores or os.cpu_count() or 1
    if mem_bytes is None:
        try:
            mem_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            mem_bytes = 8 << 30
    return max(1, min(cores, mem_bytes // (3 << 30)))


def wheel_version(tv: TorchVersion, t: Target) -> str:
    """PEP 440 version with a local tag naming the target (``2.6.0+riscv64``)."""
    return f"{tv.version}+{t.arch}"


def tree_name(tv: TorchVersion, provider: str, arch: str, recipe_digest: str) -> str:
    """One tree per version, provider, arch and source recipe (pins, overlays, prepare steps,
    patch series): a change gives a fresh tree, a rerun reuses ninja's state."""
    return f"torch-{tv.version}-{provider}-{recipe_digest[:12]}-{arch}"


def cross_env(t: Target, tv: TorchVersion) -> dict[str, str]:
    """Environment that makes setup.py cross-compile for ``t`` inside the toolchain image."""
    gcc = matrix().project.gcc
    return {
        "CC": f"{t.triple}-gcc-{gcc}",
        "CXX": f"{t.triple}-g++-{gcc}",
        "CMAKE_TOOLCHAIN_FILE": f"/opt/rvtorch/toolchains/{t.triple}.cmake",
        "CMAKE_GENERATOR": "Ninja",
        # The target's sysconfigdata (libpython3.13-stdlib:<arch>): EXT_SUFFIX/SOABI of the target.
        "_PYTHON_SYSCONFIGDATA_NAME": f"_sysconfigdata__linux_{t.triple}",
        "_PYTHON_HOST_PLATFORM": f"linux-{t.arch}",
        "PYTORCH_BUILD_VERSION": wheel_version(tv, t),
        "PYTORCH_BUILD_NUMBER": "1",
        "QEMU_LD_PREFIX": "/",
        # PyTorch compiles __FILE__ into libtorch (c10/util/Exception.h): map the container's
        # source path to "." so no build path reaches the wheel (check-wheel rejects them).
        # CMake appends these to the toolchain file's CMAKE_<LANG>_FLAGS_INIT (-march/-mabi).
        "CFLAGS": f"-ffile-prefix-map={CTR_SRC}=.",
        "CXXFLAGS": f"-ffile-prefix-map={CTR_SRC}=.",
    }


def cache_env(kind: str) -> dict[str, str]:
    if kind == "ccache":
        return {
            "CMAKE_C_COMPILER_LAUNCHER": "ccache",
            "CMAKE_CXX_COMPILER_LAUNCHER": "ccache",
            "CCACHE_DIR": f"{CTR_CACHE}/ccache",
            "CCACHE_BASEDIR": CTR_SRC,
            "CCACHE_MAXSIZE": "20G",
            "CCACHE_COMPRESS": "1",
            # Hash the compiler binary, not its mtime: a rebuilt image with the same gcc (or the
            # same gcc in another root) keeps hitting the cache.
            "CCACHE_COMPILERCHECK": "content",
        }
    if kind == "sccache":
        # sccache shares a cache across machines (SCCACHE_* storage settings pass through).
        return {
            "CMAKE_C_COMPILER_LAUNCHER": "sccache",
            "CMAKE_CXX_COMPILER_LAUNCHER": "sccache",
            "SCCACHE_DIR": f"{CTR_CACHE}/sccache",
            **{
                k: v
                for k, v in os.environ.items()
                if k.startswith("SCCACHE_") and k != "SCCACHE_DIR"
            },
        }
    return {}


def cmake_flags(env: Mapping[str, str]) -> list[str]:
    """The -D options setup.py derives from the environment (what CMake will see)."""
    return sorted(
        [f"-D{CMAKE_RENAMED[k]}={v}" for k, v in env.items() if k in CMAKE_RENAMED]
        + [
            f"-D{k}={v}"
            for k, v in env.items()
            if k.startswith(CMAKE_FORWARDED) or k.endswith(CMAKE_FORWARDED_SUFFIXES)
            or k in CMAKE_FORWARDED_NAMES
        ]
    )


def configure_probe_failures(log_text: str) -> list[str]:
    """Lines of a configure log where CMake could not run a target program and guessed."""
    return [ln.strip() for ln in log_text.splitlines()
            if any(p.search(ln) for p in CONFIGURE_PROBE_FAILURES)]


@dataclass(frozen=True, kw_only=True)
class Plan:
    arch: str
    torch_version: str
    source: dict[str, Any]
    image: dict[str, Any]
    patches: list[dict[str, str]]
    env: dict[str, str]
    cmake: list[str]
    stage: str
    targets: list[str]
    jobs: int
    cache: str
    tree: str
    out: str
    wheel_version: str
    validate_cpus: list[str]
    prepare: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Which OpenBLAS is linked and bundled (openblas_plan): choice, ref, options, prefix, sha256.
    openblas: dict[str, Any] = field(default_factory=dict)
    # Optional patch groups applied after the default series (--aten-rvv on: ["aten-rvv"]).
    features: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def image_plan(t: Target, tv: TorchVersion) -> dict[str, Any]:
    deb = tv.debian
    layer_inputs = {
        "dockerfile": sha256_file(data_dir("docker") / "torch-build.Dockerfile"),
        "requirements": sha256_file(data_dir("docker") / "torch-build-requirements.txt"),
        "sysroot_packages": list(deb.sysroot_packages),
        "build_packages": list(deb.build_packages),
        "debian_arch": t.debian_arch,
    }
    digest = hashlib.sha256(json.dumps(layer_inputs, sort_keys=True).encode()).hexdigest()[:16]
    return {
        # The toolchain's content-hash tag is resolved by rvtorch.image.ensure_image at build
        # time; the torch layer's tag gets that hash appended, so a new toolchain rebuilds it.
        "toolchain": f"{matrix().project.image}:{t.arch}",
        "torch_layer": f"{matrix().project.image}-torch:{t.arch}-{digest}",
        "torch_layer_inputs": layer_inputs,
        "dockerfile": "docker/torch-build.Dockerfile",
    }


def container_path(host: Path) -> str | None:
    """Where a host path under the cache appears in the build container (the cache mount);
    None for a path outside the cache, which the container does not see."""
    try:
        rel = host.resolve().relative_to(cache_dir(create=False).resolve())
    except ValueError:
        return None
    return f"{CTR_CACHE}/{rel.as_posix()}" if rel.parts else CTR_CACHE


def _deployed_openblas(root: Path) -> tuple[dict[str, Any] | None, str]:
    """deps.json's openblas entry if its prefix is complete, else (None, why not)."""
    meta_path = root / "deps.json"
    if not meta_path.is_file():
        return None, f"nothing deployed in {root}"
    try:
        entry = json.loads(meta_path.read_text()).get("openblas")
    except (json.JSONDecodeError, AttributeError):
        return None, f"{meta_path} is not a deps.json"
    if not isinstance(entry, dict) or "ref" not in entry:
        return None, f"no openblas in {meta_path}"
    prefix = root / "openblas"
    for rel in ("include/cblas.h", "lib/libopenblas.so", "lib/libopenblas.so.0"):
        if not (prefix / rel).exists():
            return None, f"the deployed prefix {prefix} has no {rel}"
    return entry, ""


def openblas_plan(t: Target, choice: str, *, root: Path | None = None) -> dict[str, Any]:
    """Which OpenBLAS a build for ``t`` links and bundles, resolved without building anything.

    ``root`` is the deploy directory (default ``<cache>/deps/<arch>``, where ``rvtorch deps build``
    puts it). ``status`` is ``deployed`` (with the library's sha256) or, for ``recipe`` only,
    ``build`` with the ``reason`` the build must run ``deps build --only openblas`` first.
    """
    if choice not in OPENBLAS_CHOICES:
        from .targets import suggest

        raise UsageError(f"unknown --openblas {choice!r}",
                         hint=suggest(choice, OPENBLAS_CHOICES))
    if choice == "sysroot":
        return {"choice": "sysroot", "package": f"libopenblas-dev:{t.debian_arch}",
                "library": f"/usr/lib/{t.triple}/libopenblas.so", "status": "in the image"}
    from .deps import openblas_spec

    root = root if root is not None else cache_dir(create=False) / "deps" / t.arch
    prefix = root / "openblas"
    ctr = container_path(prefix)
    entry, why = _deployed_openblas(root)
    record: dict[str, Any] = {"choice": choice, "prefix": str(prefix), "container_prefix": ctr,
                              "library": f"{ctr}/lib/libopenblas.so" if ctr else None}
    if choice == "deployed":
        if entry is None:
            raise UsageError(f"no OpenBLAS deployed for {t.arch}: {why}",
                             hint=f"run `rvtorch deps build --arch {t.arch}` or use "
                             "--openblas recipe")
        record.update(ref=entry["ref"], options=dict(entry.get("options") or {}))
    else:
        want = openblas_spec(t)
        record.update(ref=want.ref, options=dict(want.options))
        if entry is not None and (entry["ref"], entry.get("options")) != (want.ref, want.options):
            have = entry.get("options") or {}
            diff = sorted(k for k in {*have, *want.options} if have.get(k) != want.options.get(k))
            why = f"the deployed one is {entry['ref']}" + (
                f" with other {', '.join(diff)}" if diff else "")
            entry = None
        if entry is None:
            record.update(status="build", reason=why)
            return record
    real = (prefix / "lib" / "libopenblas.so.0").resolve()
    record.update(status="deployed", library_file=real.name, sha256=sha256_file(real))
    return record


def openblas_env(record: Mapping[str, Any]) -> dict[str, str]:
    """The build environment for a recipe/deployed OpenBLAS (container paths); {} for sysroot.

    The sysroot copy stays installed in the image: ``OpenBLAS_ROOT`` (a find_package root, read
    by CMake before its system paths) is what makes FindOpenBLAS pick the prefix.
    ``OpenBLAS_HOME``/``_INCLUDE_DIR``/``_LIB`` are the names deps.env uses, for scripts.
    """
    if record.get("choice", "sysroot") == "sysroot":
        return {}
    p = record["container_prefix"]
    if p is None:
        raise UsageError(f"{record['prefix']} is outside the cache: the build container cannot "
                         "see it")
    return {"BLAS": "OpenBLAS", "OpenBLAS_ROOT": p, "OpenBLAS_HOME": p,
            "OpenBLAS_INCLUDE_DIR": f"{p}/include", "OpenBLAS_LIB": f"{p}/lib/libopenblas.so"}


def make_plan(
    arch: str,
    *,
    version: str | None = None,
    provider: str,
    jobs: int | None = None,
    out: Path | None = None,
    cache: str = "ccache",
    stage: str = "full",
    targets: Sequence[str] = (),
    overrides: Mapping[str, str] | None = None,
    openblas: str = "sysroot",
    features: Sequence[str] = (),
) -> Plan:
    """Resolve a build without touching the network, the cache or a container.

    ``features`` name optional patch groups of the series (``--aten-rvv on``: aten-rvv), applied
    after the default series, with their build switches (FEATURE_ENV); none by default."""
    from .patches import series_for

    t = matrix().target(arch)
    tv = torch_version(version)
    if tv.python != matrix().project.python:
        raise UsageError(
            f"torch {tv.version} is built for Python {tv.python}, targets.toml "
            f"says {matrix().project.python}"
        )
    if stage not in STAGES:
        raise UsageError(f"unknown --stage {stage!r}", hint="one of " + ", ".join(STAGES))
    if cache not in CACHES:
        raise UsageError(f"unknown --cache {cache!r}", hint="one of " + ", ".join(CACHES))
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    blas = openblas_plan(t, openblas)
    series = series_for(tv)
    for feature in features:
        arches = FEATURE_ARCHES.get(feature)
        if arches is not None and arch not in arches:
            raise UsageError(f"--{feature} on is for {', '.join(arches)}, not {arch}")
    patches = series.for_provider(provider, features)
    if provider == "debian":
        source: dict[str, Any] = {
            "provider": "debian",
            "pool": tv.debian.pool,
            "files": [
                {"name": f.name, "sha256": f.sha256, "size": f.size} for f in tv.debian.files
            ],
            "overlays": [{"from": o.source, "to": o.dest} for o in tv.debian.overlays],
            "vendored": [
                {"pool": v.pool, "name": v.file.name, "sha256": v.file.sha256,
                 "size": v.file.size, "tree": v.tree, "to": v.dest}
                for v in tv.debian.vendored
            ],
        }
    else:
        source = {
            "provider": "upstream",
            "git": tv.upstream.git,
            "tag": tv.upstream.tag,
            "commit": tv.upstream.commit,
            "submodules": True,
        }
    jobs = jobs or default_jobs()
    flags = tv.resolve_env(provider=provider, arch=arch, overrides=overrides)
    env = {**flags, **cross_env(t, tv), **cache_env(cache), **openblas_env(blas),
           "MAX_JOBS": str(jobs)}
    for feature in features:
        env.update(FEATURE_ENV.get(feature, {}))
    if overrides:  # the command line wins over the computed cross/cache values too
        env.update(overrides)
    prepare = list(tv.debian.prepare) if provider == "debian" else []
    recipe = {"series": series.digest(provider, features), "source": source, "prepare": prepare}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    notes = []
    if provider == "upstream":
        notes.append("upstream provider: vendored submodules; SLEEF generators run under QEMU")
    if blas["status"] == "build":
        notes.append(f"{blas['ref']} is built first with `rvtorch deps build --arch {arch} "
                     f"--only openblas` in the toolchain image ({blas['reason']})")
    if blas["choice"] != "sysroot" and blas["options"].get("build_lapack") != "True":
        lapack = blas["options"].get("build_lapack")
        notes.append(f"{blas['ref']} has no LAPACK (build_lapack={lapack}): with BLAS=OpenBLAS "
                     "torch's FindLAPACK looks only there, so the build has "
                     "no LAPACK (torch.linalg solvers raise); see docs/recipes.md")
    return Plan(
        arch=arch,
        torch_version=tv.version,
        source=source,
        image=image_plan(t, tv),
        patches=[{"file": p.file, "sha256": sha256_file(p.path), "type": p.type} for p in patches],
        env=env,
        cmake=cmake_flags(env),
        stage=stage,
        targets=list(targets or (DEFAULT_PARTIAL_TARGETS if stage == "partial" else ())),
        jobs=jobs,
        cache=cache,
        tree=str(cache_dir(create=False) / "trees" / tree_name(tv, provider, arch, digest)),
        out=str((out or repo_root() / "dist").resolve()),
        wheel_version=wheel_version(tv, t),
        validate_cpus=[c.name for c in t.cpu],
        prepare=prepare,
        notes=notes,
        openblas=blas,
        features=list(features),
    )


# -------------------------------------------------------------------------------------- progress
@dataclass
class Progress:
    """ninja's ``[n/N]`` lines -> a progress line with an ETA (from the rate since the first)."""

    done: int = 0
    total: int = 0
    first: tuple[float, int] | None = None
    last_print: float = 0.0

    def feed(self, line: str, now: float | None = None) -> bool:
        m = _NINJA.match(line)
        if not m:
            return False
        now = time.monotonic() if now is None else now
        done, total = int(m.group(1)), int(m.group(2))
        # A new ninja run (codegen, then the compile; or a resumed build) restarts the rate.
        if self.first is None or total != self.total or done < self.first[1]:
            self.first = (now, done)
        self.done, self.total = done, total
        return True

    def eta(self, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        if self.first is None or self.done <= self.first[1] or not self.total:
            return None
        rate = (self.done - self.first[1]) / max(now - self.first[0], 1e-6)
        return (self.total - self.done) / rate

    def line(self, elapsed: float, now: float | None = None) -> str:
        pct = 100.0 * self.done / self.total if self.total else 0.0
        eta = self.eta(now)
        eta_s = _hms(eta) if eta is not None else "--:--:--"
        return f"[{self.done}/{self.total}] {pct:5.1f}%  elapsed {_hms(elapsed)}  ETA {eta_s}"


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def follow_log(
    log: Path, stop: threading.Event, start: float, progress: Progress, interval: float = 5.0
) -> None:
    """Tail ``log`` until ``stop`` is set, printing the progress line (to stderr)."""
    pos = 0
    tty = sys.stderr.isatty()
    while not stop.is_set():
        if log.exists():
            with log.open("r", errors="replace") as fh:
                fh.seek(pos)
                for line in fh:
                    progress.feed(line)
                pos = fh.tell()
        now = time.monotonic()
        if progress.total and now - progress.last_print >= (interval if tty else 60):
            progress.last_print = now
            text = "  " + progress.line(now - start, now)
            print(
                ("\r" + text) if tty else text, end="" if tty else "\n", file=sys.stderr, flush=True
            )
        stop.wait(interval)
    if tty and progress.total:
        print(file=sys.stderr)


# ----------------------------------------------------------------------------------------- build
def host_binfmt(arch: str) -> str:
    """Whether the build machine's kernel runs ``arch`` binaries transparently (binfmt_misc).

    CMake's probes that execute target programs without ``CMAKE_CROSSCOMPILING_EMULATOR`` (an
    ``execute_process`` of a compiled probe) behave differently with and without it, so it is
    part of the configure digest: a rerun after registering or removing an entry reconfigures.
    """
    from .emulate import binfmt_state

    try:
        return "binfmt" if binfmt_state(matrix().target(arch)).usable_in(None) else "none"
    except OSError:
        return "none"


def configure_digest(plan: Plan, binfmt: str | None = None) -> str:
    """What the CMake configure of a tree depends on: the flags CMake sees (the target's C++ ABI
    among them), the cache kind, the environment variables find modules read, a recipe
    OpenBLAS's identity (its ref and options decide what CMake's checks find in it, e.g. LAPACK)
    and the build machine's binfmt state for the target (``binfmt``, default: read now)."""
    key: dict[str, Any] = {"cmake": sorted(plan.cmake), "cache": plan.cache,
                           "binfmt": binfmt if binfmt is not None else host_binfmt(plan.arch)}
    read = {k: plan.env[k] for k in CMAKE_ENV_READ if k in plan.env}
    if read:
        key["env"] = read
    if plan.openblas.get("choice", "sysroot") != "sysroot":
        key["openblas"] = {k: plan.openblas[k] for k in ("ref", "options", "container_prefix")}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def check_configure(plan: Plan, tree: Path, log_text: str) -> dict[str, Any]:
    """Fail the build at configure (BuildError, exit 4) when CMake could not run a target
    program, or when the C++ ABI it settled on is not the one the plan asks for."""
    failures = configure_probe_failures(log_text)
    if failures:
        raise BuildError(
            f"configure for {plan.arch} could not run a target program: {failures[0][:160]}",
            hint="a cross configure must not guess; see docs/build.md (Target probes)")
    cache = tree / "build" / "CMakeCache.txt"
    found: dict[str, Any] = {}
    text = cache.read_text(errors="replace") if cache.exists() else ""
    for env_name, cmake_name in CMAKE_RENAMED.items():
        want = plan.env.get(env_name)
        if want is None:
            continue
        m = re.search(rf"^{cmake_name}(?::\w+)?=(.*)$", text, re.M)
        got = m.group(1).strip() if m else None
        if got != want:
            raise BuildError(
                f"configure for {plan.arch} settled on {cmake_name}={got}, the plan says {want}",
                hint=f"see {cache}")
        found[cmake_name] = got
    return found


def build_script(plan: Plan, part: str = "all", binfmt: str | None = None) -> str:
    """The shell script run in the container (its output goes to the log in the tree).

    ``part`` is ``configure`` (prepare + CMake), ``compile`` (the rest) or ``all``; run_build runs
    the two halves separately so that the configure log is checked before anything compiles.
    """
    py = BUILD_PYTHON
    lines = [
        "set -Eeuo pipefail",
        f"cd {CTR_SRC}",
    ]
    if part in ("configure", "all"):
        lines += _configure_lines(plan, py, binfmt)
    if part in ("compile", "all"):
        lines += _compile_lines(plan, py)
    return "\n".join(lines) + "\n"


def _configure_lines(plan: Plan, py: str, binfmt: str | None) -> list[str]:
    lines: list[str] = []
    if plan.prepare:
        # Once per tree: regenerated sources must keep their mtime so ninja does not rebuild.
        digest = hashlib.sha256("\n".join(plan.prepare).encode()).hexdigest()[:12]
        stamp = f".rvtorch-prepare-{digest}"
        lines += [
            'echo "rvtorch: step prepare $(date +%s)"',
            f"if [ ! -e {stamp} ]; then",
            *(f"  ( {cmd} )" for cmd in plan.prepare),
            f"  touch {stamp}",
            "fi",
        ]
    # setup.py configures a tree once and ignores a changed environment afterwards; the stamp
    # names the CMake-visible flags (compiler launcher included), so a rerun with other flags or
    # another --cache reconfigures (objects unchanged by the new flags stay built).
    stamp = f"build/.rvtorch-configure-{configure_digest(plan, binfmt)}"
    lines += [
        'echo "rvtorch: step configure $(date +%s)"',
        "rerun=",
        f"if [ -e build/CMakeCache.txt ] && [ ! -e {stamp} ]; then",
        '  echo "rvtorch: the configure flags changed since the last run: reconfiguring"',
        "  rerun=--cmake",
        "fi",
        f"{py} setup.py build --cmake-only $rerun",
        "rm -f build/.rvtorch-configure-*",
        f"touch {stamp}",
    ]
    return lines


def _compile_lines(plan: Plan, py: str) -> list[str]:
    lines: list[str] = []
    if plan.cache == "sccache":
        # Under chroot isolation containers share the host's network, so an sccache server left
        # by an earlier (killed) container answers on the same port from a root that no longer
        # exists ("failed to write temporary file"). Start our own; stop it when the build ends.
        lines += [
            "sccache --stop-server >/dev/null 2>&1 || true",
            "trap 'sccache --stop-server >/dev/null 2>&1 || true' EXIT",
            "sccache --start-server",
        ]
    if plan.stage == "partial":
        lines += [
            'echo "rvtorch: step compile $(date +%s)"',
            f"cmake --build build --target {' '.join(shlex.quote(x) for x in plan.targets)}"
            f" -- -j {plan.jobs}",
        ]
    elif plan.stage == "full":
        lines += [
            'echo "rvtorch: step compile $(date +%s)"',
            f"{py} setup.py bdist_wheel --dist-dir {CTR_OUT}",
        ]
    if plan.cache == "ccache":
        lines.append("ccache --show-stats --verbose || true")
    elif plan.cache == "sccache":
        lines.append("sccache --show-stats || true")
    lines.append('echo "rvtorch: step done $(date +%s)"')
    return lines


def ensure_openblas(plan: Plan, *, engine_name: str | None = None, mirror: str | None = None,
                    root: Path | None = None, test: bool = True) -> dict[str, Any]:
    """Deploy the recipe OpenBLAS when the plan says it must be built; returns what is deployed.

    Runs ``rvtorch deps build --only openblas`` (conan create + test_package under QEMU in the
    toolchain image; a package already in the Conan cache is only deployed). ``root`` is the
    deploy directory (default: the cache's ``deps/<arch>``, which the build container sees).
    """
    record = plan.openblas
    if record.get("status") != "build":
        return dict(record)
    from . import deps

    print(f"rvtorch: building {record['ref']} for {plan.arch} first ({record['reason']})",
          file=sys.stderr)
    deps.build(plan.arch, only=["openblas"], test=test, deploy_root=root, debian_mirror=mirror,
               engine_name=engine_name)
    now = openblas_plan(matrix().target(plan.arch), record["choice"], root=root)
    if now["status"] != "deployed":
        raise BuildError(f"rvtorch deps build left no usable {record['ref']}: {now['reason']}")
    return now


def repair_lib_path(openblas: Mapping[str, Any], t: Target, root: Path) -> list[Path]:
    """Where wheel repair looks for the libraries to bundle, first match wins: a recipe
    OpenBLAS's lib dir (so libopenblas.so.0 is ours, not the sysroot's), then the build image's
    multiarch dirs and /usr/lib (some Debian libraries sit there, outside the multiarch dir)."""
    from .wheel import sysroot_lib_path

    ours = [] if openblas.get("choice", "sysroot") == "sysroot" else [
        Path(openblas["prefix"]) / "lib"]
    return [*ours, *sysroot_lib_path(t, root), root / "usr/lib"]


def bundled_openblas(wheel: Path, openblas: Mapping[str, Any]) -> dict[str, Any]:
    """Which libopenblas the repaired ``wheel`` bundles; for a recipe/deployed OpenBLAS, a
    BuildError unless its code (.text, untouched by strip and patchelf) is the deployed one."""
    import zipfile

    from .wheel import LIB_SDIR, elf_section_sha256

    ours = openblas.get("choice", "sysroot") != "sysroot"
    with zipfile.ZipFile(wheel) as zf:
        members = [n for n in zf.namelist() if n.startswith(f"torch{LIB_SDIR}/libopenblas")]
        if len(members) != 1 and not ours:
            return {**openblas, "bundled": members}  # e.g. --set BLAS=Eigen: nothing to compare
        if len(members) != 1:
            raise BuildError(f"{wheel.name} bundles {len(members)} libopenblas files, expected 1",
                             hint=", ".join(members) or "is the wheel linked against OpenBLAS?")
        with zf.open(members[0]) as fh:
            text = elf_section_sha256(io.BytesIO(fh.read()), ".text")
    out: dict[str, Any] = {**openblas, "bundled": members[0], "bundled_text_sha256": text}
    if ours:
        lib = Path(openblas["prefix"]) / "lib" / "libopenblas.so.0"
        with lib.open("rb") as fh:
            want = elf_section_sha256(fh, ".text")
        if want is None or text != want:
            raise BuildError(f"{wheel.name} bundles {members[0]}, which is not the deployed "
                             f"{openblas['ref']} ({lib})",
                             hint="a libopenblas.so.0 earlier in the repair's library path won")
        out["matches_deployed"] = True
    return out


def ensure_build_image(plan: Plan, engine: Any) -> str:
    """The toolchain image plus the torch build layer (built once per content hash)."""
    from . import image as image_mod
    from .targets import target

    t = target(plan.arch)
    toolchain = image_mod.ensure_image(plan.arch, engine=engine)
    # The layer is rebuilt when the toolchain image changes: its content-hash tag is in the name.
    ref = f"{plan.image['torch_layer']}-{toolchain.rsplit(':', 1)[-1].rsplit('-', 1)[-1][:12]}"
    if engine.image_exists(ref):
        return ref
    inputs = plan.image["torch_layer_inputs"]
    ctx = Path(tempfile.mkdtemp(prefix="torch-layer-", dir=cache_dir()))
    try:
        shutil.copy(data_dir("docker") / "torch-build.Dockerfile", ctx / "Dockerfile")
        shutil.copy(data_dir("docker") / "torch-build-requirements.txt", ctx)
        engine.build(
            ctx / "Dockerfile",
            ctx,
            ref,
            build_args={
                "TOOLCHAIN_IMAGE": toolchain,
                "DEBIAN_ARCH": t.debian_arch,
                "SYSROOT_PACKAGES": " ".join(inputs["sysroot_packages"]),
                "BUILD_PACKAGES": " ".join(inputs["build_packages"]),
            },
            labels={"io.rvtorch.torch-layer": ref},
        )
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    return ref


def prepare_tree(plan: Plan, provider: str, mirror: str | None) -> Path:
    """The per-arch patched tree (unpacked + patched once; reused by reruns)."""
    from .patches import apply_in_place, series_for
    from .sources import staging, unpack_into

    tv = torch_version(plan.torch_version)
    dest = Path(plan.tree)
    if (dest / ".rvtorch-prepared").exists():
        return dest
    with staging(dest) as tmp:
        unpack_into(tv, provider, tmp, mirror=mirror)
        apply_in_place(series_for(tv).for_provider(provider, plan.features), tmp)
        (tmp / ".rvtorch-prepared").write_text(json.dumps(plan.patches, indent=1) + "\n")
    return dest


def tree_lock(tree: Path) -> IO[str]:
    """An exclusive lock on a build tree: two builds must never share one ninja directory."""
    return try_lock(tree.parent / f".{tree.name}.lock", f"another build is using {tree}",
                    hint="wait for it to finish (ninja state is per tree)")


def parse_steps(log_text: str) -> dict[str, float]:
    """Durations of the ``rvtorch: step NAME EPOCH`` markers the build script prints."""
    marks = [
        (m.group(1), int(m.group(2)))
        for m in re.finditer(r"^rvtorch: step (\w+) (\d+)$", log_text, re.M)
    ]
    return {a: float(tb - ta) for (a, ta), (_, tb) in itertools.pairwise(marks)}


def run_build(
    plan: Plan,
    *,
    provider: str,
    mirror: str | None = None,
    engine_name: str | None = None,
    validate: bool = True,
) -> dict[str, Any]:
    """Execute ``plan``; returns the build-info record (also written beside the wheel)."""
    from .engine import detect_engine

    t0 = time.monotonic()
    steps: dict[str, float] = {}
    engine = detect_engine(engine_name)
    s = time.monotonic()
    openblas = ensure_openblas(plan, engine_name=engine_name, mirror=mirror)
    if plan.openblas.get("status") == "build":
        steps["openblas"] = time.monotonic() - s
    s = time.monotonic()
    image = ensure_build_image(plan, engine)
    steps["image"] = time.monotonic() - s
    lock = tree_lock(Path(plan.tree))
    s = time.monotonic()
    tree = prepare_tree(plan, provider, mirror)
    steps["source"] = time.monotonic() - s
    (tree / "build").mkdir(exist_ok=True)
    log = tree / "build" / "rvtorch-build.log"
    caches = cache_dir()
    (caches / "ccache").mkdir(exist_ok=True)
    (caches / "sccache").mkdir(exist_ok=True)
    outdir = Path(tempfile.mkdtemp(prefix=".wheel-", dir=caches))
    binfmt = host_binfmt(plan.arch)
    scripts = {}
    for part in ("configure", "compile"):
        scripts[part] = tree / "build" / f"rvtorch-{part}.sh"
        scripts[part].write_text(build_script(plan, part, binfmt))
    print(
        f"rvtorch: building torch {plan.torch_version} for {plan.arch} ({plan.stage}); log {log}",
        file=sys.stderr,
    )
    stop = threading.Event()
    progress = Progress()
    watcher = threading.Thread(target=follow_log, args=(log, stop, t0, progress), daemon=True)
    try:
        with log.open("a") as fh:
            fh.write(f"\n==== rvtorch build {dt.datetime.now(dt.UTC).isoformat()} ====\n")
        start = log.stat().st_size
        watcher.start()
        mounts = {str(tree): CTR_SRC, str(caches): CTR_CACHE, str(outdir): CTR_OUT}
        with engine.container(image, mounts=mounts, env=plan.env, workdir=CTR_SRC) as ctr:
            def call(part: str) -> Any:
                return ctr.call(["bash", "-c", f"bash {CTR_SRC}/build/rvtorch-{part}.sh "
                                 f">> {CTR_SRC}/build/rvtorch-build.log 2>&1"], check=False)

            res = call("configure")
            configured: dict[str, Any] = {}
            if res.returncode == 0:
                with log.open("rb") as raw:
                    raw.seek(start)
                    configured = check_configure(plan, tree, raw.read().decode(errors="replace"))
                res = call("compile")
        stop.set()
        watcher.join()
        log_text = log.read_text(errors="replace")
        steps.update(parse_steps(log_text[log_text.rfind("==== rvtorch build") :]))
        if res.returncode != 0:
            tail = [ln for ln in log_text.splitlines() if "error" in ln.lower()][-1:] or ["see log"]
            raise BuildError(
                f"{plan.stage} build for {plan.arch} failed: {tail[0][:200]}",
                hint=f"full log: {log}; rerun to resume",
            )
        info: dict[str, Any] = {
            "plan": plan.to_json(),
            "image": image,
            "openblas": openblas,
            "log": str(log),
            "steps": steps,
            "ninja": {"done": progress.done, "total": progress.total},
            "configure": {"binfmt": binfmt, **configured},
        }
        if plan.stage == "full":
            info.update(finish_wheel(plan, outdir, info, validate=validate, engine=engine,
                                     image=image))
        info["steps"]["total"] = time.monotonic() - t0
        # Kept beside the log: which image and flags produced this build tree.
        (tree / "build" / "rvtorch-build-info.json").write_text(
            json.dumps(info, indent=2, default=str) + "\n")
        return info
    finally:
        stop.set()
        shutil.rmtree(outdir, ignore_errors=True)
        lock.close()


def finish_wheel(
    plan: Plan, outdir: Path, info: dict[str, Any], *, validate: bool, engine: Any, image: str
) -> dict[str, Any]:
    """Repair + check the wheel (``rvtorch.wheel``), validate it, then publish it into
    ``plan.out`` (:func:`validate_and_publish`)."""
    wheels = sorted(outdir.glob("torch-*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one torch wheel, found {[w.name for w in wheels]}")
    wheel = wheels[0]
    extra: dict[str, Any] = {"unrepaired_size": wheel.stat().st_size}
    s = time.monotonic()
    from . import wheel as wheel_mod

    build_paths = [CTR_SRC, plan.tree]
    # A wheel refused by check-wheel or by the validation stays here for inspection, never in
    # dist/.
    rejected = rejected_dir(plan)
    t = matrix().target(plan.arch)
    # The libraries to bundle live in the build image (the torch layer adds some to the
    # toolchain image).
    openblas = info.get("openblas") or plan.openblas
    with mounted_image(engine, image) as root:
        lib_path = repair_lib_path(openblas, t, root)
        # repair_wheel checks the result and refuses a failing wheel (BuildError, exit 4).
        wheel = wheel_mod.repair_wheel(wheel, t, outdir / "repaired", lib_path=lib_path,
                                       sysroot=root, build_paths=build_paths,
                                       rejected_dir=rejected)
    # A stronger deflate over the repaired wheel (advzip; the members are checked unchanged),
    # before the check and the validation: the wheel that is validated is the one published.
    extra["recompress"] = wheel_mod.recompress_wheel(wheel)
    # The check's findings and figures for build-info.
    extra["check"] = wheel_mod.check_wheel(wheel, t, build_paths=build_paths).to_json()
    # Which OpenBLAS the wheel carries (build-info); a recipe one must be the deployed one.
    extra["openblas"] = bundled_openblas(wheel, openblas)
    info["steps"]["repair_check"] = time.monotonic() - s
    return {**extra, **validate_and_publish(wheel, plan.arch, Path(plan.out), rejected,
                                            {**info, **extra}, validate=validate)}


def rejected_dir(plan: Plan) -> Path:
    return Path(plan.tree) / "build" / "rejected"


def validate_and_publish(
    wheel: Path,
    arch: str,
    out: Path,
    rejected: Path,
    info: dict[str, Any],
    *,
    validate: bool = True,
    cpus: Sequence[str] = (),
    inject: Sequence[str] = (),
) -> dict[str, Any]:
    """Validate ``wheel`` as ``rvtorch validate --wheel`` does, then publish it or reject it.

    The validation is :func:`rvtorch.validation.validate` itself: the default suites on every
    CPU model of the target (``cpus`` narrows that for tests), the wheel pip-installed into a
    clean venv of the base rootfs from the pinned wheelhouse, the OpenBLAS kernel of each model a
    failing check. A ``passed`` verdict publishes the wheel with ``<wheel>.validation/`` and the
    verdict in build-info; anything else puts the wheel, its report and its build-info into
    ``rejected`` and raises (ValidationError, exit 5, for a failure), leaving ``out`` untouched.
    ``inject`` breaks the references on purpose (``validate --inject``) to prove exactly that.
    """
    from .validation import Options, raise_for_verdict, suites_for, summary_record
    from .validation import validate as run_validation

    if not validate:
        print("rvtorch: warning: --no-validate: publishing a wheel nobody ran "
              "(build-info records it)", file=sys.stderr)
        return publish(wheel, out, {**info, "validation": {
            "status": "not run", "reason": "--no-validate"}})
    rejected.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".validation-", dir=rejected.parent))
    report_dir = work / f"{wheel.name}.validation"
    s = time.monotonic()
    try:
        try:
            aten_rvv = "aten-rvv" in ((info.get("plan") or {}).get("features") or ())
            report = run_validation(Options(arch=arch, cpus=tuple(cpus),
                                            suites=suites_for(aten_rvv), aten_rvv=aten_rvv,
                                            report=report_dir, wheel=wheel,
                                            inject=tuple(inject)))
        except BaseException as exc:
            reject(wheel, rejected, None, {**info, "validation": {
                "status": "error", "error": str(exc) or type(exc).__name__}})
            raise
        record = summary_record(report, f"{wheel.name}.validation")
        record["seconds"] = round(time.monotonic() - s, 1)
        info = {**info, "validation": record}
        info.setdefault("steps", {})["validate"] = record["seconds"]
        if record["status"] != "passed":
            reject(wheel, rejected, report_dir, info)
            raise_for_verdict(report, rejected / report_dir.name)
        return publish(wheel, out, info, validation_dir=report_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def reject(wheel: Path, rejected: Path, report_dir: Path | None, info: dict[str, Any]) -> None:
    """Keep a refused wheel for inspection: ``rejected/<wheel>`` with its report and build-info
    (never in dist/)."""
    rejected.mkdir(parents=True, exist_ok=True)
    shutil.copy2(wheel, rejected / wheel.name)
    if report_dir is not None and report_dir.is_dir():
        dest = rejected / report_dir.name
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(report_dir, dest)
    (rejected / f"{wheel.name}.build-info.json").write_text(
        json.dumps({"wheel": wheel.name, **info}, indent=2, default=str) + "\n")
    print(f"rvtorch: {wheel.name} rejected: kept in {rejected}", file=sys.stderr)


@contextlib.contextmanager
def mounted_image(engine: Any, image: str) -> Iterator[Path]:
    """The root filesystem of ``image`` on the build machine (buildah/podman mount)."""
    from .proc import run

    if engine.name not in ("buildah", "podman"):
        raise UsageError(f"{engine.name} cannot mount the build image for wheel repair",
                         hint="use buildah or podman (--engine)")
    with engine.container(image) as ctr:
        mnt = run([engine.path, "mount", ctr.handle], capture=True,
                  what="mount the build image").stdout.strip()
        try:
            yield Path(mnt)
        finally:
            run([engine.path, "umount", ctr.handle], check=False, capture=True)


@keeps_wheel_on_failure
def publish(wheel: Path, out: Path, info: dict[str, Any], *,
            validation_dir: Path | None = None) -> dict[str, Any]:
    """Move ``wheel`` into ``out`` atomically with ``.sha256``, ``.build-info.json`` and, when
    given, its validation report as ``<wheel>.validation/``."""
    out.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    record = {"wheel": wheel.name, "sha256": digest, "size": wheel.stat().st_size, **info}
    stage = Path(tempfile.mkdtemp(prefix=".publish-", dir=out))
    report_name = f"{wheel.name}.validation"
    try:
        shutil.copy2(wheel, stage / wheel.name)
        (stage / f"{wheel.name}.sha256").write_text(f"{digest}  {wheel.name}\n")
        (stage / f"{wheel.name}.build-info.json").write_text(
            json.dumps(record, indent=2, default=str) + "\n")
        if validation_dir is not None:
            shutil.copytree(validation_dir, stage / report_name)
            old = out / report_name
            if old.exists():  # a directory cannot be replaced in one rename: move it aside
                os.replace(old, stage / f"{report_name}.old")
            os.replace(stage / report_name, old)
        # Side files first, the wheel last: a reader that sees the wheel sees its checksum.
        for name in (f"{wheel.name}.sha256", f"{wheel.name}.build-info.json", wheel.name):
            os.replace(stage / name, out / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    res = {"published": str(out / wheel.name), "sha256": digest, "size": record["size"]}
    if validation_dir is not None:
        res["validation_report"] = str(out / report_name / "report.json")
    return res


def describe_error(exc: RvtorchError) -> str:  # pragma: no cover - convenience for callers
    return exc.one_line()
