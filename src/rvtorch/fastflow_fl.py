"""FastFlow federated learning in C++ on libtorch: build in the toolchain image, run under QEMU.

The programs live in ``src/rvtorch/validate/cpp/fastflow_fl`` (docs/fastflow.md):

* ``fedavg_master_worker`` / ``fedavg_p2p``: the DML paper's two schemes on FastFlow building
  blocks (shared memory, one process). Built through Conan with the project's recipes
  (``fastflow``, ``libtorch``) and its cross profiles. FastFlow's source is only on GitHub: where
  neither a pre-filled Conan download cache nor the network has it, :func:`fastflow_missing`
  says exactly what to provide, and nothing is built (never against a stand-in).
* ``fl_core_test``: the libtorch training core alone (no FastFlow), plain CMake with the image's
  toolchain file. It runs everywhere, so the C++ side of torch is proven even without FastFlow.

libtorch is Debian's 2.6.0 for the target (``libtorch-debian.toml``: two pinned .debs unpacked
into the cache) until the toolkit's own wheel provides it. The programs run in the target rootfs
with Debian's python3-torch (``rootfs.ensure_rootfs(arch, with_torch=True)``), which carries the
same libtorch2.6 and all its libraries.

Entry points: :func:`run_fastflow_fl` (one scheme, one worker count) and :func:`run_core_test`;
``rvtorch validate --suite fastflow-fl`` (the validation layer) calls the former.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import conan, deps
from .errors import BuildError, SourceError, UsageError, ValidationError
from .paths import cache_dir, repo_root
from .targets import matrix, suggest, target

TREE = Path("src/rvtorch/validate/cpp/fastflow_fl")
PINS = TREE / "libtorch-debian.toml"
SCHEMES = {"master-worker": "fedavg_master_worker", "p2p": "fedavg_p2p"}
CORE_TEST = "fl_core_test"
# Defaults the tests and the validation suite use (8 rounds reach >= 0.9 on held-out digits).
DEFAULT_ROUNDS = 8
DEFAULT_SEED = 0
# A wall-clock limit per program run under QEMU: a hung FastFlow network is reported, not
# waited on forever.
RUN_TIMEOUT = 1800.0
# Linker flag for the cross link: libtorch's own dependencies (MPI, Vulkan, z3, ...) are in the
# target rootfs it runs in, not in the image's build sysroot; only torch's symbols are ours.
LINK_FLAGS = "-Wl,--allow-shlib-undefined"


# ------------------------------------------------------------------------------------ sources
def tree_dir() -> Path:
    return repo_root() / TREE


def fastflow_source() -> conan.RecipeSource:
    return conan.source_of("fastflow", deps.FASTFLOW_VERSION)


def fastflow_missing(*, probe: bool = True) -> str | None:
    """``None`` when FastFlow's pinned source can be had, else the one-line reason why not.

    Available means: in the project's Conan download cache (``s/<sha256>``, verified), in the
    source mirror directory ``$RVTORCH_SOURCE_MIRROR`` (imported into that cache after a sha256
    check), or its upstream URL answers (``probe``). The reason names the file, its sha256 and
    the ways to provide it.
    """
    src = fastflow_source()
    if conan.have_source(src):
        return None
    mirror = conan.env_source_mirror()
    if mirror is not None and mirror.is_dir():
        try:
            conan.import_mirror(mirror, [src])
        except SourceError as exc:  # a file of that name with other bytes: say so, use nothing
            return exc.one_line()
        if conan.have_source(src):
            return None
    if probe and conan.reachable(src.url):
        return None
    return (
        f"FastFlow source {src.filename} (sha256 {src.sha256}, {src.url}) is not available: "
        f"put the file in a directory and set {conan.SOURCE_MIRROR_ENV}=DIR (or run "
        f"`rvtorch deps fetch --only fastflow --source-mirror DIR`), or copy it to "
        f"{conan.cached_source(src)} (Conan download cache, s/<sha256>)"
    )


@dataclass(frozen=True, kw_only=True)
class PinnedDeb:
    arch: str  # Debian architecture
    name: str
    size: int
    sha256: str


def libtorch_pins() -> tuple[str, str, list[PinnedDeb]]:
    """(version, pool path, debs) from libtorch-debian.toml."""
    data = tomllib.loads((repo_root() / PINS).read_text())
    lt = data["libtorch"]
    debs = [PinnedDeb(**d) for d in lt["deb"]]
    return lt["version"], lt["pool"], debs


HOST = "host"  # the x86 reference: native build, run in the amd64 rootfs with python3-torch
_HOST_TRIPLES = {"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}


@dataclass(frozen=True, kw_only=True)
class Platform:
    """Where a program is built for: a targets.toml arch (cross) or the native ``host``."""

    arch: str
    debian_arch: str
    triple: str

    @property
    def toolchain_file(self) -> str | None:
        """The image's CMake toolchain file; ``None`` for a native build."""
        return None if self.arch == HOST else f"/opt/rvtorch/toolchains/{self.triple}.cmake"


