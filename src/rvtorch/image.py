"""The toolchain image: offline base image, content-hashed build, self-test, reuse.

One image per target of targets.toml, built from ``docker/toolchain.Dockerfile`` (shared base
layers, the target in build arguments). Its tag carries a hash of everything that goes into it
(:func:`content_hash`), so a change of an input rebuilds and a rerun reuses:

* ``<image>:<arch>-<hash>-untested`` right after the build,
* ``<image>:<arch>-<hash>`` only after the self-test passed (and ``<image>:<arch>`` as a moving
  alias). :func:`ensure_image` reuses only the tested tag: a killed build or a failed self-test
  leaves nothing that is reused.

The build context is staged into a fresh directory holding exactly the hashed files, so the
hash describes the context and nothing else from the checkout (venvs, caches) reaches the engine.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import toolchain
from .engine import Engine, detect_engine
from .errors import BuildError, UsageError
from .paths import cache_dir, repo_root, wait_lock
from .proc import run, which
from .targets import Matrix, Target, matrix

DOCKERFILE = "docker/toolchain.Dockerfile"
REQUIREMENTS = "docker/toolchain-requirements.txt"
SYSROOT_PACKAGES = "toolchains/sysroot-packages.txt"
SELFTEST_DIR = "docker/selftest"
# Where the image carries its self-test sources (COPY in the Dockerfile).
IMAGE_SELFTEST_DIR = "/opt/rvtorch/selftest"
FINAL_STAGE = "cross"
# On the base image: how it was made ("debootstrap <mirror>" offline, "pull <ref>").
BASE_SOURCE_LABEL = "io.rvtorch.base-source"
# Bumped when the way inputs are hashed changes (forces new tags).
HASH_SCHEMA = "1"
SELFTEST_THREADS = 4
SELFTEST_ITERATIONS = 20000


# --------------------------------------------------------------------------------------------
# inputs, hash, tags


def image_inputs(t: Target, m: Matrix | None = None) -> list[str]:
    """Repo-relative files that make up the image of target ``t`` (its build context)."""
    m = m or matrix()
    files = [DOCKERFILE, REQUIREMENTS, SYSROOT_PACKAGES, *toolchain.files_for(t, m)]
    selftest = repo_root() / SELFTEST_DIR
    files += sorted(str(p.relative_to(repo_root())) for p in selftest.rglob("*") if p.is_file())
    return files


def ca_cert_dir() -> Path:
    """Site CA certificates to trust inside the image: ``$RVTORCH_CA_CERTS`` or Debian's place for
    locally added CAs. Sites that reach PyPI through a TLS-inspecting proxy need them there too."""
    return Path(os.environ.get("RVTORCH_CA_CERTS") or "/usr/local/share/ca-certificates")


def context_files(t: Target, *, root: Path | None = None,
                  m: Matrix | None = None) -> dict[str, Path]:
    """Build context of target ``t``: path in the context -> source file. The repo's inputs plus
    the site's CA certificates under ``certs/``."""
    root = root or repo_root()
    files = {rel: root / rel for rel in image_inputs(t, m)}
    certs = ca_cert_dir()
    if certs.is_dir():
        for p in sorted(certs.rglob("*.crt")):
            if p.is_file():
                files[f"certs/{p.relative_to(certs)}"] = p
    return files


def build_args(t: Target, m: Matrix | None = None) -> dict[str, str]:
    """The Dockerfile's ARGs from targets.toml: the target's row (``cross`` stage) and what every
    image shares (``tools`` stage)."""
    m = m or matrix()
    return {
        # Same for every target (the tools stage is shared): the emulators of all targets.
        "QEMU_BINARIES": " ".join(sorted({x.qemu_binary for x in m.targets})),
        "PYTHON_VERSION": m.project.python,
        "TARGET_ARCH": t.arch,
        "CROSS_TRIPLE": t.triple,
        "DEBIAN_ARCH": t.debian_arch,
        "GCC_VERSION": m.project.gcc,
    }


def content_hash(
    t: Target,
    *,
    base_id: str,
    extra_args: dict[str, str] | None = None,
    root: Path | None = None,
    m: Matrix | None = None,
) -> str:
    """sha256 over the input files (path + bytes), the build arguments, the target row and the
    base image ID: any change of what goes into the image changes its tag."""
    m = m or matrix()
    root = root or repo_root()
    h = hashlib.sha256()
    h.update(f"rvtorch-image-schema {HASH_SCHEMA}\n".encode())
    for rel, src in sorted(context_files(t, root=root, m=m).items()):
        data = src.read_bytes()
        h.update(f"file {rel} {len(data)}\n".encode())
        h.update(data)
    meta = {
        "build_args": build_args(t, m),
        "extra_args": extra_args or {},
        "base_id": base_id,
        "project": {"suite": m.project.suite, "gcc": m.project.gcc, "python": m.project.python},
        "target": {"triple": t.triple, "debian_arch": t.debian_arch, "cflags": t.cflags,
                   "qemu": t.qemu_binary, "cpu": [c.qemu_cpu for c in t.cpu]},
    }
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class ImageRefs:
    arch: str
    digest: str

    @property
    def short(self) -> str:
        return self.digest[:16]

    @property
    def good(self) -> str:
        return f"{matrix().project.image}:{self.arch}-{self.short}"

    @property
    def untested(self) -> str:
        return f"{self.good}-untested"

    @property
    def alias(self) -> str:
        return f"{matrix().project.image}:{self.arch}"


