"""Native dependencies through the repo's Conan recipes, built inside the toolchain image.

``build(arch)`` runs ``conan create`` (the recipe's test_package runs under QEMU on every CPU
model of the target and checks the kernel OpenBLAS picks) and then deploys the package to
``cache_dir()/deps/<arch>/<name>`` (atomic rename), next to ``deps.json`` and ``deps.env``
describing it. ``rvtorch build --openblas recipe|deployed`` reads them (docs/recipes.md,
"Handing OpenBLAS to the torch build"): ``BLAS=OpenBLAS`` with ``OpenBLAS_ROOT`` = the prefix,
whose ``include/`` holds ``cblas.h`` directly (OpenBLAS's Makefile install, not its CMake one
that uses include/openblas).

The container sees the repository and the cache at their host paths, so paths Conan records
(download cache, package folders) mean the same inside and outside.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import conan
from .errors import BuildError, UsageError
from .paths import cache_dir, repo_root
from .targets import Target, matrix, target

DEPS = ("openblas", "fastflow", "libtorch")
# What the torch build needs from this command, in build order.
DEFAULT_DEPS = ("openblas",)
OPENBLAS_VERSION = "0.3.34+ds"
FASTFLOW_VERSION = "3.0.1+d476f66"
LIBTORCH_VERSION = "2.6.0"


@dataclass(frozen=True, kw_only=True)
class DepSpec:
    """One package to create: its reference and the options/confs that decide it."""

    name: str
    version: str
    options: dict[str, str] = field(default_factory=dict)
    confs: dict[str, str] = field(default_factory=dict)
    # Commands run in the container before `conan create` (e.g. installing a -dev package).
    setup: tuple[tuple[str, ...], ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    def option_args(self) -> list[str]:
        return [a for k, v in self.options.items() for a in ("-o", f"{self.name}/*:{k}={v}")]

    def conf_args(self) -> list[str]:
        return [a for k, v in self.confs.items() for a in ("-c", f"{k}={v}")]


def deps_dir(arch: str) -> Path:
    return cache_dir() / "deps" / arch


def profiles(t: Target) -> tuple[Path, Path]:
    """(host, build) Conan profiles written by the image helper into toolchains/conan/."""
    from .toolchain import conan_build_profile_name, conan_host_profile_name

    m = matrix()
    root = repo_root() / "toolchains" / "conan"
    host = root / conan_host_profile_name(m, t)
    build = root / conan_build_profile_name(m)
    for p in (host, build):
        if not p.is_file():
            raise UsageError(f"Conan profile {p} missing", hint="run `rvtorch image toolchains`")
    return host, build


def cpu_models_conf(t: Target) -> str:
    """``user.rvtorch:cpu_models`` for the test_package: every CPU model and its kernel set."""
    models = {c.name: {"qemu_cpu": c.qemu_cpu, "openblas_core": c.openblas_core} for c in t.cpu}
    return json.dumps(models, separators=(",", ":"))


def _apt_install(*packages: str) -> tuple[tuple[str, ...], ...]:
    """Setup commands installing Debian packages into the throw-away build container."""
    return (("apt-get", "update", "-qq"),
            ("apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages))


def openblas_spec(t: Target, *, version: str = OPENBLAS_VERSION, dynamic_list: Sequence[str] |
                  None = None, static_target: str | None = None,
                  build_lapack: bool = True, extra_options: Mapping[str, str] | None = None
                  ) -> DepSpec:
    """OpenBLAS as the torch build wants it: DYNAMIC_ARCH over targets.toml's kernel sets, with
    LAPACK (torch.linalg needs it).

    ``static_target`` builds one kernel set instead (cheaper; used by the CI's armv8 check).
    A Debian ``+ds`` source has no lapack-netlib/: the recipe then merges the target's reference
    ``liblapack_pic.a`` (as Debian builds its OpenBLAS), so the throw-away build container gets
    ``liblapack-dev:<arch>`` from the Debian archive first (apt verifies it against the signed
    release files).
    """
    options = {"shared": "True", "threading": "pthread",
               "build_lapack": str(build_lapack)}
    if static_target:
        options.update(dynamic_arch="False", target=static_target)
    else:
        options.update(dynamic_arch="True",
                       dynamic_list=" ".join(dynamic_list or t.openblas_targets))
    options.update(extra_options or {})
    setup: tuple[tuple[str, ...], ...] = ()
    if options["build_lapack"] == "True" and "+ds" in version:
        setup = _apt_install(f"liblapack-dev:{t.debian_arch}")
    return DepSpec(name="openblas", version=version, options=options,
                   confs={"user.rvtorch:cpu_models": cpu_models_conf(t)}, setup=setup)


def spec_for(name: str, t: Target, **kw: Any) -> DepSpec:
    if name == "openblas":
        return openblas_spec(t, **kw)
    if name == "fastflow":
        # The test_package runs on every CPU model of the target (rv64 and the RVV models).
        return DepSpec(name="fastflow", version=FASTFLOW_VERSION,
                       confs={"user.rvtorch:cpu_models": cpu_models_conf(t)})
    if name == "libtorch":
        wheel = kw.get("torch_wheel")
        if wheel:
            return DepSpec(name="libtorch", version=LIBTORCH_VERSION,
                           confs={"user.libtorch:wheel": str(Path(wheel).resolve())})
        if kw.get("torch_from") == "debian":
            # Debian's libtorch-dev for the target, installed into the (throw-away) container's
            # multiarch sysroot, packaged from there.
            # libtorch-dev:<arch> depends on python3:<arch>, which would replace the image's
            # python (and conan with it, docs/facts.md): install the runtime libraries with apt and
            # only unpack the -dev package's headers and CMake files.
            a = t.debian_arch
            unpack_dev = (f"cd /tmp && apt-get download -qq libtorch-dev:{a} && "
                          "dpkg-deb -x libtorch-dev_*.deb / && rm libtorch-dev_*.deb")
            no_python = (f"! dpkg-query -W python3:{a} >/dev/null 2>&1 || "
                         f"{{ echo 'python3:{a} got installed' >&2; exit 1; }}")
            return DepSpec(name="libtorch", version=LIBTORCH_VERSION,
                           options={"origin": "debian"}, confs={"user.libtorch:sysroot": "/"},
                           setup=(*_apt_install(f"libtorch2.6:{a}"),
                                  ("sh", "-c", unpack_dev),
                                  ("sh", "-c", no_python)))
        raise UsageError("libtorch needs --torch-wheel PATH (a wheel built by `rvtorch build`) "
                         "or --torch-from debian")
    from .targets import suggest

    raise UsageError(f"unknown dependency {name!r}", hint=suggest(name, DEPS))


def required_sources(specs: Sequence[DepSpec]) -> list[conan.RecipeSource]:
    return [conan.source_of(s.name, s.version) for s in specs if s.name != "libtorch"]


def conan_create_argv(spec: DepSpec, t: Target, *, test: bool = True) -> list[str]:
    host, build = profiles(t)
    argv = ["conan", "create", str(conan.recipes_dir() / spec.name / "all"),
            "--version", spec.version, "-pr:h", str(host), "-pr:b", str(build),
            "--build=missing", *spec.option_args(), *spec.conf_args()]
    if not test:
        argv.append("--test-folder=")
    return argv


def conan_deploy_argv(spec: DepSpec, t: Target, dest: Path) -> list[str]:
    host, build = profiles(t)
    return ["conan", "install", f"--requires={spec.ref}", "-pr:h", str(host), "-pr:b", str(build),
            *spec.option_args(), *spec.conf_args(), "--deployer=direct_deploy",
            f"--deployer-folder={dest}"]


def preflight(spec: DepSpec, t: Target) -> None:
    """Resolve the graph on the host (seconds, no image) so a bad option fails before a build.

    An unknown option value is Conan's own error; a configuration the recipe refuses is its
    ``validate()`` message. Both become a one-line usage error (exit 2). The recipe is read from
    the repository folder ``conan create`` will export, never from an older revision in the
    Conan cache.
    """
    host, build = profiles(t)
    recipe = conan.recipes_dir() / spec.name / "all"
    proc = conan.run_conan(["graph", "info", str(recipe), "--version", spec.version,
                            "-pr:h", str(host), "-pr:b", str(build), *spec.option_args(),
                            *spec.conf_args(), "-f", "json"],
                           capture=True, check=False, quiet=True)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
        err = [ln for ln in lines if ln.startswith("ERROR:")]
        tail = lines[lines.index(err[-1]):] if err else lines[-2:]
        raise UsageError(f"{spec.ref}: " + " ".join(tail).removeprefix("ERROR: "))
    nodes = json.loads(proc.stdout)["graph"]["nodes"].values()
    for node in nodes:
        if node.get("info_invalid"):
            raise UsageError(f"{spec.ref}: invalid configuration: {node['info_invalid']}")


def _publish(staged: Path, final: Path) -> None:
    """Replace ``final`` with ``staged`` so a reader never sees half a prefix."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(staged, final)
    if old.exists():
        shutil.rmtree(old)


def _write_metadata(root: Path, specs: Sequence[DepSpec]) -> dict[str, Any]:
    meta_path = root / "deps.json"
    meta: dict[str, Any] = {}
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
    for spec in specs:
        prefix = root / spec.name
        entry: dict[str, Any] = {"ref": spec.ref, "prefix": str(prefix), "options": spec.options}
        if spec.name == "openblas":
            entry.update(include_dir=str(prefix / "include"), lib_dir=str(prefix / "lib"),
                         library=str(prefix / "lib" / "libopenblas.so"))
        meta[spec.name] = entry
    conan._atomic_write(meta_path, json.dumps(meta, indent=2) + "\n")
    env_lines = []
    if "openblas" in meta:
        ob = meta["openblas"]
        # What setup.py forwards to CMake (BLAS) and what find_package(OpenBLAS) reads:
        # OpenBLAS_ROOT is searched before the system paths (a sysroot's libopenblas-dev),
        # OpenBLAS_HOME only after them.
        env_lines += ["BLAS=OpenBLAS", f"OpenBLAS_ROOT={ob['prefix']}",
                      f"OpenBLAS_HOME={ob['prefix']}",
                      f"OpenBLAS_INCLUDE_DIR={ob['include_dir']}", f"OpenBLAS_LIB={ob['library']}"]
    conan._atomic_write(root / "deps.env", "".join(f"{ln}\n" for ln in env_lines))
    return meta


def build(arch: str, *, only: Sequence[str] | None = None, test: bool = True, deploy: bool = True,
          deploy_root: Path | None = None, debian_mirror: str | None = None,
          source_mirror: Path | None = None, engine_name: str | None = None,
          **spec_kw: Any) -> dict[str, Any]:
    """Create ``arch``'s packages in the toolchain image and deploy them; returns deps.json.

    ``deploy=False`` only creates (and tests) the packages: the deployed prefixes stay as they are.
    ``deploy_root`` replaces ``deps_dir(arch)`` (tests deploy variants there).
    """
    from .engine import detect_engine
    from .image import ensure_image

    t = target(arch)
    names = list(only or DEFAULT_DEPS)
    specs = [spec_for(n, t, **spec_kw) for n in names]
    home = conan.setup_home()
    for spec in specs:
        if spec.name != "libtorch":  # its inputs only exist inside the container
            preflight(spec, t)
    conan.ensure_sources(required_sources(specs), mirror=debian_mirror,
                         source_mirror=source_mirror)
    engine = detect_engine(engine_name)
    image = ensure_image(arch, engine=engine)
    root = (deploy_root or deps_dir(arch)).resolve()
    root.mkdir(parents=True, exist_ok=True)
    shared = {str(repo_root()): str(repo_root()), str(cache_dir()): str(cache_dir())}
    if not root.is_relative_to(cache_dir().resolve()):
        shared[str(root)] = str(root)
    for spec in specs:
        if "user.libtorch:wheel" in spec.confs:
            wheel = Path(spec.confs["user.libtorch:wheel"])
            shared[str(wheel.parent)] = str(wheel.parent)
    with engine.container(image, mounts=shared, env={"CONAN_HOME": str(home)}) as ctr:
        for spec in specs:
            for cmd in spec.setup:
                ctr.call(list(cmd), env={"DEBIAN_FRONTEND": "noninteractive"})
            # nice: two cores are shared with the rest of the machine (house rules).
            ctr.call(["nice", "-n", "10", *conan_create_argv(spec, t, test=test)])
            if not deploy:
                continue
            with tempfile.TemporaryDirectory(dir=root, prefix=f".{spec.name}-") as tmp:
                ctr.call(conan_deploy_argv(spec, t, Path(tmp)))
                staged = Path(tmp) / "direct_deploy" / spec.name
                if not staged.is_dir():
                    raise BuildError(f"conan deploy of {spec.ref} left no {staged}")
                _publish(staged, root / spec.name)
    return _write_metadata(root, specs) if deploy else {}


def create_native(name: str, *, engine_name: str | None = None) -> None:
    """``conan create`` of a header-only recipe for the build machine itself (x86_64), in the
    toolchain image with its build profile on both sides: the test_package runs natively.

    Only recipes that need no target sysroot make sense here (``fastflow``).
    """
    from .engine import detect_engine
    from .image import ensure_image

    if name != "fastflow":
        raise UsageError(f"no native create for {name!r} (only fastflow)")
    arch = matrix().arches[0]
    _, build_profile = profiles(target(arch))
    spec = DepSpec(name=name, version=FASTFLOW_VERSION)
    conan.ensure_sources(required_sources([spec]))
    home = conan.setup_home()
    engine = detect_engine(engine_name)
    image = ensure_image(arch, engine=engine)
    shared = {str(repo_root()): str(repo_root()), str(cache_dir()): str(cache_dir())}
    # The image exports the cross setup for every build: a native one drops it.
    native = ["env", "-u", "CMAKE_TOOLCHAIN_FILE", "-u", "CC", "-u", "CXX", "-u", "PKG_CONFIG",
              "-u", "QEMU_LD_PREFIX"]
    with engine.container(image, mounts=shared, env={"CONAN_HOME": str(home)}) as ctr:
        ctr.call([*native, "nice", "-n", "10", "conan", "create",
                  str(conan.recipes_dir() / name / "all"), "--version", spec.version,
                  "-pr:h", str(build_profile), "-pr:b", str(build_profile), "--build=missing"])