def platform_of(arch: str) -> Platform:
    if arch == HOST:
        from .rootfs import host_debian_arch

        deb = host_debian_arch()
        if deb not in _HOST_TRIPLES:
            raise UsageError(f"no native libtorch build for a {deb} host")
        return Platform(arch=HOST, debian_arch=deb, triple=_HOST_TRIPLES[deb])
    t = target(arch)
    return Platform(arch=arch, debian_arch=t.debian_arch, triple=t.triple)


def libtorch_debs(debian_arch: str) -> list[PinnedDeb]:
    version, _, debs = libtorch_pins()
    mine = [d for d in debs if d.arch == debian_arch]
    if len(mine) != 2:
        raise UsageError(
            f"{PINS}: no libtorch-dev + libtorch2.6 pins for {debian_arch}",
            hint="add both .debs of Debian's pytorch " + version,
        )
    return mine


def libtorch_root(debian_arch: str) -> Path:
    version, _, _ = libtorch_pins()
    return cache_dir() / "fastflow-fl" / "libtorch" / f"{debian_arch}-{version}"


def ensure_libtorch(arch: str, *, mirror: str | None = None) -> Path:
    """Debian's libtorch (headers, libraries, CMake config) for ``arch``, unpacked in the cache.

    The .debs are fetched from the configured Debian mirror, checked against the pins and
    unpacked with ``dpkg-deb -x`` into a temp dir that is renamed into place when complete.
    """
    from .aptsource import debian_mirror
    from .sources import download
    from .torchspec import PinnedFile

    plat = platform_of(arch)
    final = libtorch_root(plat.debian_arch)
    if (final / ".complete").is_file():
        return final
    dpkg_deb = shutil.which("dpkg-deb")
    if not dpkg_deb:
        raise UsageError("dpkg-deb not found", hint="apt-get install dpkg")
    _, pool, _ = libtorch_pins()
    debs_dir = cache_dir() / "fastflow-fl" / "debs"
    debs_dir.mkdir(parents=True, exist_ok=True)
    base = debian_mirror(mirror, suite=matrix().project.suite)
    files = []
    for d in libtorch_debs(plat.debian_arch):
        pin = PinnedFile(name=d.name, sha256=d.sha256, size=d.size)
        files.append(download(f"{base}/{pool}/{d.name}", debs_dir / d.name, pin))
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}-"))
    try:
        for f in files:
            subprocess.run([dpkg_deb, "-x", str(f), str(tmp)], check=True)
        (tmp / ".complete").write_text("".join(f"{d.name} {d.sha256}\n"
                                               for d in libtorch_debs(plat.debian_arch)))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except subprocess.CalledProcessError as exc:
        raise SourceError(f"dpkg-deb -x failed on {exc.cmd[2]}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# -------------------------------------------------------------------------------------- build
# What each variant is built from (its cache key); the core does not depend on the FastFlow files.
_CORE_FILES = ("CMakeLists.txt", "fl_core.hpp", "fl_core.cpp", "fl_core_test.cpp",
               "libtorch-debian.toml")


def _tree_digest(variant: str) -> str:
    h = hashlib.sha256()
    for p in sorted(tree_dir().iterdir()):
        if not p.is_file() or p.suffix not in (".cpp", ".hpp", ".txt", ".py", ".toml"):
            continue
        if variant == "core" and p.name not in _CORE_FILES:
            continue
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def build_key(arch: str, variant: str) -> str:
    version, _, _ = libtorch_pins()
    h = hashlib.sha256()
    h.update(f"{arch}\0{variant}\0{version}\0{deps.FASTFLOW_VERSION}\0".encode())
    h.update(_tree_digest(variant).encode())
    return h.hexdigest()[:16]


def build_dir(arch: str, variant: str) -> Path:
    return cache_dir() / "fastflow-fl" / "build" / f"{arch}-{variant}-{build_key(arch, variant)}"


def _programs(variant: str) -> list[str]:
    return [CORE_TEST] if variant == "core" else [CORE_TEST, *SCHEMES.values()]


def _find_binaries(root: Path, names: Sequence[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for name in names:
        hits = [p for p in root.rglob(name) if p.is_file() and os.access(p, os.X_OK)]
        if hits:
            found[name] = hits[0]
    return found


WHEEL_LIBS = "libtorch-lib"  # in a wheel build's dir: the libtorch package's lib/ (deployed)


def wheel_variant(torch_wheel: Path) -> str:
    """The build variant of the FastFlow programs against ``torch_wheel`` (by its sha256)."""
    from .sources import sha256_file

    return f"fastflow-wheel-{sha256_file(torch_wheel)[:12]}"


def build_programs(arch: str, *, fastflow: bool, engine_name: str | None = None,
                   mirror: str | None = None, image: str | None = None,
                   torch_wheel: Path | None = None) -> dict[str, Path]:
    """Cross-build the programs for ``arch`` in the toolchain image; {program: binary}.

    ``fastflow=False`` builds only ``fl_core_test`` (plain CMake, no Conan, no FastFlow).
    ``fastflow=True`` needs FastFlow's source (:func:`fastflow_missing`) and builds all three
    through Conan, against Debian's libtorch, or with ``torch_wheel`` against the C++ side of a
    torch wheel the toolkit made (the libtorch recipe's ``origin=wheel``; its libraries are
    deployed beside the binaries as ``libtorch-lib/`` for the run). The result is cached by a
    hash of the sources, arch and pins (and the wheel's sha256); a rerun reuses it, a failed
    build leaves nothing behind. ``image`` names a toolchain image to use instead of
    :func:`rvtorch.image.ensure_image`'s (e.g. one built from another checkout).
    """
    from .engine import detect_engine
    from .image import ensure_image

    plat = platform_of(arch)
    if torch_wheel is not None and not fastflow:
        raise UsageError("a torch wheel is for the FastFlow programs (fastflow=True)")
    if torch_wheel is not None:
        torch_wheel = torch_wheel.resolve()
        if not torch_wheel.is_file():
            raise UsageError(f"torch wheel {torch_wheel} not found")
    variant = (wheel_variant(torch_wheel) if torch_wheel is not None
               else "fastflow" if fastflow else "core")
    final = build_dir(arch, variant)
    names = _programs(variant)
    have = _find_binaries(final, names) if final.is_dir() else {}
    if len(have) == len(names):
        return have
    if fastflow:
        reason = fastflow_missing()
        if reason:
            raise SourceError(reason)
    lt = ensure_libtorch(arch, mirror=mirror)
    engine = detect_engine(engine_name)
    # A native build uses any toolchain image: each carries the build machine's own g++.
    image = image or ensure_image(matrix().arches[0] if arch == HOST else arch, engine=engine)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}-"))
    ccache = cache_dir() / "ccache"
    ccache.mkdir(parents=True, exist_ok=True)
    mounts = {str(repo_root()): str(repo_root()), str(cache_dir()): str(cache_dir())}
    if torch_wheel is not None:
        mounts[str(torch_wheel.parent)] = str(torch_wheel.parent)
    # Each build runs in a fresh temp dir under the cache: with the cache as ccache's base dir,
    # paths into it (build dir, unpacked libtorch) hash as relative ones, so a rebuild hits.
    env = {"CCACHE_DIR": str(ccache), "CCACHE_BASEDIR": str(cache_dir())}
    # The image exports the cross setup (CMAKE_TOOLCHAIN_FILE, CC, CXX, ...) for every build: a
    # native build must drop it, not just override the compilers.
    native = ["env", "-u", "CMAKE_TOOLCHAIN_FILE", "-u", "CC", "-u", "CXX",
              "-u", "PKG_CONFIG", "-u", "QEMU_LD_PREFIX"]
    try:
        with engine.container(image, mounts=mounts, env=env) as ctr:
            if fastflow:
                home = conan.setup_home()
                if arch == HOST:  # native: the build machine's profile on both sides
                    _, build = deps.profiles(target(matrix().arches[0]))
                    host, prefix = build, native
                else:
                    host, build = deps.profiles(target(arch))
                    prefix = []
                if torch_wheel is None:
                    torch_args = ["-o", "libtorch/*:origin=debian",
                                  "-c", f"user.libtorch:sysroot={lt}"]
                else:
                    torch_args = ["-o", "libtorch/*:origin=wheel",
                                  "-c", f"user.libtorch:wheel={torch_wheel}"]
                profiles = ["-pr:h", str(host), "-pr:b", str(build)]
                ctr.call([*prefix, "nice", "-n", "10", "conan", "build", str(tree_dir()),
                          *profiles, "--build=missing", *torch_args,
                          "-c", "tools.cmake.cmaketoolchain:generator=Ninja",
                          "-c", f'tools.build:exelinkflags=["{LINK_FLAGS}"]',
                          f"--output-folder={tmp}"],
                         env={"CONAN_HOME": str(home)})
                if torch_wheel is not None:
                    # The wheel's libtorch (and torch.libs) where the run can reach it.
                    ctr.call(["conan", "install", "--requires=libtorch/" + deps.LIBTORCH_VERSION,
                              *profiles, *torch_args, "--deployer=direct_deploy",
                              f"--deployer-folder={tmp}/deploy"], env={"CONAN_HOME": str(home)})
                    os.replace(tmp / "deploy" / "direct_deploy" / "libtorch" / "lib",
                               tmp / WHEEL_LIBS)
                    shutil.rmtree(tmp / "deploy")
            else:
                # Cross: Debian's TorchConfig.cmake (the image has the target's protobuf);
                # native: the plain prefix (no amd64 protobuf development files in the image).
                toolchain = ([f"-DCMAKE_TOOLCHAIN_FILE={plat.toolchain_file}"]
                             if plat.toolchain_file else [f"-DFL_TORCH_PREFIX={lt}/usr"])
                ctr.call([*([] if plat.toolchain_file else native), "cmake", "-G", "Ninja",
                          "-S", str(tree_dir()), "-B", str(tmp),
                          "-DFL_FASTFLOW=OFF", "-DCMAKE_BUILD_TYPE=Release", *toolchain,
                          f"-DCMAKE_PREFIX_PATH={lt}/usr",
                          f"-DCMAKE_EXE_LINKER_FLAGS={LINK_FLAGS}"])
                ctr.call(["nice", "-n", "10", "cmake", "--build", str(tmp)])
        built = _find_binaries(tmp, names)
        missing = [n for n in names if n not in built]
        if missing:
            raise BuildError(f"fastflow-fl build for {arch} produced no {', '.join(missing)}")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return _find_binaries(final, names)


# ---------------------------------------------------------------------------------------- run
def parse_json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects a program printed, one per line (other lines are ignored)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
    return out


def _run_in_rootfs(arch: str, binary: Path, args: Sequence[str], *, cpu: str | None,
                   shards: Path, timeout: float, torch_libs: Path | None = None
                   ) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``binary`` in the platform's rootfs: with Debian's torch, or, given ``torch_libs``
    (a wheel's libtorch), in the base rootfs without any torch, those libraries beside it."""
    from .emulate import guest_tmpdir, run_guest
    from .rootfs import ensure_rootfs

    rootfs = ensure_rootfs(arch, with_torch=torch_libs is None)
    with guest_tmpdir(rootfs, arch) as (host, guest):
        shutil.copy2(binary, host / binary.name)
        shutil.copy2(shards, host / shards.name)
        env = {"OMP_NUM_THREADS": "1"}
        if torch_libs is not None:
            shutil.copytree(torch_libs, host / "lib", symlinks=True)
            env["LD_LIBRARY_PATH"] = f"{guest}/lib"
        argv = [f"{guest}/{binary.name}", *[a.replace("{shards}", f"{guest}/{shards.name}")
                                             for a in args]]
        t0 = time.monotonic()
        try:
            proc = run_guest(arch, argv, cpu=cpu, rootfs=rootfs, timeout=timeout, env=env)
        except subprocess.TimeoutExpired as exc:
            raise ValidationError(
                f"{binary.name} on {arch} did not finish within {timeout:.0f} s (killed)"
            ) from exc
        return proc, time.monotonic() - t0


def run_core_test(arch: str, *, cpu: str | None = None, shards_n: int = 4,
                  rounds: int = DEFAULT_ROUNDS, timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
    """Build and run ``fl_core_test`` for ``arch`` under QEMU; the parsed report."""
    from .digits import ensure_shards

    bins = build_programs(arch, fastflow=False)
    shards = ensure_shards(shards_n, seed=DEFAULT_SEED)
    proc, wall = _run_in_rootfs(arch, bins[CORE_TEST], ["{shards}", str(rounds)], cpu=cpu,
                                shards=shards, timeout=timeout)
    lines = parse_json_lines(proc.stdout)
    summary = next((x["summary"] for x in lines if "summary" in x), None)
    return {"arch": arch, "cpu": cpu, "exit": proc.returncode, "wall_seconds": wall,
            "checks": [x for x in lines if "check" in x],
            "rounds": [x for x in lines if "round" in x], "summary": summary,
            "stderr_tail": proc.stderr[-2000:]}


_TRAIN_FLAGS = {"lr": "--lr", "momentum": "--momentum", "local_epochs": "--epochs",
                "batch": "--batch"}


def _train_args(train: Mapping[str, float]) -> list[str]:
    args: list[str] = []
    for key, value in train.items():
        if key == "weighted":
            args += ["--weighted"] if value else []
        elif key in _TRAIN_FLAGS:
            args += [_TRAIN_FLAGS[key], str(value)]
        else:
            raise UsageError(f"unknown training option {key!r}",
                             hint=suggest(key, (*_TRAIN_FLAGS, "weighted")))
    return args


def run_fastflow_fl(arch: str, *, cpu: str | None = None, workers: int = 4,
                    rounds: int = DEFAULT_ROUNDS, scheme: str = "master-worker",
                    timeout: float = RUN_TIMEOUT,
                    train: Mapping[str, float] | None = None,
                    torch_wheel: Path | None = None) -> dict[str, Any]:
    """Build (if needed) and run one FastFlow FL scheme for ``arch`` under QEMU.

    Returns ``{"arch", "cpu", "scheme", "workers", "rounds": [per-round JSON], "summary": {...},
    "wall_seconds", "shards", "shards_sha256"}``. Raises :class:`SourceError` (exit 3) naming the
    file to provide when FastFlow's source is not available, :class:`UsageError` on bad
    arguments, :class:`ValidationError` when the program fails or hangs. ``train`` overrides
    the programs' defaults: ``lr``, ``momentum``, ``local_epochs``, ``batch``, ``weighted``
    (e.g. :data:`PY_SCHEME` with ``weighted=True`` to run like the Python scheme).
    ``torch_wheel`` builds against that wheel's libtorch (the libtorch recipe) and runs in the
    base rootfs with the wheel's libraries instead of Debian's torch; the result says which
    (``libtorch``).
    """
    from .digits import ensure_shards
    from .sources import sha256_file

    if scheme not in SCHEMES:
        raise UsageError(f"unknown scheme {scheme!r}", hint=suggest(scheme, tuple(SCHEMES)))
    if workers < 2:
        raise UsageError(f"FedAvg needs at least 2 workers, got {workers}")
    if rounds < 1:
        raise UsageError(f"rounds must be >= 1, got {rounds}")
    if cpu:
        target(arch).cpu_model(cpu)  # unknown model: usage error before any build
    extra = _train_args(train or {})
    bins = build_programs(arch, fastflow=True, torch_wheel=torch_wheel)
    torch_libs = None
    if torch_wheel is not None:
        torch_libs = build_dir(arch, wheel_variant(torch_wheel.resolve())) / WHEEL_LIBS
        if not torch_libs.is_dir():
            raise BuildError(f"the {arch} wheel build has no {WHEEL_LIBS}/ (delete it, rebuild)")
    shards = ensure_shards(workers, seed=DEFAULT_SEED)
    proc, wall = _run_in_rootfs(
        arch, bins[SCHEMES[scheme]],
        ["--shards", "{shards}", "--workers", str(workers), "--rounds", str(rounds), *extra],
        cpu=cpu, shards=shards, timeout=timeout, torch_libs=torch_libs)
    lines = parse_json_lines(proc.stdout)
    summary = next((x["summary"] for x in lines if "summary" in x), None)
    if proc.returncode != 0 or summary is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise ValidationError(f"{SCHEMES[scheme]} on {arch} failed (exit {proc.returncode}): "
                              f"{tail}")
    return {"arch": arch, "cpu": cpu, "scheme": scheme, "workers": workers,
            "rounds": [x for x in lines if "round" in x], "summary": summary,
            "wall_seconds": wall, "shards": str(shards), "shards_sha256": sha256_file(shards),
            "libtorch": f"wheel {torch_wheel.name}" if torch_wheel else "debian"}


# The Python scheme's hyper-parameters (rvtorch.validate.fl defaults); the C++ programs take the
# same values for a like-for-like comparison (its FedAvg is weighted by shard size too).
PY_SCHEME = {"lr": 0.05, "local_epochs": 2, "batch": 16}
PY_SCHEMES = {"master-worker": "master-worker", "p2p": "peer-to-peer"}


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_python_fl(arch: str, *, cpu: str | None = None, workers: int = 4,
                  rounds: int = DEFAULT_ROUNDS, timeout: float = RUN_TIMEOUT,
                  lr: float = PY_SCHEME["lr"], local_epochs: int = int(PY_SCHEME["local_epochs"]),
                  batch: int = int(PY_SCHEME["batch"])) -> dict[str, Any]:
    """The Python FL scheme (``rvtorch.validate.fl``, gloo over TCP) on the same shards.

    One guest process per rank, all started from the host (under QEMU without binfmt a guest
    cannot start target binaries), in the target rootfs with Debian's torch. Both of its schemes
    run in one launch; returns ``{"schemes": {scheme: {"accuracy": [...], "round_s": [...]}},
    "wall_seconds", "failed_checks"}``: the suite's own checks (final accuracy >= 0.9, ...) may
    fail after few rounds without making this an error. A rank that crashes, or does not finish
    within ``timeout`` (killed), is a :class:`ValidationError`.
    """
    from .digits import ensure_shards
    from .emulate import guest_command, guest_tmpdir
    from .rootfs import ensure_rootfs

    if workers < 2:
        raise UsageError(f"the Python FL scheme needs at least 2 ranks, got {workers}")
    rootfs = ensure_rootfs(arch, with_torch=True)
    shards = ensure_shards(workers, seed=DEFAULT_SEED)
    src = repo_root() / "src" / "rvtorch" / "validate"
    with guest_tmpdir(rootfs, arch) as (host, guest):
        shutil.copytree(src, host / "validate", ignore=shutil.ignore_patterns("cpp", "__pycache__"))
        shutil.copy2(shards, host / shards.name)
        (host / "data").mkdir()
        port = _free_port()
        procs = []
        t0 = time.monotonic()
        for rank in range(workers):
            argv = ["/usr/bin/python3", "-m", "validate.fl", "--role", "host",
                    "--data", f"{guest}/data", "--out", f"{guest}/rank{rank}.json",
                    "--rank", str(rank), "--world", str(workers), "--port", str(port),
                    "--shards", f"{guest}/{shards.name}", "--rounds", str(rounds),
                    "--local-epochs", str(local_epochs), "--batch", str(batch), "--lr", str(lr),
                    "--timeout", str(timeout)]
            cmd, env = guest_command(arch, argv, cpu=cpu, rootfs=rootfs, cwd=guest,
                                     env={"PYTHONPATH": guest, "OMP_NUM_THREADS": "1",
                                          # Debian's 2.6.0 has no libuv (docs/facts.md)
                                          "TORCH_DISTRIBUTED_USE_LIBUV": "0",
                                          "GLOO_SOCKET_IFNAME": "lo"})
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        failed = []
        for rank, p in enumerate(procs):
            left = max(1.0, timeout - (time.monotonic() - t0))
            try:
                _, err = p.communicate(timeout=left)
            except subprocess.TimeoutExpired:
                p.kill()
                _, err = p.communicate()
                failed.append(f"rank {rank} hung (killed after {timeout:.0f} s)")
                continue
            # 1 = the suite ran and some of its own checks failed (accuracy after too few
            # rounds, say): its figures are still what we came for. Anything else is a failure.
            if p.returncode not in (0, 1):
                tail = (err.strip().splitlines() or ["no output"])[-1][:200]
                failed.append(f"rank {rank} exit {p.returncode}: {tail}")
        wall = time.monotonic() - t0
        out = host / "rank0.json"
        result = json.loads(out.read_text()) if out.is_file() else {}
    bad = [str(c.get("name")) for c in result.get("checks", []) if not c.get("ok")]
    if failed or "fl" not in result.get("figures", {}) or "crash" in bad:
        raise ValidationError(f"Python FL scheme on {arch} with {workers} ranks failed: "
                              + "; ".join(failed + bad[:3]))
    fl = result["figures"]["fl"]
    return {"arch": arch, "cpu": cpu, "workers": workers, "wall_seconds": wall,
            "schemes": {ours: fl[theirs] for ours, theirs in PY_SCHEMES.items()},
            "checks": result.get("checks", []), "failed_checks": bad}


def check_result(result: Mapping[str, Any], *, min_accuracy: float = 0.9) -> list[str]:
    """What is wrong with a :func:`run_fastflow_fl` result (empty list: all holds)."""
    s = result["summary"]
    problems = []
    if not s.get("complete"):
        problems.append(f"ran {s.get('rounds')} of {s.get('rounds_requested')} rounds")
    if not s.get("models_equal"):
        problems.append(f"final models differ across workers: {s.get('final_hashes')}")
    if s.get("final_accuracy", 0.0) < min_accuracy:
        problems.append(f"final accuracy {s.get('final_accuracy')} < {min_accuracy}")
    accs = s.get("accuracies") or []
    if len(accs) >= 2 and not accs[-1] > accs[0]:
        problems.append(f"accuracy did not rise: {accs}")
    for r in result["rounds"]:
        if r.get("start_equal") is False or r.get("models_equal") is False:
            problems.append(f"round {r.get('round')}: workers held different models")
    return problems


SUITE = "fastflow-fl"


def _check(name: str, ok: bool, value: Any = None, expected: Any = None,
           detail: str = "") -> dict[str, Any]:
    return {"name": name, "ok": bool(ok), "value": value, "expected": expected, "tol": None,
            "detail": detail}


def suite_result(arch: str, *, cpu: str | None = None, workers: int = 4,
                 rounds: int = DEFAULT_ROUNDS) -> dict[str, Any]:
    """``rvtorch validate --suite fastflow-fl`` on one CPU model, in the validation report's
    suite format (``{"suite", "role", "ok", "checks", "figures", "info", "timings"}``).

    The libtorch core test always runs; both FastFlow schemes run when FastFlow's source is
    available. Without it the suite is *skipped*, never passed: ``status`` is ``"skipped"``,
    ``ok`` is false and ``skipped`` (also ``info.skipped``) carries the one-line reason; the
    core checks are still reported (never a result from a stand-in). Otherwise ``status`` is
    ``"passed"`` or ``"failed"``.
    """
    checks: list[dict[str, Any]] = []
    figures: dict[str, Any] = {}
    timings: dict[str, float] = {}
    core = run_core_test(arch, cpu=cpu, rounds=rounds)
    timings["core_s"] = round(core["wall_seconds"], 2)
    for c in core["checks"]:
        checks.append(_check(f"core:{c['check']}", c["ok"], c.get("value"), c.get("bound"),
                             c.get("detail", "")))
    if core["summary"] is None:
        checks.append(_check("core:crash", False, detail=core["stderr_tail"][-300:]))
    figures["core_accuracy"] = [r["accuracy"] for r in core["rounds"]]
    info: dict[str, Any] = {"arch": arch, "cpu": cpu, "workers": workers, "rounds": rounds}
    skipped = fastflow_missing()
    if skipped:
        info["skipped"] = skipped
    else:
        for scheme in SCHEMES:
            try:
                res = run_fastflow_fl(arch, cpu=cpu, workers=workers, rounds=rounds,
                                      scheme=scheme)
            except ValidationError as exc:
                checks.append(_check(f"{scheme}:run", False, detail=exc.one_line()))
                continue
            problems = check_result(res)
            s = res["summary"]
            checks.append(_check(f"{scheme}:final_accuracy", s["final_accuracy"] >= 0.9,
                                 s["final_accuracy"], ">= 0.9"))
            checks.append(_check(f"{scheme}:models_equal", bool(s["models_equal"]),
                                 s["final_hashes"], "all equal"))
            checks.append(_check(f"{scheme}:all_checks", not problems, detail="; ".join(problems)))
            figures[scheme] = {"accuracy": s["accuracies"],
                               "round_s": [r["round_seconds"] for r in res["rounds"]]}
            timings[f"{scheme}_s"] = round(res["wall_seconds"], 2)
    ok = bool(checks) and all(c["ok"] for c in checks) and not skipped
    status = "skipped" if skipped else ("passed" if ok else "failed")
    out = {"suite": SUITE, "role": "target", "status": status, "ok": ok, "checks": checks,
           "figures": figures, "info": info, "timings": timings}
    if skipped:
        out["skipped"] = skipped
    return out


def suite_run(arch: str, *, cpu: str | None = None) -> Any:
    """:func:`suite_result` wrapped as ``rvtorch.validation.SuiteRun`` (``--suite fastflow-fl``).

    A build or run error becomes the run's ``problem`` (a failed suite in the report), never an
    exception that would end the other suites. A suite that was requested but could not run its
    schemes is reported as skipped with the reason, and counts against the run: its ``problem``
    starts with ``skipped:``, so ``rvtorch validate`` exits non-zero (a skip is never a pass)."""
    from .errors import RvtorchError
    from .validation import SuiteRun

    t0 = time.monotonic()
    try:
        result: dict[str, Any] | None = suite_result(arch, cpu=cpu)
        problem = f"skipped: {result['skipped']}" if result and result.get("skipped") else ""
    except RvtorchError as exc:
        result, problem = None, exc.one_line()
    return SuiteRun(suite=SUITE, exit=0 if result is not None else None,
                    wall_s=time.monotonic() - t0, result=result, problem=problem)


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - thin debugging aid
    """``python -m rvtorch.fastflow_fl ARCH [scheme] [workers]``: run and print the result."""
    args = list(argv if argv is not None else sys.argv[1:])
    if not args:
        print("usage: python -m rvtorch.fastflow_fl ARCH [core|master-worker|p2p] [workers]",
              file=sys.stderr)
        return 2
    arch, what = args[0], (args[1] if len(args) > 1 else "core")
    if what == "core":
        res = run_core_test(arch)
    else:
        res = run_fastflow_fl(arch, scheme=what, workers=int(args[2]) if len(args) > 2 else 4)
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