# --------------------------------------------------------------------------------------------
# locking and staging


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    """Serialise builds of the same thing across processes (helpers and tests run in parallel)."""
    with wait_lock(cache_dir() / "locks" / f"{name}.lock",
                   f"waiting for another process building {name}"):
        yield


def _work_dir() -> Path:
    d = cache_dir() / "image"
    d.mkdir(parents=True, exist_ok=True)
    return d


def mounts_below(path: Path) -> list[str]:
    """Mount points at or below ``path`` (deepest first)."""
    root = str(path.resolve())
    found = []
    with open("/proc/self/mounts") as fh:
        for line in fh:
            # /proc/mounts escapes blanks and backslashes as octal (\040).
            mp = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[1])
            if mp == root or mp.startswith(root + "/"):
                found.append(mp)
    return sorted(found, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """Delete a work directory that a killed debootstrap may have left with /proc, /sys or /dev
    entries mounted inside: unmount those first, and never delete through a mount."""
    for mp in mounts_below(path):
        subprocess.run(["umount", "--lazy", mp], capture_output=True, check=False)
    left = mounts_below(path)
    if left:
        raise BuildError(f"cannot unmount {left[0]} (left by a killed run)",
                         hint=f"unmount it and remove {path} by hand")
    shutil.rmtree(path, ignore_errors=True)


def _clean_stale(prefix: str) -> None:
    """Remove leftovers of killed runs (called with the matching lock held)."""
    for p in _work_dir().glob(prefix + "*"):
        remove_tree(p)


def stage_context(t: Target, dest: Path, m: Matrix | None = None) -> None:
    for rel, src in context_files(t, m=m).items():
        target_path = dest / rel
        target_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target_path)
    # COPY certs/ needs the directory even where the site adds no CA.
    (dest / "certs").mkdir(exist_ok=True)


def git_revision() -> str:
    try:
        r = subprocess.run(["git", "-C", str(repo_root()), "rev-parse", "HEAD"],
                           capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "unknown"
    rev = r.stdout.strip()
    if r.returncode != 0 or not rev:
        return "unknown"
    dirty = subprocess.run(["git", "-C", str(repo_root()), "status", "--porcelain", "--",
                            "docker", "toolchains"], capture_output=True, text=True, check=False)
    return rev + ("-dirty" if dirty.stdout.strip() else "")


# --------------------------------------------------------------------------------------------
# base image


def apt_debian_mirror() -> str | None:
    """The Debian archive this machine's apt uses (first Debian/Debian origin), if any."""
    apt_get = shutil.which("apt-get")
    if not apt_get:
        return None
    r = subprocess.run([apt_get, "indextargets", "--format", "$(REPO_URI)\t$(ORIGIN)\t$(LABEL)"],
                       capture_output=True, text=True, check=False)
    for line in r.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1] == "Debian" and parts[2] == "Debian":
            return parts[0].rstrip("/")
    return None


def debian_mirror(option: str | None = None) -> str:
    """``--debian-mirror`` > ``$RVTORCH_DEBIAN_MIRROR`` > the mirror of the host's apt."""
    mirror = option or os.environ.get("RVTORCH_DEBIAN_MIRROR") or apt_debian_mirror()
    if not mirror:
        raise UsageError(
            "no Debian mirror known",
            hint="pass --debian-mirror URL or set RVTORCH_DEBIAN_MIRROR "
                 "(e.g. the Debian archive your apt uses)",
        )
    if not re.match(r"^(https?|file|ftp)://", mirror):
        raise UsageError(f"Debian mirror {mirror!r} is not a URL",
                         hint="use http://HOST/debian or file:///PATH")
    return mirror.rstrip("/")


def ensure_base(
    engine: Engine,
    *,
    pull: bool = False,
    mirror: str | None = None,
    rebuild: bool = False,
) -> str:
    """Make sure the base image (targets.toml ``project.base_image``) exists; return its ref.

    ``pull``: fetch the pinned digest (``project.base_image_pull``) from a registry and tag it.
    Otherwise bootstrap Debian offline with debootstrap into a temporary directory and import it;
    the tag appears only when the import completed, so a killed bootstrap is never reused.
    """
    m = matrix()
    ref = m.project.base_image
    with _lock("base"):
        if engine.image_exists(ref) and not rebuild:
            return ref
        if pull:
            source = m.project.base_image_pull
            engine.pull(source)
            engine.tag(source, ref)
            return ref
        _bootstrap_base(engine, ref, m.project.suite, debian_mirror(mirror))
    return ref


def _bootstrap_base(engine: Engine, ref: str, suite: str, mirror: str) -> None:
    debootstrap = which("debootstrap", hint="apt-get install debootstrap")
    if os.geteuid() != 0:
        raise UsageError("debootstrap needs root to make the base image",
                         hint="run as root, or use `rvtorch image base --pull` with a registry")
    _clean_stale("base-")
    work = Path(tempfile.mkdtemp(prefix="base-", dir=_work_dir()))
    try:
        rootfs = work / "rootfs"
        t0 = time.monotonic()
        run([debootstrap, "--variant=minbase", suite, str(rootfs), mirror],
            what=f"debootstrap {suite} from {mirror}")
        # Package caches and lists are not part of an image; apt-get update refetches lists.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (rootfs / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        tarball = work / "rootfs.tar"
        run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs),
             "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*",
             "-cf", str(tarball), "."], what="tar of the base rootfs")
        engine.import_tarball(tarball, ref, labels={BASE_SOURCE_LABEL: f"debootstrap {mirror}"})
        print(f"rvtorch: base image {ref} made in {time.monotonic() - t0:.0f} s",
              file=sys.stderr)
    finally:
        remove_tree(work)


# --------------------------------------------------------------------------------------------
# build + self-test


def build_image(
    arch: str,
    *,
    engine: Engine | None = None,
    no_cache: bool = False,
    force: bool = False,
    mirror: str | None = None,
    pull_base: bool = False,
) -> str:
    """Build (unless a tested image with the same content hash exists), self-test, tag."""
    m = matrix()
    t = m.target(arch)
    toolchain.check_files()
    engine = engine or detect_engine()
    base = ensure_base(engine, pull=pull_base, mirror=mirror)
    base_id = engine.image_id(base) or base
    extra = {"DEBIAN_MIRROR": mirror} if mirror else {}
    refs = ImageRefs(arch, content_hash(t, base_id=base_id, extra_args=extra, m=m))
    reuse = not force and not no_cache
    if reuse and engine.image_exists(refs.good):
        return refs.good
    # One build at a time on this machine (whatever the arch): a second target then finds the
    # shared base/tools layers in the cache instead of building them in parallel.
    with _lock("image-build"):
        if reuse and engine.image_exists(refs.good):
            return refs.good
        _clean_stale(f"context-{arch}-")
        ctx = Path(tempfile.mkdtemp(prefix=f"context-{arch}-", dir=_work_dir()))
        try:
            stage_context(t, ctx, m)
            args = {
                "BASE_IMAGE": base,
                **build_args(t, m),
                **extra,
                "RVTORCH_REVISION": git_revision(),
                "RVTORCH_CREATED": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            labels = {"io.rvtorch.content-hash": refs.digest}
            t0 = time.monotonic()
            engine.build(ctx / DOCKERFILE, ctx, refs.untested, build_args=args,
                         target=FINAL_STAGE, labels=labels, no_cache=no_cache)
            print(f"rvtorch: built {refs.untested} in {time.monotonic() - t0:.0f} s",
                  file=sys.stderr)
        finally:
            shutil.rmtree(ctx, ignore_errors=True)
        self_test(refs.untested, arch, engine=engine)
        engine.tag(refs.untested, refs.good)
        engine.tag(refs.untested, refs.alias)
        engine.remove_image(refs.untested)
    return refs.good


def current_refs(engine: Engine) -> dict[str, ImageRefs]:
    """The tags the current checkout's images have (per arch), given the existing base image."""
    m = matrix()
    base = m.project.base_image
    base_id = engine.image_id(base) or base
    return {t.arch: ImageRefs(t.arch, content_hash(t, base_id=base_id, m=m)) for t in m.targets}


def stale_images(engine: Engine) -> list[str]:
    """Toolchain image tags of other content hashes than the current checkout's (superseded
    builds, failed self-tests): what ``rvtorch image prune`` removes."""
    m = matrix()
    keep = set()
    for refs in current_refs(engine).values():
        keep |= {refs.good, refs.alias}
    pattern = re.compile(rf"^{re.escape(m.project.image)}:(?:{'|'.join(m.arches)})"
                         r"(?:-[0-9a-f]{16}(?:-untested)?)?$")
    return sorted(r for r in engine.list_images() if pattern.match(r) and r not in keep)


def prune(engine: Engine, *, dry_run: bool = False) -> list[str]:
    """Remove stale toolchain image tags (layers go when nothing else uses them)."""
    stale = stale_images(engine)
    if not dry_run:
        with _lock("image-build"):
            for ref in stale:
                engine.remove_image(ref)
    return stale


def ensure_image(arch: str, *, engine: Engine | None = None) -> str:
    """The reference of a tested toolchain image for ``arch``; builds it when missing.

    The shared entry point for every part of rvtorch that needs the image.
    """
    return build_image(arch, engine=engine)


@dataclass(frozen=True)
class SelfTestResult:
    arch: str
    cpu: str
    line: str


def check_elf(path: Path, t: Target) -> str:
    """The ELF machine (and for riscv64 the float ABI) the compiler produced; raises if wrong."""
    from elftools.elf.elffile import ELFFile

    with path.open("rb") as fh:
        elf = ELFFile(fh)
        machine = elf.header["e_machine"]
        if machine != t.elf_machine:
            raise BuildError(f"self-test binary for {t.arch} is {machine}, "
                             f"expected {t.elf_machine}")
        if elf.elfclass != 64:
            raise BuildError(f"self-test binary for {t.arch} is ELF{elf.elfclass}, expected 64")
        interp = ""
        for seg in elf.iter_segments():
            if seg.header.p_type == "PT_INTERP":
                interp = seg.get_interp_name()  # type: ignore[attr-defined]
        flags = elf.header["e_flags"]
        if t.elf_machine == "EM_RISCV":
            # EF_RISCV_FLOAT_ABI (bits 1-2): 0 soft, 1 single, 2 double. -mabi=lp64d -> double.
            want = {"lp64": 0, "lp64f": 1, "lp64d": 2}.get(t.mabi)
            got = (flags >> 1) & 3
            if want is not None and got != want:
                raise BuildError(f"self-test binary float ABI {got} != {t.mabi}")
        return f"{machine} flags=0x{flags:x} interp={interp}"


def self_test(ref: str, arch: str, *, engine: Engine | None = None) -> list[SelfTestResult]:
    """Build the self-test project for ``arch`` inside ``ref`` with CMake + ninja, check its ELF
    header, then run it under QEMU on every CPU model of the target; raise BuildError (4) on the
    first mismatch."""
    t = matrix().target(arch)
    engine = engine or detect_engine()
    results: list[SelfTestResult] = []
    work = Path(tempfile.mkdtemp(prefix=f"selftest-{arch}-", dir=_work_dir()))
    try:
        with engine.container(ref, mounts={str(work): "/build"}) as ctr:
            ctr.call(["cmake", "-G", "Ninja", "-S", IMAGE_SELFTEST_DIR, "-B", "/build",
                      "-DCMAKE_BUILD_TYPE=Release"])
            ctr.call(["cmake", "--build", "/build"])
            # ctest runs the program through CMAKE_CROSSCOMPILING_EMULATOR (toolchain file).
            ctr.call(["ctest", "--test-dir", "/build", "--output-on-failure"])
            ctr.call(["conan", "profile", "show", "-pr:h",
                      f"/opt/rvtorch/toolchains/conan/"
                      f"{toolchain.conan_host_profile_name(matrix(), t)}",
                      "-pr:b", f"/opt/rvtorch/toolchains/conan/"
                      f"{toolchain.conan_build_profile_name(matrix())}"],
                     capture=True, env={"CONAN_HOME": "/opt/rvtorch/selftest-conan-home"})
            elf_info = check_elf(work / "selftest", t)
            print(f"rvtorch: self-test ELF {elf_info}", file=sys.stderr)
            for cpu in t.cpu:
                r = ctr.call([t.qemu_binary, "-cpu", cpu.qemu_cpu, "/build/selftest",
                              str(SELFTEST_THREADS), str(SELFTEST_ITERATIONS)],
                             capture=True, check=False, timeout=300)
                line = (r.stdout or "").strip()
                expected = (f"rvtorch-selftest ok arch={arch} threads={SELFTEST_THREADS} "
                            f"counter={SELFTEST_THREADS * SELFTEST_ITERATIONS} "
                            f"vector={int(cpu.vector)} ")
                if r.returncode != 0 or not line.startswith(expected):
                    detail = line or (r.stderr or "").strip()[-200:]
                    raise BuildError(
                        f"image self-test failed for {arch} on CPU {cpu.name} "
                        f"(-cpu {cpu.qemu_cpu}): exit {r.returncode}: {detail}",
                        hint="the image is not tagged as good; see the output above",
                    )
                print(f"rvtorch: self-test {arch}/{cpu.name}: {line}", file=sys.stderr)
                results.append(SelfTestResult(arch, cpu.name, line))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results
